/**
 * The binary protocol's driver: TLS sockets to a binary gateway (shared/docs/apns-protocol.md §A). It runs
 * wherever its backend runs it (the caller's event loop, or a worker thread).
 *
 * One connection writes at a time (the *active* one); while it has more work than its window holds, a
 * *spare* connection is opened beside it, so that a probe hands over to a connection that is already up.
 * (Writing into a connection before its handshake completes was tried: no measurable gain, and ~65% more
 * duplicates after silent closes, because more connections then hold unconfirmed windows at once.) Frames are encoded into 64 KiB slabs, one
 * `write` per slab, and writing pauses while 256 KiB wait in the socket (resumed on `drain`). When a
 * connection has written a *window* of unconfirmed notifications, or runs out of work while holding
 * some, it writes a known-bad probe and stops writing; the next connection takes over at once while the
 * probing one waits for its answer. An error frame or a close ends a connection; the queue decides what
 * that means for each notification.
 *
 * The window adapts like TCP's congestion window, because a silent close re-sends (and may duplicate)
 * up to one window: it starts small ({@link MIN_WINDOW}) and doubles after each answered probe up to
 * `confirmEvery` (slow start); a silent close halves it and sets the threshold there, above which it
 * grows only by {@link MIN_WINDOW} per answered probe. A clean stream soon probes only every
 * `confirmEvery`; a gateway that drops connections every few thousand notifications still lets each
 * connection prove its work before it dies, rather than re-sending the same unproven batch for ever.
 * As in TCP, answers from connections opened before the last silent close do not grow the window: several
 * connections can hold unconfirmed windows at once, and their late answers say nothing about the gateway
 * since the loss; halving stops at {@link MIN_WINDOW}. Two unanswered ends in a row (no settlement between them) drop the window to 1, as TCP's
 * retransmission timeout does: each connection then carries one notification and a probe, so a
 * notification the gateway chokes on is alone when its connection dies, and the queue counts that against
 * it (and reports it once it is out of attempts) instead of re-sending it with the others for ever.
 *
 * Every wait on the gateway has a deadline: a connection whose probe is written, or whose writes stop
 * draining, must answer or read within `graceMs`, or it is presumed dead and closed, and what it held is
 * re-sent in doubt. Nothing is settled by time. At most {@link MAX_AWAITING} connections wait for a probe
 * answer at once, so a gateway that stops answering costs a handful of connections per `graceMs`, not a
 * stream of hand-overs. Every connection that ends before the gateway settled anything on it counts as a
 * failed attempt for the reconnect backoff (see {@link Reconnect}).
 */
import type tls from 'node:tls';
import type { BackendContext, DisconnectReason } from '../backends/backend.js';
import { connectTls } from '../credentials.js';
import { ConnectionError, ProtocolError } from '../errors.js';
import { COMMAND_ERROR, ERROR_RESPONSE_BYTES, frameBytes, PROBE_FRAME_BYTES, writeFrames, writeProbeFrame } from '../frame.js';
import { TOKEN_BYTES, type Message } from '../message.js';
import { MAX_BINARY_PAYLOAD_BYTES, SentLog, settleErrorFrame, settleUnanswered } from '../protocol/binary.js';
import type { Cursor, InFlight } from '../queue.js';
import { Driver } from './driver.js';
import { CLOSE_LINGER_MS } from './schedule.js';

const SLAB_BYTES = 64 * 1024;
const MAX_FRAME_BYTES = frameBytes(MAX_BINARY_PAYLOAD_BYTES);
/** Stop encoding while this much is already waiting in the socket. */
const BUFFERED_LIMIT = 256 * 1024;
/** Slabs kept for reuse (a slab comes back once the socket has taken its bytes). */
const SLAB_POOL = 16;
/** The first window, and its additive step. */
export const MIN_WINDOW = 256;
/** Connections that may wait for a probe answer at once; the next hand-over waits for one of them. */
export const MAX_AWAITING = 3;


class Connection {
	readonly id: number;
	readonly socket: tls.TLSSocket;
	readonly log: SentLog;
	ready = false;
	/** No more writes or answers count: an error frame came, or the socket closed. */
	finished = false;
	/** Notifications it held when it finished. */
	heldAtEnd = 0;
	connectedAt = 0;
	/** When this connection began writing as the active one. */
	activeSince = 0;
	/** The window epoch this connection was opened in (see the module comment). */
	readonly epoch: number;
	error: Error | undefined;
	reason: DisconnectReason | undefined;
	inbox: Buffer | undefined;
	/** Connect timeout, then the idle-probe delay. */
	timer: NodeJS.Timeout | undefined;
	/** Armed while it waits on the gateway (a probe answer, or a drain): see the module comment. */
	deadline: NodeJS.Timeout | undefined;

