/**
 * A mock binary APNs gateway on 127.0.0.1: real TLS with client-certificate verification, parses commands
 * 0, 1 and 2, records every notification it accepts, and injects faults on demand. It behaves as Apple
 * documented: an accepted notification gets no answer; a rejected one gets an error response, after
 * which the connection is closed and everything sent after it is discarded.
 */
import { encodeErrorResponse, parseNotification, STATUS_SHUTDOWN } from '../frame.js';
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
	/** Connections dropped silently by `silentDropEvery`. */
	readonly silentDrops: number;
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

/** Start a mock gateway. Resolves once it listens. */
export async function startMockGateway(options: MockGatewayOptions): Promise<MockGateway> {
	let faults: MockGatewayFaults = options.faults ?? {};
	let rejects = toRejectMap(faults);
	const record = options.record ?? true;
	const countTokens = options.countTokens ?? true;
	const onAccepted = options.onAccepted;
	const received: ReceivedNotification[] = [];
	const counts = new Map<string, number>();
	const errorsSent: SentError[] = [];
	const timers = new Set<NodeJS.Timeout>();
	let accepted = 0;
	let seen = 0;
	let silentDrops = 0;

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

	const server = await startMockTlsServer(options, (socket, id) => {
		let pending: Buffer | undefined;
		/** After an error decision, everything else on this connection is discarded. */
		let dead = false;
		const fail = (status: number, ident: number): void => {
			dead = true;
			errorsSent.push({ status, ident, connection: id });
			const frame = encodeErrorResponse(status, ident);
			const delay = errorDelay();
			if (delay > 0) later(delay, () => socket.end(frame));
			else socket.end(frame);
		};
		socket.on('data', (chunk: Buffer) => {
			if (dead) return;
			const buf = pending === undefined ? chunk : Buffer.concat([pending, chunk]);
			let offset = 0;
			while (!dead) {
				const parsed = parseNotification(buf, offset);
				if (parsed === undefined) break;
				const n = parsed.notification;
				if (parsed.end < 0) {
					fail(n.status, 0);
					break;
				}
				offset = parsed.end;
				if (n.status !== 0) {
					fail(n.status, n.ident);
					break;
				}
				seen++;
				if (faults.silentDropEvery !== undefined && seen % faults.silentDropEvery === 0) {
					dead = true;
					silentDrops++;
					socket.destroy();
					break;
				}
				// Hex only when something keyed by it needs it: big benchmark runs do without.
				const token = record || countTokens || rejects.size > 0 ? n.token.toString('hex') : '';
				const rejectStatus = (rejects.size > 0 ? rejects.get(token) : undefined) ?? faults.rejectToken?.(n.token);
				if (rejectStatus !== undefined) {
					fail(rejectStatus, n.ident);
					break;
				}
				accepted++;
				if (countTokens) counts.set(token, (counts.get(token) ?? 0) + 1);
				onAccepted?.(n.token);
				if (record) {
					received.push({ token, payload: n.payload.toString('utf8'), ident: n.ident, expiry: n.expiry, priority: n.priority, command: n.command, connection: id });
				}
				if (faults.shutdownEvery !== undefined && accepted % faults.shutdownEvery === 0) {
					fail(STATUS_SHUTDOWN, n.ident);
					break;
				}
			}
			pending = dead || offset === buf.length ? undefined : buf.subarray(offset);
			if (!dead && faults.readPauseMs !== undefined && faults.readPauseMs > 0) {
				socket.pause();
				later(faults.readPauseMs, () => socket.resume());
			}
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
		get silentDrops() {
			return silentDrops;
		},
		setFaults(next: MockGatewayFaults) {
			faults = next;
			rejects = toRejectMap(next);
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
