/**
 * Options of {@link ApnsManager}, their defaults, and their validation.
 */
import type { BackendFactory } from './backends/backend.js';
import type { CertificateCredentials, Environment } from './credentials.js';
import type { ProviderToken, ProviderTokenOptions } from './provider-token.js';
import type { DeliveryError } from './errors.js';
import { MAX_TIMER_MS } from './drivers/schedule.js';
import { InvalidArgumentError } from './errors.js';
import { DEFAULT_FEEDBACK_TIMEOUT_MS } from './feedback.js';
import { resolveProxies, type ResolvedProxies } from './proxy.js';
import { DEFAULT_QUEUE_OPTIONS } from './queue.js';

/** A host and port. */
export interface Address {
	readonly host: string;
	readonly port: number;
}

/** An HTTP proxy that connections go through, by CONNECT (RFC 9110 §9.3.6). */
export interface ProxyOptions {
	/** The proxy's host name or IP address. */
	readonly host: string;
	readonly port: number;
	/** Credentials sent as `Proxy-Authorization: Basic` (never printed, never in an error). */
	readonly auth?: { readonly username: string; readonly password: string };
}

/** Reconnection policy: capped exponential backoff with jitter. */
export interface ReconnectOptions {
	/** Delay after the first failed attempt, in ms. @default 250 */
	readonly initialDelayMs?: number;
	/** The delay never grows past this, in ms. @default 30_000 */
	readonly maxDelayMs?: number;
	/** Each delay is multiplied by a random factor in [1 − jitter, 1]. @default 0.5 */
	readonly jitter?: number;
}

