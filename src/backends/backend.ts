/**
 * The seam between the manager and whatever drives sockets. A backend takes notifications from the
 * queue ({@link DriverQueue}), writes them, and tells the queue what the gateway answered for each; the
 * queue and the protocol's rules decide what is delivered, failed or re-sent. The built-in backends run
 * the protocol's driver (drivers/*) on the caller's event loop (`'evented'`) or in worker threads
 * (`'threaded'`). Every backend passes the same conformance suite (test/conformance.test.ts).
 */
import type { TlsTarget } from '../credentials.js';
import type { ConnectionError } from '../errors.js';
import type { ResolvedOptions } from '../options.js';
import type { ApnsIds } from '../receipt.js';
import type { DriverQueue, InFlight } from '../queue.js';

/** TLS material and address of the gateway. */
export type GatewayTls = TlsTarget;

/** Connection-level happenings a backend reports; the manager turns them into events and stats. */
export interface BackendEvents {
	connected(info: { connection: number }): void;
	disconnected(info: { connection: number; reason: DisconnectReason; error?: Error }): void;
	connectError(error: ConnectionError, info: { attempt: number; retryInMs: number }): void;
	/** Binary: an error frame named an ident its connection never carried; what it held was re-sent. */
	identNotFound(info: { ident: number; status: number; resent: number }): void;
	/** Binary: a probe was answered (everything written before it on its connection is delivered). */
	probeAnswered(): void;
	/** `'threaded'`: a worker thread started and loaded its driver, `startMs` after it was spawned. */
	threadReady(info: { thread: number; startMs: number }): void;
	/** `'threaded'`: a worker thread died; what it held (`resent`) went back to the queue, in doubt. */
	threadExit(info: { thread: number; error: Error; resent: number; retryInMs: number }): void;
	/** `'threaded'`: the number of threads taking work changed; `busy`: each thread's reading (0–1), by number. */
	threadsInUse(info: { inUse: number; busy: Array<number | undefined> }): void;
}

/**
 * How a connection the peer closed without a word is reported. Under TLS 1.3 a server that refuses the
 * client certificate does exactly this right after the handshake (no alert reaches the client), so say so.
 */
export const CLOSED_UNANSWERED = 'the gateway closed it without answering (under TLS 1.3 a refused client certificate looks like this)';

/** Why a connection ended. */
export type DisconnectReason = 'errorFrame' | 'probeAnswered' | 'silentClose' | 'goaway' | 'protocolError' | 'timeout' | 'closed' | 'destroyed' | 'threadExit';

/** The options a driver reads. */
export type DriverOptions = Pick<
	ResolvedOptions,
	| 'graceMs' | 'confirmEvery' | 'minConfirmIntervalMs' | 'confirmIdleMs' | 'reconnect' | 'maxConnectsPerSecond' | 'connectTimeoutMs'
	| 'connections' | 'maxStreamsPerSession' | 'retry' | 'requestTimeoutMs' | 'pingIntervalMs' | 'pingTimeoutMs'
>;

/** Everything fixed about where and how to connect. Plain data: it crosses to worker threads as it is. */
export interface DriverSetup {
	readonly protocol: 'binary' | 'http2';
	readonly tls: GatewayTls;
	readonly options: DriverOptions;
	/** HTTP/2: the default `apns-topic` (bundle ID). */
	readonly topic: string | undefined;
	/** HTTP/2 token auth: requests carry the provider token ({@link BackendContext.token}). */
	readonly tokenAuth: boolean;
}

/** The provider token as a driver uses it. */
export interface TokenSource {
	/** The JWT to send now. */
	current(): string;
	/** APNs said ExpiredProviderToken: make a new one (at most one per 20 minutes). */
	expired(): void;
}

/** What a backend is given. */
export interface BackendContext {
	readonly queue: DriverQueue;
	readonly setup: DriverSetup;
	readonly events: BackendEvents;
	/** HTTP/2 token auth. */
	readonly token?: TokenSource | undefined;
	/** HTTP/2: the `apns-id` of each notification. */
	readonly apnsIds?: ApnsIds | undefined;
	/** Worker threads, for a backend that runs them (`threads` option). */
	readonly threads?: number | undefined;
	/** Of those, how many always take work (`minThreads` option). */
	readonly minThreads?: number | undefined;
	/** True while someone waits for everything to be settled (`flushMessages`, `close`): probe without delay. */
	wantsConfirmation(): boolean;
}

/** A socket driver. */
export interface Backend {
	/** There is work to write, room to write it, or a confirmation is wanted. Cheap and idempotent. */
	wake(): void;
	/** Close connections once nothing is left to settle on them; stop reconnecting. */
	close(): Promise<void>;
	/**
	 * Drop every connection now. Returns the notifications it held (written and unsettled, in flight, or
	 * waiting to be retried), so that the queue can settle them as dropped.
	 */
	destroy(): Iterable<InFlight>;
	/** Connect attempts made so far (successful or not). */
	readonly connectAttempts: number;
}

/** Makes a backend for a manager. */
export type BackendFactory = (context: BackendContext) => Backend;