	constructor(id: number, socket: tls.TLSSocket, log: SentLog, epoch: number) {
		this.id = id;
		this.socket = socket;
		this.log = log;
		this.epoch = epoch;
	}

	clearTimer(): void {
		clearTimeout(this.timer);
		this.timer = undefined;
	}

	/** Waiting on the gateway: it must answer or read within `ms`, or the connection is presumed dead. */
	await(ms: number): void {
		clearTimeout(this.deadline);
		this.deadline = setTimeout(() => {
			if (this.finished) return;
			this.error = new ConnectionError(`No answer from the gateway within ${ms} ms (graceMs)`);
			this.reason = 'timeout';
			this.socket.destroy();
		}, ms);
	}

	stopAwaiting(): void {
		clearTimeout(this.deadline);
		this.deadline = undefined;
	}
}

/** The binary driver. */
export function createBinaryDriver(context: BackendContext): BinaryDriver {
	return new BinaryDriver(context);
}

export class BinaryDriver extends Driver {
	readonly #connections = new Set<Connection>();
	#active: Connection | undefined;
	/** Connected (or connecting) and idle, ready to take over when the active connection probes. */
	#spare: Connection | undefined;
	#ids = 0;
	#session: Buffer | undefined;
	/** Notifications a connection may write before it must probe; 0 = only when idle. */
	#window: number;
	/** Above this the window grows additively (see the module comment). */
	#threshold: number;
	/** Incremented by every shrink; only connections opened since may grow the window. */
	#epoch = 0;
	/** A connection died holding notifications, unanswered, and nothing has been settled since. */
	#lostSinceSettled = false;
	readonly #cursor: Cursor = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	/** Reusable slabs: allocating 64 KiB per write was a large share of the garbage at a million a second. */
	readonly #slabs: Buffer[] = [];
	readonly #recycle = (slab: Buffer): void => {
		if (this.#slabs.length < SLAB_POOL) this.#slabs.push(slab);
	};

	constructor(context: BackendContext) {
		super(context);
		this.#threshold = context.setup.options.confirmEvery;
		this.#window = Math.min(MIN_WINDOW, this.#threshold);
	}

	/** The current unconfirmed window (see the module comment). */
	get window(): number {
		return this.#window;
	}

	protected get connectionCount(): number {
		return this.#connections.size;
	}

	/** Connections whose probe is written and not yet answered. */
	#awaiting(): number {
		let n = 0;
		for (const c of this.#connections) if (!c.finished && c.log.probing) n++;
		return n;
	}

