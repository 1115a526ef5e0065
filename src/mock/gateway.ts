/**
 * A mock binary APNs gateway on 127.0.0.1: real TLS with client-certificate verification, parses commands
 * 0, 1 and 2, records every notification it accepts, and injects faults on demand. It behaves as Apple
 * documented: an accepted notification gets no answer; a rejected one gets an error response, after
 * which the connection is closed and everything sent after it is discarded.
 */
import { encodeErrorResponse, parseNotification, SCAN_BROKEN, SCAN_MORE, scannedNotification, scanNotification } from '../frame.js';
import { TOKEN_BYTES } from '../message.js';
import { STATUS_SHUTDOWN } from '../protocol/binary.js';
import { startMockTlsServer, type MockTlsServerOptions } from './tls-server.js';

/** Faults the mock injects. All can be changed while it runs with `setFaults`. */
export interface MockGatewayFaults {
	/** Reject these tokens (lowercase hex) with the given status (8, Invalid token, when `true`). */
	readonly rejectTokens?: ReadonlyMap<string, number | true> | Readonly<Record<string, number | true>>;
	/** Reject a token when this returns a status (checked after `rejectTokens`); cheaper than a map for big runs. */
	readonly rejectToken?: (token: Buffer) => number | undefined;
	/** Every N-th accepted notification is answered with status 10 (Shutdown) naming it, then the connection closes. */
	readonly shutdownEvery?: number;
	/** Every N-th notification received is dropped with the connection: no error frame, nothing after it recorded. */
	readonly silentDropEvery?: number;
	/** Send error frames this long after the fault, in ms (APNs sends them up to ~800 ms late). A pair picks at random in [min, max]. */
	readonly errorDelayMs?: number | readonly [number, number];
	/** Pause reading for this long after every chunk, in ms, to push back on the client. */
	readonly readPauseMs?: number;
	/**
	 * Hostile: answer the first data of every connection with 6 bytes of non-protocol garbage
	 * (`de ad be ef fe ed`) instead of processing it, then close. Nothing is recorded.
	 */
	readonly garbage?: boolean;
	/**
	 * Hostile: answer the first data of every connection with an error-response-sized frame whose command
	 * byte is 9, not 8 (status 8, naming the first ident of that data), then close. Nothing is recorded.
	 */
	readonly wrongCommand?: boolean;
	/**
	 * Hostile: answer the first data of every connection with only the first 3 bytes of an error response
	 * (command 8, status 8, the top byte of the first ident), then close. Nothing is recorded.
	 */
	readonly truncatedError?: boolean;
	/**
	 * Hostile: answer the first data of every connection with a well-formed error response, status 8,
	 * naming ident 0x7fffffff (never sent by a client that counts from 1), then close. Nothing is recorded;
	 * the answer is listed in `errorsSent`.
	 */
	readonly errorUnknownIdent?: boolean;
	/**
	 * Hostile: when this token (hex) arrives, destroy the connection with no error frame. Notifications
	 * before it on that connection are processed as usual; it and everything after it are not. Counted in
	 * `silentDrops`. Applies on every connection, so a client that re-sends it is dropped every time.
	 */
	readonly dropOnToken?: string;
	/** Hostile: complete the TLS handshake, then never read a byte (the socket stays paused for good). */
	readonly neverRead?: boolean;
	/** Hostile: on each new connection, process the first chunk, then stop reading for this long, in ms, then read normally. */
	readonly stallReadMs?: number;
}

/** Options of {@link startMockGateway}. */
export interface MockGatewayOptions extends MockTlsServerOptions {
	readonly faults?: MockGatewayFaults;
	/**
	 * Keep every accepted notification in {@link MockGateway.received}. Turn off for very large runs.
	 * @default true
	 */
	readonly record?: boolean;
	/** Keep {@link MockGateway.counts} (a map keyed by hex token). Turn off for very large runs. @default true */
	readonly countTokens?: boolean;
	/** Called with each accepted token (a view valid only during the call). */
	readonly onAccepted?: (token: Buffer) => void;
	/** Called with the token of every notification frame parsed, whatever becomes of it (a view valid only during the call). */
	readonly onFrame?: (token: Buffer) => void;
}