/** Options of `new ApnsManager(options)`. */
export interface ApnsManagerOptions extends CertificateCredentials {
	/**
	 * Wire protocol: `'http2'` (Apple's current provider API) or `'binary'` (the legacy gateway protocol,
	 * retired by Apple in March 2021, still spoken by compatible gateways and the bundled mock). Options
	 * that belong to the other protocol are refused.
	 * @default 'http2'
	 */
	readonly protocol?: 'binary' | 'http2';
	/**
	 * Where the protocol's sockets, TLS and framing run: `'evented'` on the caller's event loop, `'threaded'`
	 * in `threads` worker threads (the caller's loop then only queues and hears outcomes), or a
	 * {@link BackendFactory} of your own. Independent of `protocol`: every combination keeps the same
	 * guarantees.
	 * @default 'evented'
	 */
	readonly backend?: 'evented' | 'threaded' | BackendFactory;
	/**
	 * With `backend: 'threaded'`: how many worker threads, each with its own connections. All start with
	 * the manager; `minThreads` of them always take work, and each of the others only while every thread
	 * taking work is compute-bound (see `minThreads`). @default 1
	 */
	readonly threads?: number;
	/**
	 * With `backend: 'threaded'`: how many of the `threads` always take work (1 to `threads`). One more
	 * thread is put to work when every thread taking work ran on a CPU for at least 90 % of the last
	 * 100 ms or more — it is compute-bound, so another thread can add throughput — and one is left to
	 * finish what it holds when the threads taking work would fit in one fewer at 60 % each. (On Linux a
	 * thread's CPU time is the kernel's count for it, so time spent waiting for a core does not make it
	 * busy: on a machine with no core to spare a second thread only adds work; elsewhere, its event-loop
	 * utilization.) A thread that is not taking work settles what it holds at once (binary: probes) and
	 * keeps its connections. Each thread keeps its 1/`threads` share of the connection ceilings whether
	 * it takes work or not, so that the manager's sum holds whichever threads work: one thread of two
	 * working connects at most half as often as `threads: 1` would. More connections for a far gateway
	 * are `connections`' business, not a thread's.
	 * `minThreads: threads` puts every thread to work at once.
	 * @default 1
	 */
	readonly minThreads?: number;
	/**
	 * HTTP/2 token (JWT) authentication with a .p8 key, instead of a client certificate. A
	 * {@link ProviderToken} instance may be shared by several managers (apps of one team): one token
	 * then serves them all, as Apple asks (a new one at most every 20 minutes per key).
	 */
	readonly token?: ProviderTokenOptions | ProviderToken;
	/** HTTP/2 `apns-topic` (bundle ID). Defaults to the certificate's UID with certificate auth; required with token auth. */
	readonly topic?: string;
	/**
	 * HTTP/2 sessions in the pool. While black-holed requests (unanswered on a session that answers
	 * others) fill the pool — those past their deadline within the last `requestTimeoutMs`, with those the
	 * peer read and left unanswered for a second, would fill half a session — and work waits, up to 8
	 * times as many are opened; they are closed once idle with no black hole for `requestTimeoutMs`.
	 * @default 1
	 */
	readonly connections?: number;
	/** HTTP/2: never more streams in flight per session than this, whatever the server allows. @default 1000 */
	readonly maxStreamsPerSession?: number;
	/**
	 * HTTP/2: backoff of retries after 429, 500 and 503, a reset stream, a request past `requestTimeoutMs`,
	 * or a session lost with only that request on it (`retry-after` is honoured when longer, up to
	 * `maxDelayMs`).
	 */
	readonly retry?: ReconnectOptions;
	/**
	 * HTTP/2: a request unanswered this long on a session that is alive — it answered a request or a
	 * PING sent after this one — is cancelled and retried (an attempt, backed off like a 503), in ms. The
	 * session is kept, unless it holds more of them than it may reset (500 at once, then 20 a second, under
	 * the "rapid reset" limits of nghttp2-based servers): then it takes no new requests and is closed, and
	 * replaced, once nothing on it awaits an answer. A session that answers nothing is PINGed once its
	 * oldest request has waited a second (or half this long, if shorter), and destroyed as dead if that
	 * PING is unanswered in `pingTimeoutMs` (or if the request is still not known to be read
	 * `pingTimeoutMs` after its deadline: a closing session cannot be PINGed).
	 * @default 10_000
	 */
	readonly requestTimeoutMs?: number;
	/** HTTP/2: PING a session idle this long, in ms. @default 60_000 */
	readonly pingIntervalMs?: number;
	/** HTTP/2: a session whose PING is unanswered this long is destroyed and replaced, in ms. @default 10_000 */
	readonly pingTimeoutMs?: number;
	/** Which Apple environment; picks the default addresses and the certificate check. @default 'production' */
	readonly environment?: Environment;
	/** Gateway address; defaults to the environment's. */
	readonly gateway?: Partial<Address>;
	/** Feedback service address; defaults to the environment's. */
	readonly feedback?: Partial<Address>;
	/**
	 * HTTP/2: the channel management host (Live Activity broadcast channels: `createChannel()` and the
	 * rest); defaults to the environment's (`api-manage-broadcast[.sandbox].push.apple.com`, port 2196 in
	 * production, 2195 in the sandbox). Broadcasts themselves go to `gateway`.
	 */
	readonly channelGateway?: Partial<Address>;
	/**
	 * Reach the gateway and the feedback service through an HTTP proxy (CONNECT tunnel; TLS and the
	 * certificate check stay end to end with the gateway). `'env'`: the proxy in HTTPS_PROXY (else
	 * ALL_PROXY; lower-case names first), an `http://[user:password@]host[:port]` URL, unless NO_PROXY
	 * names the gateway (or the feedback service: each is looked up on its own); read at construction.
	 * @default no proxy
	 */
	readonly proxy?: ProxyOptions | 'env';
	/**
	 * Check at construction that the certificate carries Apple's extension for `environment`. Turn off only
	 * for a compatible gateway that issues its own certificates.
	 * @default true
	 */
	readonly checkCertificateEnvironment?: boolean;
	/**
	 * Binary: how long the gateway has to answer, in ms. A connection waiting on the gateway — its probe
	 * written, or its writes not draining — that hears nothing for this long is presumed dead: it is closed
	 * and what it held is re-sent (counted in doubt). Nothing is ever settled by time alone; this only
	 * bounds how long an unanswered connection may hold notifications.
	 * @default 5000
	 */
	readonly graceMs?: number;
	/**
	 * Hard cap on written-but-unconfirmed notifications; at the cap writing pauses (nothing is dropped) and
	 * `retentionFull` is emitted.
	 * @default 1_000_000
	 */
	readonly maxRetained?: number;
	/**
	 * Write a known-bad probe after this many notifications on one connection, so that its answer confirms
	 * them all. This bounds how many may be sent twice if the connection dies silently, at the cost of one
	 * reconnect per `confirmEvery` notifications (the next connection is opened at once). 0: probe only when
	 * idle — except after a connection is lost unanswered, when counted windows (from 1) apply until the
	 * gateway answers again.
	 * @default 10_000
	 */
	readonly confirmEvery?: number;
	/**
	 * On a healthy stream (no silent close has shrunk the window), a connection writes for at least this
	 * long before a full window makes it probe, so probe reconnects stay under 1000 / minConfirmIntervalMs
	 * a second however fast notifications flow (APNs treats rapid connect/disconnect as abuse). At high
	 * rates the window stretches to what this interval carries; that is then the most the first silent
	 * close can duplicate (after it, the window is counted only). With `backend: 'threaded'` each of T
	 * threads waits T times this, so the manager's reconnects stay under the same bound. 0 turns the limit off.
	 * @default 50
	 */
	readonly minConfirmIntervalMs?: number;
	/**
	 * Write a probe when a connection has written nothing for this long and holds unconfirmed
	 * notifications. `false` turns it off. `flushMessages()` probes at once regardless.
	 * @default 200
	 */
	readonly confirmIdleMs?: number | false;
	/**
	 * Attempts a notification gets before it is reported failed. An attempt counts when it can be pinned on
	 * that notification: the gateway answered "try again" (binary status 1 or 255; HTTP/2 429, 500, 503,
	 * ExpiredProviderToken, IdleTimeout), or it went unanswered while alone — its HTTP/2 stream was reset
	 * or timed out on a live session, or it was the only notification on a connection or session that ended (reported then
	 * with status 0 and reason `StreamReset`, `RequestTimeout` or `ConnectionLost`). Re-sends of
	 * notifications lost together (a backtrack, a lost connection, GOAWAY) don't count. With the default
	 * HTTP/2 `retry` backoff (1, 2, 4, 8 s, less up to half for jitter), 5 attempts span 7.5–15 s.
	 * @default 5
	 */
	readonly maxAttempts?: number;
	/** First notification ident (1 … 2^32−1); idents wrap to 1. @default 1 */
	readonly initialIdent?: number;
	/** Reconnection backoff. */
	readonly reconnect?: ReconnectOptions;
	/**
	 * The connection-rate ceiling: connections we choose to open — binary probes (each hands over to a new
	 * connection) and HTTP/2 sessions — average at most this many a second, in bursts of up to three times
	 * as many. Over it, a healthy binary stream writes on past its window; a shrunk one waits. APNs treats
	 * rapid connect/disconnect as abuse. (A binary reconnect after the gateway rejected a notification and
	 * closed is the protocol's own and is not throttled; one after an unanswered end waits out the
	 * `reconnect` backoff.) The ceiling is the manager's: with `backend: 'threaded'` its threads share it.
	 * 0 turns the ceiling off.
	 * @default 20
	 */
	readonly maxConnectsPerSecond?: number;
	/** Give up a TLS connect attempt after this long, in ms. @default 10_000 */
	readonly connectTimeoutMs?: number;
	/** End a feedback read when no byte has come for this long, in ms. @default 5000 */
	readonly feedbackIdleTimeoutMs?: number;
	/** A feedback read that takes longer than this in all is cut off and rejected, in ms. @default 60_000 */
	readonly feedbackTimeoutMs?: number;
	/**
	 * HTTP/2: 410 answers kept for the next `getFeedback()`. Past this the oldest are dropped (each was
	 * still reported as a `deliveryError` and a `feedback` event) and counted in `stats.feedbackDropped`.
	 * @default 100_000
	 */
	readonly maxFeedbackRecords?: number;
	/**
	 * Called once for each notification APNs rejects (as is the `deliveryError` event). With neither this
	 * nor a `deliveryError` listener, the first rejection raises a process warning (once per manager).
	 */
	readonly errorHandler?: (error: DeliveryError) => void;
	/**
	 * Where to log: any pino-compatible logger (`debug`, `info`, `warn`, `error`, each taking an object
	 * first and a message second), e.g. `pino()` or `pino().child({ app })`. Connection lifecycle, backoff,
	 * GOAWAY and failures are logged with stable fields (see docs/http2.md); tokens are shortened, secrets
	 * never logged. Absent: nothing is logged.
	 */
	readonly logger?: Logger;
	/**
	 * Send at most `limit` notifications in any `intervalMs` window, per manager (re-sends included), to stay
	 * under a throttle such as APNs' per-device or per-topic limits. Absent: as fast as the gateway takes
	 * them.
	 */
	readonly rateLimit?: RateLimit;
}