	protected pump(): void {
		if (this.destroyed) return;
		const { queue } = this.ctx;
		const { options } = this.ctx.setup;
		if (this.#active === undefined && queue.canTake && this.#awaiting() < MAX_AWAITING) {
			if (this.#spare !== undefined) {
				this.#active = this.#spare;
				this.#spare = undefined;
			} else if (!this.closing) {
				this.#connect('active');
			}
		}
		const conn = this.#active;
		if (conn === undefined || !conn.ready || conn.finished || conn.log.probing) return;
		const log = conn.log;
		const socket = conn.socket;
		const every = this.#window;
		// More work than this connection's window holds: have the next connection ready in time.
		if (every > 0 && this.#spare === undefined && !this.closing && queue.unsent > every - log.sinceProof) this.#connect('spare');
		if (conn.activeSince === 0) conn.activeSince = performance.now();
		// The window bounds a probe's interval in count; on a healthy stream (the window fully open)
		// minConfirmIntervalMs also bounds it in time from below. Not after a silent close: there a
		// stretched window would again die unproven every time and never converge. (Applying it during the
		// initial slow start too was measured: no clear gain, 55% more duplicates after silent drops.)
		const open = options.confirmEvery > 0 && every >= options.confirmEvery;
		for (;;) {
			if (socket.writableLength >= BUFFERED_LIMIT) {
				if (conn.deadline === undefined) conn.await(options.graceMs); // 'drain' pumps again
				return;
			}
			let limited = every > 0 && (!open || performance.now() - conn.activeSince >= options.minConfirmIntervalMs);
			if (limited && log.sinceProof >= every) {
				if (this.#probe(conn)) return;
				// Over the connection-rate ceiling. A healthy stream writes on, as under minConfirmIntervalMs; a
				// shrunk window waits (stretched, it would die unproven again): the ceiling wakes us.
				if (!open) return;
				limited = false;
			}
			const slab = this.#slabs.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES);
			let used = 0;
			const cursor = this.#cursor;
			// Runs of one message's tokens: what the slab has room for at the largest frame, within the window.
			for (;;) {
				const room = Math.floor((SLAB_BYTES - used) / MAX_FRAME_BYTES);
				const n = queue.takeRun(cursor, limited ? Math.min(room, every - log.sinceProof) : room);
				if (n === 0) break;
				log.ring.pushRun(cursor.message, cursor.index, cursor.ident, cursor.tries, n);
				log.sinceProof += n;
				const m = cursor.message;
				used = writeFrames(slab, used, m.chunk, m.start + cursor.index * TOKEN_BYTES, n, m.chunk, m.payloadStart, m.payloadLength, cursor.ident, m.expiry ?? 0, m.priority);
			}
			if (used === 0) {
				this.#recycle(slab);
				break;
			}
			socket.write(used === SLAB_BYTES ? slab : slab.subarray(0, used), () => this.#recycle(slab));
		}
		// Out of work, or at the retention cap: settle what this connection holds. Not when the rate limit
		// holds the work back: the next grant writes on here (a probe per window would be a reconnect each).
		if (log.size === 0 || queue.rateLimited) return;
		if (queue.unsent > 0 || this.ctx.wantsConfirmation() || options.confirmIdleMs === 0) {
			this.#probe(conn);
		} else if (options.confirmIdleMs !== false) {
			conn.clearTimer();
			conn.timer = setTimeout(() => {
				conn.timer = undefined;
				if (this.#active !== conn || conn.finished || log.probing || log.size === 0) return;
				if (queue.canTake) this.pump();
				else this.#probe(conn);
			}, options.confirmIdleMs);
		}
	}

	/**
	 * Write the known-bad probe; the connection writes nothing more and the next one takes over. A probe
	 * is a hand-over, so it takes a token of the connection-rate ceiling: none left, no probe (false), and
	 * the ceiling wakes the backend when one is due.
	 */
	#probe(conn: Connection): boolean {
		if (!this.rate.take()) return false;
		conn.clearTimer();
		const frame = Buffer.allocUnsafe(PROBE_FRAME_BYTES);
		writeProbeFrame(frame, 0, conn.log.probe());
		conn.socket.write(frame);
		conn.await(this.ctx.setup.options.graceMs);
		if (this.#active === conn) this.#active = undefined; // the next pump hands over, within MAX_AWAITING
		if (this.ctx.queue.canTake) this.wake();
		return true;
	}

	#connect(role: 'active' | 'spare'): void {
		// Every connect waits out the backoff after a failure. (Hand-overs are throttled where they are
		// decided, at the probe; a reconnect after the gateway rejected one and closed is the protocol's own.)
		if (this.reconnect.waiting) return;
		const { tls: gateway, options } = this.ctx.setup;
		const socket = connectTls(gateway, this.#session === undefined ? {} : { session: this.#session });
		const conn = new Connection(++this.#ids, socket, new SentLog(), this.#epoch);
		if (role === 'active') this.#active = conn;
		else this.#spare = conn;
		this.#connections.add(conn);
		conn.timer = this.connecting((error) => socket.destroy(error));
		socket.setNoDelay(true);
		socket.once('secureConnect', () => {
			conn.clearTimer();
			conn.ready = true;
			conn.connectedAt = performance.now();
			this.ctx.events.connected({ connection: conn.id });
			if (this.#active === conn) this.pump();
		});
		socket.on('session', (session: Buffer) => {
			this.#session = session;
		});
		socket.on('data', (chunk: Buffer) => this.#onData(conn, chunk));
		socket.on('drain', () => {
			if (conn.finished) return;
			// The gateway is reading: a probing connection gets a fresh deadline for its answer.
			if (conn.log.probing) conn.await(options.graceMs);
			else conn.stopAwaiting();
			if (this.#active === conn) this.pump();
		});
		socket.on('error', (error: Error) => {
			conn.error ??= error;
		});
		socket.on('close', () => this.#onClose(conn));
	}

	#onData(conn: Connection, chunk: Buffer): void {
		if (conn.finished) return;
		const data = conn.inbox === undefined ? chunk : Buffer.concat([conn.inbox, chunk]);
		if (data.length < ERROR_RESPONSE_BYTES) {
			conn.inbox = data;
			return;
		}
		conn.inbox = undefined;
		this.#finish(conn);
		const { queue, events } = this.ctx;
		const log = conn.log;
		if (data[0] !== COMMAND_ERROR) {
			conn.error = new ProtocolError(`The gateway sent command ${data[0]}, expected an error response (8)`);
			conn.reason = 'protocolError';
			settleUnanswered(queue, log, conn.error.message);
		} else {
			const status = data[1]!;
			const ident = data.readUInt32BE(2);
			const { outcome, resent } = settleErrorFrame(queue, log, status, ident);
			if (outcome === 'notFound') {
				conn.error = new ProtocolError(`The gateway's error response (status ${status}) named ident ${ident}, never sent on this connection`);
				conn.reason = 'protocolError';
				events.identNotFound({ ident, status, resent });
			} else {
				if (outcome === 'probe') events.probeAnswered();
				conn.reason = outcome === 'probe' ? 'probeAnswered' : 'errorFrame';
			}
			if (log.answered > 0) {
				this.reconnect.succeeded();
				this.#lostSinceSettled = false;
				if (outcome === 'probe' && conn.epoch === this.#epoch) this.#growWindow();
			}
		}
		conn.socket.destroy();
	}

	#finish(conn: Connection): void {
		conn.finished = true;
		conn.heldAtEnd = conn.log.size;
		conn.clearTimer();
		conn.stopAwaiting();
		if (this.#active === conn) this.#active = undefined;
		if (this.#spare === conn) this.#spare = undefined;
	}

	#onClose(conn: Connection): void {
		this.#connections.delete(conn);
		const { queue, events } = this.ctx;
		if (!conn.finished) {
			this.#finish(conn);
			if (conn.inbox !== undefined) {
				conn.error ??= new ProtocolError(`The gateway closed the connection inside an error response (${conn.inbox.length} of ${ERROR_RESPONSE_BYTES} bytes)`);
				conn.reason = 'protocolError';
			}
			settleUnanswered(queue, conn.log, conn.error?.message);
		}
		const held = conn.heldAtEnd;
		// Ended by us: destroyed, or closing (everything is settled by then). Everything else that settled
		// nothing is a failed attempt, however it ended.
		const ours = this.destroyed || this.closing;
		if (!ours && conn.log.answered === 0) {
			if (held > 0) this.#shrinkWindow();
			const { host, port } = this.ctx.setup.tls;
			this.failedAttempt(conn.ready, `Connection to ${host}:${port} ended ${Math.round(performance.now() - conn.connectedAt)} ms after connecting, before the gateway answered for any of the ${held} notifications it held`, conn.error);
		}
		if (conn.ready) {
			const reason = this.destroyed ? 'destroyed' : (conn.reason ?? (ours ? 'closed' : 'silentClose'));
			events.disconnected({ connection: conn.id, reason, ...(conn.error === undefined ? {} : { error: conn.error }) });
		}
		this.connectionGone();
	}

	#growWindow(): void {
		if (this.#window === 0) return; // probing by count is off and no loss has turned it on
		const max = this.ctx.setup.options.confirmEvery;
		// confirmEvery 0 (probe only when idle): counted windows last only until the gateway answers again.
		if (max === 0) this.#window = this.#window * 2 >= MIN_WINDOW ? 0 : this.#window * 2;
		else this.#window = Math.min(max, this.#window < this.#threshold ? this.#window * 2 : this.#window + MIN_WINDOW);
	}

	/**
	 * A connection died holding notifications and unanswered: halve the window (the threshold goes there
	 * too), or, after another such loss with no settlement since, drop it to 1 (see the module comment).
	 */
	#shrinkWindow(): void {
		this.#epoch++;
		const current = this.#window === 0 ? MIN_WINDOW : this.#window;
		this.#threshold = Math.max(Math.min(MIN_WINDOW, current), current >> 1);
		this.#window = this.#lostSinceSettled ? 1 : this.#threshold;
		this.#lostSinceSettled = true;
	}

	protected closeConnections(): void {
		for (const conn of this.#connections) {
			if (!conn.ready) conn.socket.destroy();
			else conn.socket.end();
			// Everything on it is settled by now (close flushes first): a peer that never finishes the
			// close handshake must not hold us.
			setTimeout(() => conn.socket.destroy(), CLOSE_LINGER_MS).unref();
		}
	}

	protected destroyConnections(): InFlight[] {
		const held: InFlight[] = [];
		for (const conn of this.#connections) {
			conn.clearTimer();
			conn.stopAwaiting();
			conn.socket.destroy();
			const { log } = conn;
			if (log.settled) continue;
			log.settled = true; // its socket's close must not re-queue into a cleared queue
			const ring = log.ring;
			for (let i = 0; i < ring.size; i++) held.push(ring.entry(i));
		}
		return held;
	}
}
