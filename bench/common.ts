/**
 * What the benchmark processes share: workloads, tokens, the payload, and the messages they exchange.
 * Tokens carry their index in their last four bytes, so the gateway process counts deliveries in a typed
 * array instead of a map of strings.
 */
import { generateKeyPairSync } from 'node:crypto';
import { makeTestCertificates, type PemPair } from '../src/mock/certs.js';

export type ClientName = 'raw' | 'worker' | 'node-apn' | 'h2-bare' | 'h2-worker' | 'parse-apn' | 'apns2' | ThreadedClientName;

/**
 * apns-worker with `backend: 'threaded'`: binary or HTTP/2, one or two worker threads (the second taking
 * work only while the first is compute-bound, the default), or two both taking work (`-all`: minThreads 2).
 */
export type ThreadedClientName = 'worker-threaded' | 'worker-threaded2' | 'worker-threaded2-all' | 'h2-threaded' | 'h2-threaded2' | 'h2-threaded2-all';

export const TOPIC = 'com.example.bench';

export interface Faults {
	/** Reject (status 8; HTTP/2: 410 Unregistered) every token whose index i has i % rejectEvery === rejectEvery − 1. */
	readonly rejectEvery?: number;
	/** HTTP/2: answer every N-th request 500 (a retry gets it through). */
	readonly error500Every?: number;
	readonly shutdownEvery?: number;
	readonly silentDropEvery?: number;
}

export interface Workload {
	readonly name: string;
	readonly protocol?: 'binary' | 'http2';
	readonly n: number;
	readonly faults: Faults;
	readonly clients: readonly ClientName[];
	/** Repetitions when `--reps` is not given (default 3): fewer for workloads a peer takes minutes over, more for noisy ones. */
	readonly reps?: number;
	/**
	 * Burst: every notification has a payload of its own ({@link burstPayload}), and all are handed to the
	 * client in one synchronous loop, one token per call; the client measures its heap and RSS around it.
	 */
	readonly burst?: boolean;
	/**
	 * Paced: handed over as a web server would, in chunks of {@link PACED_CHUNK} tokens, each in a macrotask
	 * of its own, each after `await manager.onPendingBelow(PACED_PENDING)` (apns-worker clients only).
	 */
	readonly paced?: boolean;
	/**
	 * Evented against threaded: `clients[0]` is the evented reference the others are compared with, and the
	 * rows get a table of their own (event-loop delay of the caller, CPU of the client and gateway processes).
	 */
	readonly threads?: boolean;
}

/** A paced hand-over's chunk: tokens per `sendAps` call. */
export const PACED_CHUNK = 1000;
/** A paced hand-over waits before each chunk until fewer than this many are pending. */
export const PACED_PENDING = 20_000;
/** monitorEventLoopDelay's resolution: a timer every 10 ms, whose lateness is the delay recorded. */
export const LOOP_RESOLUTION_MS = 10;

export const PAYLOAD = { aps: { alert: 'Benchmark notification', badge: 1, sound: 'default' } };

/** The burst workload's `aps` for notification i: an alert text of its own. */
export function burstAps(i: number): { alert: string; badge: number; sound: string } {
	return { alert: `Burst notification ${i}`, badge: 1, sound: 'default' };
}

/** The burst workload's whole payload for notification i: its `aps` and a custom key (as `sendAps` lays it out, extra keys first). */
export function burstPayload(i: number): { burst: number; aps: ReturnType<typeof burstAps> } {
	return { burst: i, aps: burstAps(i) };
}

const TOKEN_PREFIX = Buffer.from('be'.repeat(28), 'hex');

/**
 * Token `i`: 56 hex digits of 'be', then i as 8 hex digits. Built as a flat string, as tokens arrive
 * from JSON or a database driver: a template literal makes a cons string, which the first read of it
 * flattens (copies) — about 0.4 s per million inside the client's timed sendAps calls, for every client.
 */
export function token(i: number): string {
	const bytes = Buffer.allocUnsafe(32);
	TOKEN_PREFIX.copy(bytes);
	bytes.writeUInt32BE(i, 28);
	return bytes.toString('hex');
}

export function tokens(n: number): string[] {
	const out = new Array<string>(n);
	for (let i = 0; i < n; i++) out[i] = token(i);
	return out;
}

export function tokenIndex(tokenBytes: Buffer): number {
	return tokenBytes.readUInt32BE(28);
}

/** The index carried by a token in hex (any case). */
export function tokenIndexOf(hex: string): number {
	return Number.parseInt(hex.slice(56, 64), 16);
}

export function isRejected(i: number, faults: Faults): boolean {
	return faults.rejectEvery !== undefined && i % faults.rejectEvery === faults.rejectEvery - 1;
}

export interface Certs {
	readonly ca: string;
	readonly server: PemPair;
	readonly client: PemPair;
	/** HTTP/2 token auth: a P-256 key (PKCS#8 PEM), its public half, and its IDs. */
	readonly p8: { readonly key: string; readonly publicKey: string; readonly keyId: string; readonly teamId: string };
}

