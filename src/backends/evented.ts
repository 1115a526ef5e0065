/**
 * The default backend: TLS sockets on the main event loop.
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
 * since the loss.
 */
import type tls from 'node:tls';
import { connectTls } from '../credentials.js';
import { ConnectionError, ProtocolError } from '../errors.js';
import {
	COMMAND_ERROR,
	ERROR_RESPONSE_BYTES,
	frameBytes,
	MAX_BINARY_PAYLOAD_BYTES,
	PROBE_FRAME_BYTES,
	writeFrame,
	writeProbeFrame,
} from '../frame.js';
import type { Message } from '../message.js';
import type { Cursor, SentLog } from '../queue.js';
import type { Backend, BackendContext, DisconnectReason } from './backend.js';
import { Reconnect } from './backoff.js';
import { coalesced } from './schedule.js';

const SLAB_BYTES = 64 * 1024;
const MAX_FRAME_BYTES = frameBytes(MAX_BINARY_PAYLOAD_BYTES);
/** Stop encoding while this much is already waiting in the socket. */
const BUFFERED_LIMIT = 256 * 1024;
/** Slabs kept for reuse (a slab comes back once the socket has taken its bytes). */
const SLAB_POOL = 16;
/** A connection that dies silently sooner than this after connecting counts as a failed attempt. */
const HEALTHY_AFTER_MS = 1000;
/** The first, smallest, and additive step of the unconfirmed window. */
export const MIN_WINDOW = 256;

class Connection {
	readonly id: number;
	readonly socket: tls.TLSSocket;
	readonly log: SentLog;
	ready = false;
	/** No more writes or answers count: an error frame came, or the socket closed. */
	finished = false;
	connectedAt = 0;
	/** When this connection began writing as the active one. */
	activeSince = 0;
	/** The window epoch this connection was opened in (see the module comment). */
	readonly epoch: number;
	error: Error | undefined;
	reason: DisconnectReason | undefined;
	inbox: Buffer | undefined;
	timer: NodeJS.Timeout | undefined;

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
}

/** The `'evented'` backend. */
export function createEventedBackend(context: BackendContext): Backend {
	return new EventedBackend(context);
}

class EventedBackend implements Backend {
	readonly #ctx: BackendContext;
	readonly #connections = new Set<Connection>();
	#active: Connection | undefined;
	/** Connected (or connecting) and idle, ready to take over when the active connection probes. */
	#spare: Connection | undefined;
	#ids = 0;
	readonly #reconnect: Reconnect;
	#closing = false;
	#destroyed = false;
	#session: Buffer | undefined;
	#connectAttempts = 0;
	/** Notifications a connection may write before it must probe; 0 = only when idle. */
	#window: number;
	/** Above this the window grows additively (see the module comment). */
	#threshold: number;
	/** Incremented by every shrink; only connections opened since may grow the window. */
	#epoch = 0;
	readonly #cursor: Cursor = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	#closeWaiters: Array<() => void> = [];
	/** Reusable slabs: allocating 64 KiB per write was a large share of the garbage at a million a second. */
	readonly #slabs: Buffer[] = [];
	readonly #recycle = (slab: Buffer): void => {
		if (this.#slabs.length < SLAB_POOL) this.#slabs.push(slab);
	};

	constructor(context: BackendContext) {
		this.#ctx = context;
		this.#reconnect = new Reconnect(context.options.reconnect, () => this.wake());
		this.#threshold = context.options.confirmEvery;
		this.#window = Math.min(MIN_WINDOW, this.#threshold);
	}

	/** The current unconfirmed window (see the module comment). */
	get window(): number {
		return this.#window;
	}

	get connectAttempts(): number {
		return this.#connectAttempts;
	}

	readonly #wake = coalesced(() => this.#pump());