/** A pino-compatible logger: each method takes an object of fields first, then a message. */
export interface Logger {
	debug(fields: object, message?: string): void;
	info(fields: object, message?: string): void;
	warn(fields: object, message?: string): void;
	error(fields: object, message?: string): void;
}

/** See {@link ApnsManagerOptions.rateLimit}. */
export interface RateLimit {
	/** Notifications per interval. */
	readonly limit: number;
	/** The interval, in ms. @default 1000 */
	readonly intervalMs?: number;
}

/**
 * Every option and the protocol it belongs to (`both`, or the only one it means something on). An
 * option of the other protocol is refused rather than ignored: it would silently do nothing.
 */
const OPTION_PROTOCOL: Readonly<Record<keyof ApnsManagerOptions, 'both' | 'binary' | 'http2'>> = {
	protocol: 'both',
	backend: 'both',
	threads: 'both',
	minThreads: 'both',
	environment: 'both',
	gateway: 'both',
	checkCertificateEnvironment: 'both',
	cert: 'both',
	key: 'both',
	pfx: 'both',
	passphrase: 'both',
	ca: 'both',
	maxRetained: 'both',
	maxAttempts: 'both',
	reconnect: 'both',
	maxConnectsPerSecond: 'both',
	connectTimeoutMs: 'both',
	errorHandler: 'both',
	logger: 'both',
	rateLimit: 'both',
	proxy: 'both',
	token: 'http2',
	topic: 'http2',
	connections: 'http2',
	maxStreamsPerSession: 'http2',
	retry: 'http2',
	requestTimeoutMs: 'http2',
	pingIntervalMs: 'http2',
	pingTimeoutMs: 'http2',
	maxFeedbackRecords: 'http2',
	channelGateway: 'http2',
	feedback: 'binary',
	graceMs: 'binary',
	confirmEvery: 'binary',
	minConfirmIntervalMs: 'binary',
	confirmIdleMs: 'binary',
	feedbackIdleTimeoutMs: 'binary',
	feedbackTimeoutMs: 'binary',
	initialIdent: 'binary',
};