/** Certificates made now (a CA, the mock's server certificate, a client certificate) and a P-256 signing key. */
export function makeCerts(): Certs {
	const made = makeTestCertificates();
	const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
	return {
		ca: made.ca.cert,
		server: made.server,
		client: made.client,
		p8: { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicKey: p8.publicKey.export({ type: 'spki', format: 'pem' }).toString(), keyId: 'BENCHKEY01', teamId: 'BENCHTEAM1' },
	};
}

/** Orchestrator → gateway process. */
export type ServerRequest = { type: 'start'; n: number; faults: Faults; protocol: 'binary' | 'http2'; repeat?: number } | { type: 'poll' } | { type: 'stats' } | { type: 'stop' };

/** Gateway process → orchestrator, in answer to `poll`. */
export interface ServerProgress {
	type: 'progress';
	unique: number;
	expected: number;
	completeAt: number | undefined;
	/** When the first notification was accepted (Date.now()). */
	firstAt: number | undefined;
	lastProgressAt: number;
	/** The gateway process's CPU time so far (process.cpuUsage(), user + system), in microseconds. */
	cpuMicros: number;
}

/** Gateway process → orchestrator. */
export interface ServerPoll {
	type: 'poll';
	unique: number;
	expected: number;
	completeAt: number | undefined;
	lastProgressAt: number;
	/** Tokens that should have been accepted and never were. */
	lost: number;
	/** Their indices (the orchestrator subtracts those the client was told failed). */
	missing: number[];
	duplicated: number;
	deliveredRejected: number;
	connections: number;
	silentDrops: number;
	errorsSent: number;
}

/** Orchestrator → client process (on its command line). */
export interface ClientTask {
	readonly client: ClientName;
	readonly workload: Workload;
	readonly port: number;
	readonly certs: Certs;
	/** Memory mode: queue `n` notifications while the gateway is unreachable and measure the heap. */
	readonly memory: boolean;
}

/**
 * What a burst client measured in its own process. Baseline: after two full GCs, library loaded and client
 * made, right before the hand-over loop. After: right after the loop, before the event loop turned (so no
 * answer has freed anything yet), again after two full GCs, so only what is still referenced counts.
 */
export interface BurstMeasure {
	readonly n: number;
	/** False: taken right after the hand-over loop, so the peaks are only those so far. */
	readonly final: boolean;
	readonly baseline: { readonly rss: number; readonly heapUsed: number; readonly arrayBuffers: number; readonly external: number };
	/** heapUsed right after the loop, before any GC was forced: live heap plus the loop's garbage not yet collected. */
	readonly heapUsedRaw: number;
	readonly after: { readonly rss: number; readonly heapUsed: number; readonly arrayBuffers: number; readonly external: number };
	/** Highest RSS sampled (every 25 ms, after the loop, and at the end). */
	readonly sampledPeakRss: number;
	/** Highest heapUsed and heapTotal in the same samples: how far garbage built up between collections. */
	readonly sampledPeakHeapUsed: number;
	readonly sampledPeakHeapTotal: number;
	/** The kernel's high-water mark of RSS at the end (ru_maxrss), and at the baseline (should equal about the baseline RSS). */
	readonly kernelPeakRss: number;
	readonly kernelPeakRssAtBaseline: number;
	/** How long the hand-over loop took. */
	readonly loopMs: number;
	/** Time spent measuring after the loop (the forced GCs): taken out of the elapsed time. */
	readonly pauseMs: number;
}

/**
 * What a client measured in its own process from its first send to the last settlement it saw (or to
 * the orchestrator's 'finish', whichever came first).
 */
export interface LoopMeasure {
	/** How late the caller's event loop ran a {@link LOOP_RESOLUTION_MS} timer (the resolution taken off), in ms. */
	readonly delayMs: { readonly p50: number; readonly p99: number; readonly max: number; readonly mean: number; readonly samples: number };
	/** CPU of the whole client process (every thread: process.cpuUsage()), in ms. */
	readonly cpuMs: number;
	/** How long the caller's event loop was busy (performance.eventLoopUtilization(): the main thread only), in ms. */
	readonly callerBusyMs: number;
	/**
	 * CPU by thread (Linux /proc, 10 ms ticks), in ms: the caller's (main) thread; the runtime's threads that
	 * were there before the client library loaded (V8's garbage collector and compiler helpers, libuv); the
	 * threads started since (the `'threaded'` backend's workers, libuv's pool if first used then).
	 */
	readonly threadCpuMs?: { readonly caller: number; readonly runtime: number; readonly started: number };
	readonly wallMs: number;
}

/** Client process → orchestrator. */
export type ClientMessage =
	| { type: 'started'; at: number }
	| { type: 'handedOver'; measure: BurstMeasure }
	| { type: 'result'; failed: number[]; reconnects: number; peakRssBytes: number; baselineRssBytes: number; doneAt: number; burst?: BurstMeasure; loop?: LoopMeasure; events?: Record<string, number>; threadsReadyMs?: number; threadsUsed?: number }
	| { type: 'memory'; heapBytes: number; externalBytes: number; n: number; peakRssBytes: number };