/** A notification the mock accepted. */
export interface ReceivedNotification {
	readonly token: string;
	readonly payload: string;
	readonly ident: number;
	readonly expiry: number;
	readonly priority: number;
	readonly command: number;
	/** Which connection (1, 2, …) it came on. */
	readonly connection: number;
}

/** An error response the mock sent. */
export interface SentError {
	readonly status: number;
	readonly ident: number;
	readonly connection: number;
}

/** A running mock gateway. */
export interface MockGateway {
	readonly host: string;
	readonly port: number;
	/** Accepted notifications in order (when `record` is on). */
	readonly received: readonly ReceivedNotification[];
	/** How many times each token was accepted. */
	readonly counts: ReadonlyMap<string, number>;
	/** Total accepted. */
	readonly acceptedCount: number;
	/** Error responses sent, in order. */
	readonly errorsSent: readonly SentError[];
	/** Connections whose handshake completed. */
	readonly connections: number;
	/** TCP connections accepted, including those whose TLS handshake failed. */
	readonly connectionsAccepted: number;
	/** Notification frames parsed (probes included), whatever became of them: accepted, rejected or dropped. */
	readonly framesReceived: number;
	/** Bytes the mock read from clients after their handshakes (what `neverRead` and `stallReadMs` hold back is not counted until read). */
	readonly bytesReceived: number;
	/** Connections dropped silently by `silentDropEvery` or `dropOnToken`. */
	readonly silentDrops: number;
	/** Answers sent by `garbage`, `wrongCommand`, `truncatedError` and `errorUnknownIdent`. */
	readonly garbledAnswers: number;
	/** Change the faults from now on. */
	setFaults(faults: MockGatewayFaults): void;
	/** Stop listening (connects are refused) for `ms`, then listen on the same port again. */
	refuseFor(ms: number): Promise<void>;
	/** Close the server and every connection. */
	close(): Promise<void>;
}

function toRejectMap(faults: MockGatewayFaults): Map<string, number> {
	const out = new Map<string, number>();
	const given = faults.rejectTokens;
	if (given === undefined) return out;
	const entries = given instanceof Map ? [...given.entries()] : Object.entries(given);
	for (const [token, status] of entries) out.set(token.toLowerCase(), status === true ? 8 : status);
	return out;
}

/** Ident named by `errorUnknownIdent`: a client counting from 1 never gets this far in a test. */
const UNKNOWN_IDENT = 0x7fffffff;
const GARBAGE = Buffer.from([0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed]);
const EMPTY = Buffer.alloc(0);
/** What a frame's processing returns when nothing more is read on its connection. */
const STOP = -3;
/** How much of a new read is first joined to the bytes a frame left over (a frame with a 2 KiB payload is ~2.1 KiB). */
const STRADDLE_FIRST_BYTES = 512;
/** The token handed to `onAccepted` and `onFrame`: one buffer, refilled per frame (each is a view valid only during the call). */
const scratchToken = Buffer.alloc(TOKEN_BYTES);

/**
 * What `garbage`, `wrongCommand` and `truncatedError` send in place of processing a connection's first data
 * (checked in this order), or undefined when none is on. `ident` is the first notification's ident in that data, or 0.
 */
function garbledAnswer(faults: MockGatewayFaults, ident: number): Buffer | undefined {
	if (faults.garbage) return GARBAGE;
	if (faults.wrongCommand) {
		const frame = encodeErrorResponse(8, ident);
		frame[0] = 9;
		return frame;
	}
	if (faults.truncatedError) return encodeErrorResponse(8, ident).subarray(0, 3);
	return undefined;
}