/**
 * Options of the libraries people come from (node-apn, @parse/node-apn, apns2, Pushy) that are not ours:
 * who has it, and what to write here instead. Checked before the nearest-name guess, which would mislead.
 */
const PEER_OPTIONS: Readonly<Record<string, readonly [string, string]>> = {
	production: ['node-apn', "environment: 'production' (or 'sandbox')"],
	sandbox: ['apns2', "environment: 'sandbox'"],
	connectionRetryLimit: ['node-apn', 'maxAttempts (per notification)'],
	address: ['node-apn', 'gateway: { host, port }'],
	port: ['node-apn', 'gateway: { host, port }'],
	heartBeat: ['node-apn', 'pingIntervalMs'],
	requestTimeout: ['node-apn', 'requestTimeoutMs'],
	rejectUnauthorized: ['node-apn', 'ca: the CA to trust (certificate checks cannot be turned off)'],
	clientCount: ['@parse/node-apn', 'connections'],
	keyId: ['apns2', 'token: { key, keyId, teamId }'],
	teamId: ['apns2', 'token: { key, keyId, teamId }'],
	signingKey: ['apns2', 'token: { key, keyId, teamId }'],
};

/** Refuse option keys that do not exist (naming the closest one) or belong to the other protocol. */
function checkKeys(options: object, protocol: 'binary' | 'http2'): void {
	const known = Object.keys(OPTION_PROTOCOL);
	for (const key of Object.keys(options)) {
		const scope = (OPTION_PROTOCOL as Record<string, string | undefined>)[key];
		if (scope === undefined) {
			const peer = PEER_OPTIONS[key];
			const near = closest(key, known);
			const hint = peer !== undefined ? `${peer[0]}'s "${key}" is ${peer[1]} in apns-worker` : near === undefined ? 'not an option of ApnsManager (see ApnsManagerOptions)' : `not an option of ApnsManager — did you mean ${near}?`;
			throw InvalidArgumentError.unknownOption(`options.${key}`, hint);
		}
		const value = (options as Record<string, unknown>)[key];
		if (scope !== 'both' && scope !== protocol && value !== undefined) {
			throw new InvalidArgumentError(`options.${key}`, `protocol '${scope}' (it does nothing on '${protocol}')`, value);
		}
	}
}