	wake(): void {
		if (!this.#destroyed) this.#wake();
	}

	#pump(): void {
		if (this.#destroyed) return;
		const { queue, options } = this.#ctx;
		if (this.#active === undefined && this.#spare !== undefined && queue.canTake) {
			this.#active = this.#spare;
			this.#spare = undefined;
		}
		const conn = this.#active;
		if (conn === undefined) {
			if (queue.canTake && !this.#reconnect.waiting && !this.#closing) this.#connect('active');
			return;
		}
		if (!conn.ready || conn.finished || conn.log.probing) return;
		const log = conn.log;
		const socket = conn.socket;
		const every = this.#window;
		// More work than this connection's window holds: have the next connection ready in time.
		if (every > 0 && this.#spare === undefined && !this.#closing && queue.unsent > every - log.sinceProof) this.#connect('spare');
		if (conn.activeSince === 0) conn.activeSince = performance.now();
		for (;;) {
			if (socket.writableLength >= BUFFERED_LIMIT) return; // 'drain' pumps again
			// The window bounds a probe's interval in count; on a healthy stream (the window fully open)
			// minConfirmIntervalMs also bounds it in time from below. Not after a silent close: there a
			// stretched window would again die unproven every time and never converge. (Applying it during the
			// initial slow start too was measured: no clear gain, 55% more duplicates after silent drops.)
			const limited = every > 0 && (every < options.confirmEvery || performance.now() - conn.activeSince >= options.minConfirmIntervalMs);
			if (limited && log.sinceProof >= every) {
				this.#probe(conn);
				return;
			}
			const slab = this.#slabs.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES);
			let used = 0;
			const cursor = this.#cursor;
			while (used + MAX_FRAME_BYTES <= SLAB_BYTES && (!limited || log.sinceProof < every) && queue.take(log, cursor)) {
				const m = cursor.message;
				used = writeFrame(slab, used, m.tokenBytes, cursor.index, m.encodedPayload, cursor.ident, m.expiry ?? 0, m.priority);
			}
			if (used === 0) {
				this.#recycle(slab);
				break;
			}
			socket.write(used === SLAB_BYTES ? slab : slab.subarray(0, used), () => this.#recycle(slab));
		}
		// Out of work, or at the retention cap: settle what this connection holds.
		if (log.size === 0) return;
		if (queue.unsent > 0 || this.#ctx.wantsConfirmation() || options.confirmIdleMs === 0) {
			this.#probe(conn);
		} else if (options.confirmIdleMs !== false) {
			conn.clearTimer();
			conn.timer = setTimeout(() => {
				conn.timer = undefined;
				if (this.#active !== conn || conn.finished || log.probing || log.size === 0) return;
				if (queue.canTake) this.#pump();
				else this.#probe(conn);
			}, options.confirmIdleMs);
		}
	}

	/** Write the known-bad probe; the connection writes nothing more and the next one takes over. */
	#probe(conn: Connection): void {
		const { queue, options } = this.#ctx;
		conn.clearTimer();
		const frame = Buffer.allocUnsafe(PROBE_FRAME_BYTES);
		writeProbeFrame(frame, 0, queue.probe(conn.log));
		conn.socket.write(frame);
		if (this.#active === conn) {
			this.#active = this.#spare;
			this.#spare = undefined;
		}
		// A gateway that never answers must not hold the socket forever: by then grace has settled
		// everything written before the probe, so ending the connection re-sends nothing that was processed.
		conn.timer = setTimeout(() => {
			queue.purge();
			conn.socket.end();
		}, options.graceMs + 100);
		conn.timer.unref();
		if (queue.canTake) this.wake();
	}

	#connect(role: 'active' | 'spare'): void {
		const { tls: gateway, options, queue } = this.#ctx;
		this.#connectAttempts++;
		const socket = connectTls(gateway, this.#session === undefined ? {} : { session: this.#session });
		const conn = new Connection(++this.#ids, socket, queue.openLog(), this.#epoch);
		if (role === 'active') this.#active = conn;
		else this.#spare = conn;
		this.#connections.add(conn);
		conn.timer = setTimeout(() => socket.destroy(new ConnectionError(`Connect to ${gateway.host}:${gateway.port} timed out after ${options.connectTimeoutMs} ms`)), options.connectTimeoutMs);
		socket.setNoDelay(true);
		socket.once('secureConnect', () => {
			conn.clearTimer();
			conn.ready = true;
			conn.connectedAt = performance.now();
			this.#ctx.events.connected({ connection: conn.id });
			if (this.#active === conn) this.#pump();
		});
		socket.on('session', (session: Buffer) => {
			this.#session = session;
		});
		socket.on('data', (chunk: Buffer) => this.#onData(conn, chunk));
		socket.on('drain', () => {
			if (this.#active === conn) this.#pump();
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
		this.#finish(conn);
		if (data[0] !== COMMAND_ERROR) {
			conn.error = new ProtocolError(`The gateway sent command ${data[0]}, expected an error response (8)`);
			conn.reason = 'silentClose';
			this.#ctx.queue.connectionClosed(conn.log);
		} else {
			const outcome = this.#ctx.queue.errorFrame(conn.log, data[1]!, data.readUInt32BE(2));
			conn.reason = outcome === 'probe' ? 'probeAnswered' : 'errorFrame';
			this.#reconnect.succeeded(); // the gateway is alive and answering
			if (outcome === 'probe' && conn.epoch === this.#epoch) this.#growWindow();
		}
		conn.socket.destroy();
	}

	#finish(conn: Connection): void {
		conn.finished = true;
		conn.clearTimer();
		if (this.#active === conn) this.#active = undefined;
		if (this.#spare === conn) this.#spare = undefined;
	}

	#onClose(conn: Connection): void {
		this.#connections.delete(conn);
		const wasActive = this.#active === conn;
		const { queue, events } = this.#ctx;
		if (!conn.ready) {
			this.#finish(conn);
			queue.connectionClosed(conn.log);
			if (!this.#destroyed && !this.#closing) {
				const { host, port } = this.#ctx.tls;
				const reason = conn.error?.message ?? 'closed during the handshake';
				events.connectError(new ConnectionError(`Cannot connect to ${host}:${port}: ${reason}`, { cause: conn.error }), this.#reconnect.failed());
			}
		} else {
			if (!conn.finished) {
				this.#finish(conn);
				conn.reason = this.#destroyed ? 'destroyed' : this.#closing && conn.log.size === 0 ? 'closed' : 'silentClose';
				if (conn.reason === 'silentClose' && conn.log.size > 0) this.#shrinkWindow();
				queue.connectionClosed(conn.log);
				// A gateway that keeps hanging up on fresh connections must not be hammered: a quick silent
				// close counts as a failed connect attempt. (With TLS 1.3 a refused client certificate looks
				// like this: the handshake completes on our side, then the server's alert closes it.)
				const upMs = performance.now() - conn.connectedAt;
				if (conn.reason === 'silentClose' && wasActive && upMs < HEALTHY_AFTER_MS) {
					const { host, port } = this.#ctx.tls;
					const why = conn.error?.message ?? 'no error frame';
					events.connectError(
						new ConnectionError(`Connection to ${host}:${port} closed ${Math.round(upMs)} ms after connecting: ${why}`, { cause: conn.error }),
						this.#reconnect.failed(),
					);
				}
			}
			events.disconnected({ connection: conn.id, reason: conn.reason ?? 'closed', ...(conn.error === undefined ? {} : { error: conn.error }) });
		}
		if (this.#connections.size === 0) {
			for (const resolve of this.#closeWaiters.splice(0)) resolve();
		}
		if (!this.#closing) this.wake();
	}

	#growWindow(): void {
		const max = this.#ctx.options.confirmEvery;
		this.#window = Math.min(max, this.#window < this.#threshold ? this.#window * 2 : this.#window + MIN_WINDOW);
	}

	#shrinkWindow(): void {
		if (this.#window === 0) return;
		this.#epoch++;
		this.#threshold = Math.max(Math.min(MIN_WINDOW, this.#ctx.options.confirmEvery), this.#window >> 1);
		this.#window = this.#threshold;
	}

	close(): Promise<void> {
		this.#closing = true;
		this.#reconnect.cancel();
		if (this.#connections.size === 0) return Promise.resolve();
		const done = new Promise<void>((resolve) => this.#closeWaiters.push(resolve));
		for (const conn of this.#connections) {
			if (!conn.ready) conn.socket.destroy();
			else conn.socket.end();
		}
		return done;
	}

	destroy(): void {
		this.#destroyed = true;
		this.#closing = true;
		this.#reconnect.cancel();
		for (const conn of this.#connections) {
			conn.clearTimer();
			conn.socket.destroy();
		}
	}
}