/** Start a mock gateway. Resolves once it listens. */
export async function startMockGateway(options: MockGatewayOptions): Promise<MockGateway> {
	let faults: MockGatewayFaults = options.faults ?? {};
	let rejects = toRejectMap(faults);
	let dropToken = faults.dropOnToken === undefined ? undefined : Buffer.from(faults.dropOnToken, 'hex');
	const record = options.record ?? true;
	const countTokens = options.countTokens ?? true;
	const onAccepted = options.onAccepted;
	const received: ReceivedNotification[] = [];
	const counts = new Map<string, number>();
	const errorsSent: SentError[] = [];
	const timers = new Set<NodeJS.Timeout>();
	let accepted = 0;
	let seen = 0;
	let frames = 0;
	let bytes = 0;
	let silentDrops = 0;
	let garbled = 0;

	const later = (ms: number, fn: () => void): void => {
		const timer = setTimeout(() => {
			timers.delete(timer);
			fn();
		}, ms);
		timers.add(timer);
	};
	const errorDelay = (): number => {
		const d = faults.errorDelayMs ?? 0;
		if (typeof d === 'number') return d;
		return d[0] + Math.random() * (d[1] - d[0]);
	};
	const pauseFor = (socket: NodeJS.ReadableStream, ms: number): void => {
		socket.pause();
		later(ms, () => socket.resume());
	};

	const server = await startMockTlsServer(options, (socket, id) => {
		if (faults.neverRead) {
			// Paused with no reader: TLS stops pulling from TCP once its buffer is full, and the client's writes back up.
			socket.pause();
			return;
		}
		let pending: Buffer | undefined;
		let first = true;
		/** After an error decision, everything else on this connection is discarded. */
		let dead = false;
		const answerAndClose = (answer: Buffer): void => {
			dead = true;
			const delay = errorDelay();
			if (delay > 0) later(delay, () => socket.end(answer));
			else socket.end(answer);
		};
		const fail = (status: number, ident: number): void => {
			errorsSent.push({ status, ident, connection: id });
			answerAndClose(encodeErrorResponse(status, ident));
		};
		const n = scannedNotification();
		/** The token of `n` in `buf`, as a view valid only during a callback (a 32-byte one is copied into a scratch buffer: no view made per frame). */
		const tokenOf = (buf: Buffer): Buffer => {
			if (n.tokenLength !== TOKEN_BYTES) return buf.subarray(n.tokenStart, n.tokenStart + n.tokenLength);
			for (let k = 0; k < TOKEN_BYTES; k++) scratchToken[k] = buf[n.tokenStart + k]!;
			return scratchToken;
		};
		/** Process the frame at `offset`: returns the offset after it, SCAN_MORE, or STOP (nothing more is read on this connection). */
		const frame = (buf: Buffer, offset: number): number => {
			const end = scanNotification(buf, offset, n);
			if (end === SCAN_MORE) return SCAN_MORE;
			frames++;
			if (options.onFrame !== undefined) options.onFrame(end === SCAN_BROKEN ? EMPTY : tokenOf(buf));
			if (end === SCAN_BROKEN) {
				fail(n.status, 0);
				return STOP;
			}
			if (n.status !== 0) {
				fail(n.status, n.ident);
				return STOP;
			}
			seen++;
			if ((faults.silentDropEvery !== undefined && seen % faults.silentDropEvery === 0) || (dropToken !== undefined && dropToken.equals(buf.subarray(n.tokenStart, n.tokenStart + n.tokenLength)))) {
				dead = true;
				silentDrops++;
				socket.destroy();
				return STOP;
			}
			// Hex only when something keyed by it needs it: big benchmark runs do without.
			const token = record || countTokens || rejects.size > 0 ? buf.toString('hex', n.tokenStart, n.tokenStart + n.tokenLength) : '';
			const rejectStatus = (rejects.size > 0 ? rejects.get(token) : undefined) ?? faults.rejectToken?.(buf.subarray(n.tokenStart, n.tokenStart + n.tokenLength));
			if (rejectStatus !== undefined) {
				fail(rejectStatus, n.ident);
				return STOP;
			}
			accepted++;
			if (countTokens) counts.set(token, (counts.get(token) ?? 0) + 1);
			if (onAccepted !== undefined) onAccepted(tokenOf(buf));
			if (record) {
				received.push({ token, payload: buf.toString('utf8', n.payloadStart, n.payloadStart + n.payloadLength), ident: n.ident, expiry: n.expiry, priority: n.priority, command: n.command, connection: id });
			}
			if (faults.shutdownEvery !== undefined && accepted % faults.shutdownEvery === 0) {
				fail(STATUS_SHUTDOWN, n.ident);
				return STOP;
			}
			return end;
		};
		socket.on('data', (chunk: Buffer) => {
			if (dead) return;
			bytes += chunk.length;
			let buf = chunk;
			let offset = 0;
			if (pending !== undefined) {
				// Only the frame across the two reads is joined: the bytes left over and as much of the new read as
				// it needs, found by trying a few hundred bytes and then eight times more (joining the whole read
				// onto them copied every byte, as most reads end inside a frame).
				const left = pending.length;
				let taken = Math.min(chunk.length, STRADDLE_FIRST_BYTES);
				let head = Buffer.concat([pending, chunk.subarray(0, taken)]);
				while (scanNotification(head, 0, n) === SCAN_MORE && taken < chunk.length) {
					taken = Math.min(chunk.length, taken * 8);
					head = Buffer.concat([pending, chunk.subarray(0, taken)]);
				}
				if (taken === chunk.length) {
					// The whole read is in `head` (the frame may still be incomplete): go on from there.
					buf = head;
				} else {
					// Complete (or broken) in `head`: processed there, then on in the read, after its end.
					pending = undefined;
					const next = frame(head, 0);
					if (next === STOP) return;
					offset = next - left;
				}
			}
			const stall = first ? (faults.stallReadMs ?? 0) : 0;
			if (first) {
				first = false;
				const answer = garbledAnswer(faults, parseNotification(buf, offset)?.notification.ident ?? 0);
				if (answer !== undefined || faults.errorUnknownIdent) {
					garbled++;
					if (answer !== undefined) answerAndClose(answer);
					else fail(8, UNKNOWN_IDENT);
					return;
				}
			}
			while (!dead) {
				const next = frame(buf, offset);
				if (next === SCAN_MORE || next === STOP) break;
				offset = next;
			}
			pending = dead || offset === buf.length ? undefined : buf.subarray(offset);
			if (dead) return;
			if (stall > 0) pauseFor(socket, stall);
			else if (faults.readPauseMs !== undefined && faults.readPauseMs > 0) pauseFor(socket, faults.readPauseMs);
		});
	});

	let closed = false;

	return {
		host: server.host,
		port: server.port,
		received,
		counts,
		errorsSent,
		get acceptedCount() {
			return accepted;
		},
		get connections() {
			return server.connections;
		},
		get connectionsAccepted() {
			return server.connectionsAccepted;
		},
		get framesReceived() {
			return frames;
		},
		get bytesReceived() {
			return bytes;
		},
		get silentDrops() {
			return silentDrops;
		},
		get garbledAnswers() {
			return garbled;
		},
		setFaults(next: MockGatewayFaults) {
			faults = next;
			rejects = toRejectMap(next);
			dropToken = next.dropOnToken === undefined ? undefined : Buffer.from(next.dropOnToken, 'hex');
		},
		async refuseFor(ms: number) {
			server.stopListening();
			later(ms, () => {
				if (!closed) void server.listenAgain();
			});
		},
		async close() {
			closed = true;
			for (const timer of timers) clearTimeout(timer);
			timers.clear();
			await server.close();
		},
	};
}