/** The known name nearest to `name` (Levenshtein distance ≤ 1/3 of its length, at least 2), if any. */
export function closest(name: string, known: readonly string[]): string | undefined {
	let best: string | undefined;
	let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
	for (const candidate of known) {
		const d = distance(name.toLowerCase(), candidate.toLowerCase());
		if (d < bestDistance) {
			best = candidate;
			bestDistance = d;
		}
	}
	return best;
}

function distance(a: string, b: string): number {
	let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
	for (let i = 1; i <= a.length; i++) {
		const row = [i];
		for (let j = 1; j <= b.length; j++) {
			row[j] = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
		}
		previous = row;
	}
	return previous[b.length]!;
}

/** The default addresses of each environment (binary gateway and feedback, and the HTTP/2 API). */
export const ENVIRONMENTS: Readonly<Record<Environment, { gateway: Address; feedback: Address; http2: Address; channels: Address }>> = {
	production: {
		gateway: { host: 'gateway.push.apple.com', port: 2195 },
		feedback: { host: 'feedback.push.apple.com', port: 2196 },
		http2: { host: 'api.push.apple.com', port: 443 },
		// docs/protocol/live-activities.md §1: channel management has its own host and port per environment.
		channels: { host: 'api-manage-broadcast.push.apple.com', port: 2196 },
	},
	sandbox: {
		gateway: { host: 'gateway.sandbox.push.apple.com', port: 2195 },
		feedback: { host: 'feedback.sandbox.push.apple.com', port: 2196 },
		http2: { host: 'api.sandbox.push.apple.com', port: 443 },
		channels: { host: 'api-manage-broadcast.sandbox.push.apple.com', port: 2195 },
	},
};

/** Defaults of every optional setting. */
export const DEFAULT_OPTIONS = {
	protocol: 'http2',
	backend: 'evented',
	threads: 1,
	minThreads: 1,
	environment: 'production',
	checkCertificateEnvironment: true,
	// maxRetained, maxAttempts, initialIdent: the queue's own defaults, kept in one place.
	...DEFAULT_QUEUE_OPTIONS,
	graceMs: 5000,
	confirmEvery: 10_000,
	minConfirmIntervalMs: 50,
	confirmIdleMs: 200,
	reconnect: { initialDelayMs: 250, maxDelayMs: 30_000, jitter: 0.5 },
	maxConnectsPerSecond: 20,
	connections: 1,
	maxStreamsPerSession: 1000,
	retry: { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.5 },
	requestTimeoutMs: 10_000,
	pingIntervalMs: 60_000,
	pingTimeoutMs: 10_000,
	connectTimeoutMs: 10_000,
	feedbackIdleTimeoutMs: 5000,
	feedbackTimeoutMs: DEFAULT_FEEDBACK_TIMEOUT_MS,
	maxFeedbackRecords: 100_000,
	rateLimitIntervalMs: 1000,
} as const;

/** Options with every default applied. */
export interface ResolvedOptions {
	readonly protocol: 'binary' | 'http2';
	readonly backend: 'evented' | 'threaded' | BackendFactory;
	/** Worker threads of the `'threaded'` backend. */
	readonly threads: number;
	/** Of those, how many always take work. */
	readonly minThreads: number;
	readonly environment: Environment;
	readonly gateway: Address;
	readonly feedback: Address;
	/** HTTP/2: the channel management host. */
	readonly channelGateway: Address;
	/** The proxy of each connection, if any. */
	readonly proxy: ResolvedProxies;
	readonly graceMs: number;
	readonly maxRetained: number;
	readonly confirmEvery: number;
	readonly minConfirmIntervalMs: number;
	readonly confirmIdleMs: number | false;
	readonly maxAttempts: number;
	readonly initialIdent: number;
	readonly reconnect: Required<ReconnectOptions>;
	readonly maxConnectsPerSecond: number;
	readonly connectTimeoutMs: number;
	readonly feedbackIdleTimeoutMs: number;
	readonly feedbackTimeoutMs: number;
	readonly maxFeedbackRecords: number;
	readonly checkCertificateEnvironment: boolean;
	readonly connections: number;
	readonly maxStreamsPerSession: number;
	readonly retry: Required<ReconnectOptions>;
	readonly requestTimeoutMs: number;
	readonly pingIntervalMs: number;
	readonly pingTimeoutMs: number;
	readonly rateLimit: Required<RateLimit> | undefined;
}

export { MAX_TIMER_MS };

function wholeNumber(name: string, value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number {
	if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
		throw new InvalidArgumentError(`options.${name}`, `a whole number from ${min} to ${max}`, value);
	}
	return value;
}

/** A duration option: whole milliseconds that a timer can hold. */
function millis(name: string, value: unknown, min: number): number {
	return wholeNumber(name, value, min, MAX_TIMER_MS);
}

function address(name: string, given: Partial<Address> | undefined, fallback: Address): Address {
	if (given === undefined) return fallback;
	if (given === null || typeof given !== 'object') throw new InvalidArgumentError(`options.${name}`, 'an object { host, port }', given);
	const host = given.host ?? fallback.host;
	if (typeof host !== 'string' || host.length === 0) throw new InvalidArgumentError(`options.${name}.host`, 'a host name or IP address', host);
	return { host, port: wholeNumber(`${name}.port`, given.port ?? fallback.port, 1, 65_535) };
}

function rateLimit(given: RateLimit | undefined): Required<RateLimit> | undefined {
	if (given === undefined) return undefined;
	if (given === null || typeof given !== 'object') throw new InvalidArgumentError('options.rateLimit', 'an object { limit, intervalMs }', given);
	for (const key of Object.keys(given)) {
		if (key !== 'limit' && key !== 'intervalMs') throw InvalidArgumentError.unknownOption(`options.rateLimit.${key}`, 'rateLimit takes limit and intervalMs');
	}
	return {
		limit: wholeNumber('rateLimit.limit', given.limit, 1, 1_000_000_000),
		intervalMs: millis('rateLimit.intervalMs', given.intervalMs ?? DEFAULT_OPTIONS.rateLimitIntervalMs, 1),
	};
}

function backoffPolicy(name: string, defaults: Required<ReconnectOptions>, given: ReconnectOptions | undefined): Required<ReconnectOptions> {
	const policy = { ...defaults, ...given };
	millis(`${name}.initialDelayMs`, policy.initialDelayMs, 1);
	wholeNumber(`${name}.maxDelayMs`, policy.maxDelayMs, policy.initialDelayMs, MAX_TIMER_MS);
	if (typeof policy.jitter !== 'number' || !(policy.jitter >= 0 && policy.jitter <= 1)) {
		throw new InvalidArgumentError(`options.${name}.jitter`, 'a number from 0 to 1', policy.jitter);
	}
	return policy;
}

/** Apply defaults and check every option, naming the first bad one. */
export function resolveOptions(options: ApnsManagerOptions): ResolvedOptions {
	if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', options);
	const protocol: unknown = options.protocol ?? DEFAULT_OPTIONS.protocol;
	if (protocol !== 'binary' && protocol !== 'http2') throw new InvalidArgumentError('options.protocol', "'binary' or 'http2'", protocol);
	checkKeys(options, protocol);
	const environment: unknown = options.environment ?? DEFAULT_OPTIONS.environment;
	if (environment !== 'production' && environment !== 'sandbox') {
		throw new InvalidArgumentError('options.environment', "'production' or 'sandbox'", environment);
	}
	const confirmIdleMs: unknown = options.confirmIdleMs ?? DEFAULT_OPTIONS.confirmIdleMs;
	if (confirmIdleMs !== false) millis('confirmIdleMs', confirmIdleMs, 0);
	const reconnect = backoffPolicy('reconnect', DEFAULT_OPTIONS.reconnect, options.reconnect);
	const retry = backoffPolicy('retry', DEFAULT_OPTIONS.retry, options.retry);
	if (options.errorHandler !== undefined && typeof options.errorHandler !== 'function') {
		throw new InvalidArgumentError('options.errorHandler', 'a function', options.errorHandler);
	}
	if (options.logger !== undefined) {
		const logger: unknown = options.logger;
		if (logger === null || typeof logger !== 'object' && typeof logger !== 'function') throw new InvalidArgumentError('options.logger', 'a pino-compatible logger', logger);
		for (const level of ['debug', 'info', 'warn', 'error'] as const) {
			if (typeof (logger as Record<string, unknown>)[level] !== 'function') throw new InvalidArgumentError(`options.logger.${level}`, 'a function (a pino-compatible logger)', (logger as Record<string, unknown>)[level]);
		}
	}
	const backend: unknown = options.backend ?? DEFAULT_OPTIONS.backend;
	if (backend === 'http2') throw new InvalidArgumentError('options.backend', "'evented', 'threaded' or a backend factory (HTTP/2 is chosen with protocol: 'http2', the default)", backend);
	if (backend !== 'evented' && backend !== 'threaded' && typeof backend !== 'function') throw new InvalidArgumentError('options.backend', "'evented', 'threaded' or a backend factory", backend);
	// Thread counts the backend would ignore are refused, like an option of the other protocol.
	for (const name of ['threads', 'minThreads'] as const) {
		if (options[name] !== undefined && backend !== 'threaded') throw new InvalidArgumentError(`options.${name}`, "backend: 'threaded' (it does nothing on another backend)", options[name]);
	}
	const threads = wholeNumber('threads', options.threads ?? DEFAULT_OPTIONS.threads, 1, 64);
	const defaults = ENVIRONMENTS[environment];
	const gateway = address('gateway', options.gateway, protocol === 'http2' ? defaults.http2 : defaults.gateway);
	const feedback = address('feedback', options.feedback, defaults.feedback);
	const channelGateway = address('channelGateway', options.channelGateway, defaults.channels);
	return {
		environment,
		protocol,
		backend: backend as ResolvedOptions['backend'],
		threads,
		minThreads: wholeNumber('minThreads', options.minThreads ?? DEFAULT_OPTIONS.minThreads, 1, threads),
		gateway,
		feedback,
		channelGateway,
		proxy: resolveProxies(options.proxy, { gateway, feedback, channels: channelGateway }),
		graceMs: millis('graceMs', options.graceMs ?? DEFAULT_OPTIONS.graceMs, 1),
		maxRetained: wholeNumber('maxRetained', options.maxRetained ?? DEFAULT_OPTIONS.maxRetained, 1),
		confirmEvery: wholeNumber('confirmEvery', options.confirmEvery ?? DEFAULT_OPTIONS.confirmEvery, 0),
		minConfirmIntervalMs: millis('minConfirmIntervalMs', options.minConfirmIntervalMs ?? DEFAULT_OPTIONS.minConfirmIntervalMs, 0),
		confirmIdleMs: confirmIdleMs as number | false,
		maxAttempts: wholeNumber('maxAttempts', options.maxAttempts ?? DEFAULT_OPTIONS.maxAttempts, 1, 255),
		initialIdent: wholeNumber('initialIdent', options.initialIdent ?? DEFAULT_OPTIONS.initialIdent, 1, 0xffff_ffff),
		reconnect,
		maxConnectsPerSecond: wholeNumber('maxConnectsPerSecond', options.maxConnectsPerSecond ?? DEFAULT_OPTIONS.maxConnectsPerSecond, 0, 10_000),
		connectTimeoutMs: millis('connectTimeoutMs', options.connectTimeoutMs ?? DEFAULT_OPTIONS.connectTimeoutMs, 1),
		feedbackIdleTimeoutMs: millis('feedbackIdleTimeoutMs', options.feedbackIdleTimeoutMs ?? DEFAULT_OPTIONS.feedbackIdleTimeoutMs, 1),
		feedbackTimeoutMs: millis('feedbackTimeoutMs', options.feedbackTimeoutMs ?? DEFAULT_OPTIONS.feedbackTimeoutMs, 1),
		maxFeedbackRecords: wholeNumber('maxFeedbackRecords', options.maxFeedbackRecords ?? DEFAULT_OPTIONS.maxFeedbackRecords, 0),
		checkCertificateEnvironment: options.checkCertificateEnvironment ?? DEFAULT_OPTIONS.checkCertificateEnvironment,
		connections: wholeNumber('connections', options.connections ?? DEFAULT_OPTIONS.connections, 1, 64),
		maxStreamsPerSession: wholeNumber('maxStreamsPerSession', options.maxStreamsPerSession ?? DEFAULT_OPTIONS.maxStreamsPerSession, 1),
		retry,
		requestTimeoutMs: millis('requestTimeoutMs', options.requestTimeoutMs ?? DEFAULT_OPTIONS.requestTimeoutMs, 1),
		pingIntervalMs: millis('pingIntervalMs', options.pingIntervalMs ?? DEFAULT_OPTIONS.pingIntervalMs, 1),
		pingTimeoutMs: millis('pingTimeoutMs', options.pingTimeoutMs ?? DEFAULT_OPTIONS.pingTimeoutMs, 1),
		rateLimit: rateLimit(options.rateLimit),
	};
}
