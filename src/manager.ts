/**
 * `ApnsManager`: the public face. `sendAps()`/`send()` append to the {@link NotificationQueue} and return at
 * once; a backend writes; rejections reach the `errorHandler` and the `deliveryError` event; network faults
 * are retried and only ever surface as events.
 */
import { EventEmitter } from 'eventemitter3';
import type { Backend, BackendFactory, DisconnectReason, DriverSetup } from './backends/backend.js';
import { createEventedBackend } from './backends/evented.js';
import { createThreadedBackend } from './backends/threaded.js';
import { ProviderToken } from './provider-token.js';
import { ChannelClient, checkChannelId, DEFAULT_STORAGE_POLICY, type ChannelInfo, type CreateChannelOptions } from './channels.js';
import { Broadcaster, type BroadcastOptions, type BroadcastReceipt, type BroadcastStats } from './broadcasts.js';
import { loadCa, loadCredentials, type CertificateInfo, type LoadedCredentials } from './credentials.js';
import { ClosedError, DeliveryError, InvalidArgumentError, TimeoutError, type ConnectionError } from './errors.js';
import { Feedback, readFeedback } from './feedback.js';
import * as binary from './protocol/binary.js';
import * as http2 from './protocol/http2.js';
import { Message, type Aps, type SendApsOptions } from './message.js';
import { MAX_TIMER_MS, resolveOptions, type ApnsManagerOptions, type Logger, type ResolvedOptions } from './options.js';
import { NotificationQueue, type FailureDetail, type QueueStats, type ResendReason } from './queue.js';
import { RateGate } from './rate-limit.js';
import { ApnsIds, Receipt } from './receipt.js';

/** A token as logs show it: enough to find it, not enough to use it. */
export function shortToken(token: string): string {
	return `${token.slice(0, 8)}…`;
}

/** Every event of {@link ApnsManager} with its arguments. */
export interface ApnsManagerEvents {
	/** APNs rejected a notification (also passed to `errorHandler`). Once per notification. */
	deliveryError: [error: DeliveryError];
	/** A feedback record was read by `getFeedback`. */
	feedback: [feedback: Feedback];
	/** A broadcast failed: APNs refused it, or it went unanswered through `maxAttempts` attempts (status 0). */
	broadcastError: [info: { channel: string; status: number; reason: string; apnsId: string }];
	/** `count` notifications were settled as delivered, on the gateway's word. */
	delivered: [info: { count: number }];
	/** `count` notifications were put back to be sent again, ahead of new work. */
	resent: [info: { count: number; reason: ResendReason }];
	/** An error frame named an ident its connection never carried; what that connection held was re-sent. */
	identNotFound: [info: { ident: number; status: number; resent: number }];
	/** The retention cap was reached; writing pauses until room is made. */
	retentionFull: [info: { retained: number }];
	/** A gateway connection is up. */
	connected: [info: { connection: number }];
	/** A gateway connection ended. */
	disconnected: [info: { connection: number; reason: DisconnectReason; error?: Error }];
	/**
	 * A connect attempt failed: the connection could not be made, or it ended before the gateway settled
	 * any notification on it (refused certificate, GOAWAY at connect, garbage, no answer in time, …).
	 * Another follows after `retryInMs`.
	 */
	connectError: [error: ConnectionError, info: { attempt: number; retryInMs: number }];
	/**
	 * `backend: 'threaded'`: a worker thread is up — started and its protocol driver loaded, `startMs`
	 * after it was spawned (at construction, or to replace one that died). Work handed to it before then
	 * waits in its inbox; this tells how long a thread's start takes.
	 */
	threadReady: [info: { thread: number; startMs: number }];
	/**
	 * `backend: 'threaded'`: a worker thread died (an uncaught error, `process.exit()` in it). It is
	 * replaced after `retryInMs` (backed off while threads die before settling anything), and the `resent`
	 * notifications it held are sent again, in doubt.
	 */
	threadExit: [info: { thread: number; error: Error; resent: number; retryInMs: number }];
	/**
	 * `backend: 'threaded'`: the number of threads taking work changed (see the `minThreads` option).
	 * `busy[k]` is the share of a core (0–1) thread k + 1 used over the last reading; undefined where
	 * there was none (a thread not up yet, or replaced within the reading).
	 */
	threadsInUse: [info: { inUse: number; busy: Array<number | undefined> }];
	/** Nothing is queued or awaiting confirmation. */
	idle: [];
	/** A listener, the `errorHandler` or a feedback callback threw. */
	error: [error: unknown];
	/** `close()` or `destroy()` finished. */
	closed: [];
}

/** Counters of the manager (see {@link QueueStats}) plus what the backend reported. */
export interface ManagerStats extends QueueStats {
	/** Binary: probes answered. */
	probesAnswered: number;
	/** Binary: error frames that named an ident their connection never carried. */
	identsNotFound: number;
	/** Gateway connect attempts, successful or not. */
	connectAttempts: number;
	/** Notifications neither delivered nor reported failed yet. */
	pending: number;
	/** HTTP/2 410 records dropped from the `getFeedback()` buffer because it held `maxFeedbackRecords`. */
	feedbackDropped: number;
	/** HTTP/2 Live Activity broadcasts (`broadcast()`). */
	broadcasts: BroadcastStats;
}

/** Options of `close()` and `flushMessages()`. */
export interface DeadlineOptions {
	/** Give up after this many milliseconds (see each method). */
	readonly timeoutMs?: number;
}

const BACKENDS: Readonly<Record<'evented' | 'threaded', BackendFactory>> = { evented: createEventedBackend, threaded: createThreadedBackend };

/** Sends Apple push notifications from a queue; see docs/delivery.md for the delivery guarantees. */
export class ApnsManager extends EventEmitter<ApnsManagerEvents> {
	readonly #options: ResolvedOptions;
	/** Client-certificate material; undefined with HTTP/2 token auth and no certificate. */
	readonly #credentials: LoadedCredentials | undefined;
	readonly #ca: string[] | undefined;
	readonly #token: ProviderToken | undefined;
	readonly #topic: string | undefined;
	/** HTTP/2: 410 answers kept for the next `getFeedback`, oldest first, at most `maxFeedbackRecords`. */
	#feedbackRecords: Feedback[] = [];
	#feedbackDropped = 0;
	#probesAnswered = 0;
	#identsNotFound = 0;
	readonly #queue: NotificationQueue;
	readonly #backend: Backend;
	readonly #errorHandler: ((error: DeliveryError) => void) | undefined;
	readonly #logger: Logger | undefined;
	/** HTTP/2: generates each request's apns-id. */
	readonly #apnsIds: ApnsIds | undefined;
	readonly #gate: RateGate | undefined;
	/** The protocol's words for a status that came without a reason. */
	readonly #describe: (status: number) => string;
	/** A rejection went unheard (no errorHandler, no listener) and the process was warned: once. */
	#warnedUnheard = false;
	/** `onPendingBelow` waiters. */
	#pendingWaiters: Array<{ limit: number; resolve: () => void }> = [];
	/** Pending `flushMessages` calls: settled on idle, or rejected by `destroy`. */
	readonly #flushes = new Set<{ resolve: () => void; reject: (error: Error) => void }>();
	#state: 'open' | 'closing' | 'closed' = 'open';
	#closing: Promise<void> | undefined;
	/** HTTP/2: the channel management client, made on first use. */
	#channelClient: ChannelClient | undefined;
	/** HTTP/2: the broadcasts, made on first use. */
	#broadcaster: Broadcaster | undefined;

	/**
	 * @throws {@link InvalidArgumentError} for a bad option; {@link CredentialsError} when the certificate
	 * cannot be read, does not match its key, is expired, or does not cover the environment.
	 */
	constructor(options: ApnsManagerOptions) {
		super();
		this.#options = resolveOptions(options);
		const o = this.#options;
		const hasCertificate = options.cert !== undefined || options.key !== undefined || options.pfx !== undefined;
		if (options.token !== undefined && o.protocol !== 'http2') throw new InvalidArgumentError('options.token', "protocol 'http2' (token auth is an HTTP/2 feature)", 'a token');
		this.#token = options.token === undefined ? undefined : options.token instanceof ProviderToken ? options.token : new ProviderToken(options.token);
		this.#credentials =
			this.#token !== undefined && !hasCertificate
				? undefined
				: loadCredentials(options, o.environment, { checkEnvironment: o.checkCertificateEnvironment });
		this.#ca = this.#credentials?.ca ?? (options.ca === undefined ? undefined : loadCa(options.ca));
		this.#topic = options.topic ?? this.#credentials?.info.topic;
		if (options.topic !== undefined && (typeof options.topic !== 'string' || options.topic.length === 0)) throw new InvalidArgumentError('options.topic', 'a bundle ID', options.topic);
		if (o.protocol === 'http2' && this.#token !== undefined && this.#topic === undefined) {
			throw new InvalidArgumentError('options.topic', 'the bundle ID (token auth has no certificate to take it from)', undefined);
		}
		this.#errorHandler = options.errorHandler;
		// A logger that throws must not break the send loop: its errors go where a listener's go.
		const logger = options.logger;
		this.#logger =
			logger === undefined
				? undefined
				: {
						debug: (fields, message) => this.#guard(() => logger.debug(fields, message)),
						info: (fields, message) => this.#guard(() => logger.info(fields, message)),
						warn: (fields, message) => this.#guard(() => logger.warn(fields, message)),
						error: (fields, message) => this.#guard(() => logger.error(fields, message)),
					};
		this.#apnsIds = o.protocol === 'http2' ? new ApnsIds() : undefined;
		this.#describe = o.protocol === 'http2' ? http2.describeHttpStatus : binary.describeStatus;
		this.#queue = new NotificationQueue({ maxRetained: o.maxRetained, maxAttempts: o.maxAttempts, initialIdent: o.initialIdent, describeStatus: this.#describe });
		if (o.rateLimit !== undefined) {
			this.#gate = new RateGate(o.rateLimit, () => this.#backend.wake());
			this.#queue.setRateGate(this.#gate);
		}
		const factory = typeof o.backend === 'function' ? o.backend : BACKENDS[o.backend];
		this.#queue.setListener({
			failed: (message, index, ident, status, detail) => {
				this.#reportFailure(message, index, ident, status, detail);
				this.#pendingChanged();
			},
			resent: (count, reason) => {
				this.#logger?.debug({ event: 'resent', count, reason }, `${count} notifications put back to be sent again (${reason})`);
				this.#emit('resent', { count, reason });
			},
			retentionFull: (retained) => {
				this.#logger?.warn({ event: 'retentionFull', count: retained }, `${retained} notifications await the gateway's word: writing paused (maxRetained)`);
				this.#emit('retentionFull', { retained });
			},
			delivered: (count) => {
				this.#emit('delivered', { count });
				this.#pendingChanged();
			},
			wake: () => this.#backend.wake(),
			idle: () => this.#onIdle(),
		});
		const setup: DriverSetup = {
			protocol: o.protocol,
			tls: { host: o.gateway.host, port: o.gateway.port, cert: this.#credentials?.cert, key: this.#credentials?.key, ca: this.#ca, proxy: o.proxy.gateway },
			options: {
				graceMs: o.graceMs, confirmEvery: o.confirmEvery, minConfirmIntervalMs: o.minConfirmIntervalMs, confirmIdleMs: o.confirmIdleMs,
				reconnect: o.reconnect, maxConnectsPerSecond: o.maxConnectsPerSecond, connectTimeoutMs: o.connectTimeoutMs, connections: o.connections,
				maxStreamsPerSession: o.maxStreamsPerSession, retry: o.retry, requestTimeoutMs: o.requestTimeoutMs, pingIntervalMs: o.pingIntervalMs, pingTimeoutMs: o.pingTimeoutMs,
			},
			topic: this.#topic,
			tokenAuth: this.#token !== undefined,
		};
		this.#backend = factory({
			queue: this.#queue,
			setup,
			token: this.#token,
			apnsIds: this.#apnsIds,
			threads: o.threads,
			minThreads: o.minThreads,
			events: {
				identNotFound: (info) => {
					this.#identsNotFound++;
					this.#logger?.warn({ event: 'identNotFound', ident: info.ident, status: info.status, count: info.resent }, `the gateway named ident ${info.ident}, never sent on that connection; ${info.resent} re-sent`);
					this.#emit('identNotFound', info);
				},
				probeAnswered: () => {
					this.#probesAnswered++;
				},
				threadReady: (info) => {
					this.#logger?.info({ event: 'threadReady', thread: info.thread, startMs: info.startMs }, `worker thread ${info.thread} ready after ${info.startMs} ms`);
					this.#emit('threadReady', info);
				},
				threadsInUse: (info) => {
					this.#logger?.info({ event: 'threadsInUse', count: info.inUse, busy: info.busy.map((b) => (b === undefined ? null : Math.round(b * 100) / 100)) }, `${info.inUse} of ${o.threads} worker threads take work`);
					this.#emit('threadsInUse', info);
				},
				threadExit: (info) => {
					this.#logger?.warn({ event: 'threadExit', thread: info.thread, count: info.resent, retryInMs: info.retryInMs, err: info.error.message }, `worker thread ${info.thread} died; ${info.resent} notifications it held are re-sent; replaced in ${info.retryInMs} ms`);
					this.#emit('threadExit', info);
				},
				connected: (info) => {
					this.#logger?.info({ event: 'connected', connection: info.connection, gateway: `${o.gateway.host}:${o.gateway.port}` }, 'connected to the gateway');
					this.#emit('connected', info);
				},
				disconnected: (info) => {
					const fields = { event: 'disconnected', connection: info.connection, reason: info.reason, ...(info.error === undefined ? {} : { err: info.error.message }) };
					// The protocol's own endings (an answered probe, an error frame, our close) are routine.
					if (info.reason === 'probeAnswered' || info.reason === 'errorFrame' || info.reason === 'closed' || info.reason === 'destroyed') this.#logger?.debug(fields, 'connection ended');
					else this.#logger?.warn(fields, `connection lost (${info.reason})`);
					this.#emit('disconnected', info);
				},
				connectError: (error, info) => {
					this.#logger?.warn({ event: 'connectError', attempt: info.attempt, retryInMs: info.retryInMs, err: error.message }, `connect attempt ${info.attempt} failed; next in ${info.retryInMs} ms`);
					this.#emit('connectError', error, info);
				},
			},
			wantsConfirmation: () => this.#flushes.size > 0,
		});
	}

	/** What the client certificate says: topic (bundle ID), environments, validity. Undefined with token auth. */
	get certificate(): CertificateInfo | undefined {
		return this.#credentials?.info;
	}

	/** Counters since construction. */
	get stats(): ManagerStats {
		return {
			...this.#queue.stats,
			probesAnswered: this.#probesAnswered,
			identsNotFound: this.#identsNotFound,
			connectAttempts: this.#backend.connectAttempts,
			pending: this.#queue.outstanding,
			feedbackDropped: this.#feedbackDropped + Math.max(0, this.#feedbackRecords.length - this.#options.maxFeedbackRecords),
			broadcasts: { ...(this.#broadcaster?.stats ?? { sent: 0, failed: 0, dropped: 0, resent: 0, pending: 0 }) },
		};
	}

	/** Notifications neither delivered nor reported failed yet. */
	get pending(): number {
		return this.#queue.outstanding;
	}

	/**
	 * Queue a notification built from an `aps` dictionary to one or more tokens. Returns at once.
	 * @param tokens - device token(s), 64 hex characters each.
	 * @param aps - Apple's keys; camelCase `contentAvailable`, `mutableContent`, `threadId` are translated.
	 * @param options - `expiration`, `priority` (5 or 10) and `extra` top-level payload keys.
	 * @returns a {@link Receipt}: ignore it (fire-and-forget), or `await receipt.settled` for what became of
	 * each token.
	 * @throws {@link InvalidArgumentError} naming the bad argument; nothing is queued then.
	 * @throws {@link ClosedError} after `close()` or `destroy()`.
	 */
	sendAps(tokens: string | readonly string[], aps: Aps, options?: SendApsOptions): Receipt {
		this.#assertOpen();
		return this.#enqueue(Message.fromAps(tokens, aps, options), 'aps');
	}

	/**
	 * Queue a prepared {@link Message}. Returns at once. Sending the same Message again makes another send
	 * with its own receipt.
	 * @returns a {@link Receipt} (see {@link ApnsManager.sendAps}).
	 * @throws {@link InvalidArgumentError} when it is not a Message, its payload is too large, or it uses a
	 * feature the protocol lacks.
	 * @throws {@link ClosedError} after `close()` or `destroy()`.
	 */
	send(message: Message): Receipt {
		this.#assertOpen();
		if (!(message instanceof Message)) throw new InvalidArgumentError('message', 'a Message', message);
		return this.#enqueue(message, 'message');
	}

	/**
	 * Create a Live Activity broadcast channel (iOS 18) for the manager's topic, on the environment's
	 * channel management host (`channelGateway`). Share its id with the app, which subscribes to it.
	 * @returns the channel id APNs made (base64).
	 * @throws {@link InvalidArgumentError} (rejects) for bad options or a binary manager.
	 * @throws {@link ChannelError} (rejects) with APNs' status and reason (`400 CannotCreateChannelConfig`
	 * at 10,000 channels), after the `retry` backoff for 429, 5xx and no answer, up to `maxAttempts`.
	 */
	async createChannel(options: CreateChannelOptions = {}): Promise<string> {
		const client = this.#channels('createChannel');
		if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object { storagePolicy? }', options);
		for (const key of Object.keys(options)) if (key !== 'storagePolicy') throw InvalidArgumentError.unknownOption(`options.${key}`, 'createChannel() takes storagePolicy');
		const policy = options.storagePolicy ?? DEFAULT_STORAGE_POLICY;
		if (policy !== 0 && policy !== 1) throw new InvalidArgumentError('options.storagePolicy', '0 (store nothing) or 1 (keep the most recent broadcast)', policy);
		return client.create(policy);
	}

	/**
	 * A channel's settings.
	 * @throws {@link ChannelError} (rejects) `400 ChannelNotRegistered` when the topic has no such channel.
	 */
	async getChannel(channelId: string): Promise<ChannelInfo> {
		const client = this.#channels('getChannel');
		return client.get(checkChannelId('channelId', channelId));
	}

	/** Every channel id of the manager's topic in its environment. */
	async listChannels(): Promise<string[]> {
		return this.#channels('listChannels').list();
	}

	/**
	 * Delete a channel: irreversible, and a deleted id is never made again; broadcasts APNs stored may
	 * still be delivered.
	 * @throws {@link ChannelError} (rejects) `400 ChannelNotRegistered` when the topic has no such channel.
	 */
	async deleteChannel(channelId: string): Promise<void> {
		const client = this.#channels('deleteChannel');
		await client.delete(checkChannelId('channelId', channelId));
	}

	/**
	 * Queue a Live Activity broadcast to every device subscribed to `channelId` (iOS 18): an update or an
	 * end (a broadcast cannot start an activity). Returns at once. It is sent to the gateway with
	 * `apns-expiration` (default 0) and `apns-priority` (default 10), retried with the `retry` backoff on
	 * 429, 5xx and no answer up to `maxAttempts`, reported by its receipt and the `broadcastError` event,
	 * counted in `stats.broadcasts`, and waited for by `flushMessages()` and `close()`.
	 * @param payload - the JSON payload, e.g. `{ aps: liveActivityAps({ event: 'update', … }) }`; at most 5,120 bytes.
	 * @throws {@link InvalidArgumentError} naming the bad argument (or a binary manager); nothing is queued.
	 * @throws {@link ClosedError} after `close()` or `destroy()`.
	 */
	broadcast(channelId: string, payload: Readonly<Record<string, unknown>>, options?: BroadcastOptions): BroadcastReceipt {
		this.#assertOpen();
		const o = this.#options;
		if (o.protocol !== 'http2') throw new InvalidArgumentError('options.protocol', "'http2' for broadcast() (Live Activity broadcasts are an HTTP/2 API; this manager speaks binary)", o.protocol);
		this.#broadcaster ??= new Broadcaster(
			{
				target: { host: o.gateway.host, port: o.gateway.port, cert: this.#credentials?.cert, key: this.#credentials?.key, ca: this.#ca, proxy: o.proxy.gateway },
				token: this.#token,
				retry: o.retry,
				maxAttempts: o.maxAttempts,
				connectTimeoutMs: o.connectTimeoutMs,
				requestTimeoutMs: o.requestTimeoutMs,
			},
			this.#topic!,
			{
				failed: (info) => {
					this.#logger?.warn({ event: 'broadcastError', channel: info.channel, status: info.status, reason: info.reason, apnsId: info.apnsId }, `broadcast to channel ${info.channel} failed: ${info.status} ${info.reason}`);
					this.#emit('broadcastError', info);
				},
			},
		);
		return this.#broadcaster.send(channelId, payload, options);
	}

	/** The channel client (made on first use), or why this manager has none. */
	#channels(method: string): ChannelClient {
		this.#assertOpen();
		const o = this.#options;
		if (o.protocol !== 'http2') throw new InvalidArgumentError('options.protocol', `'http2' for ${method}() (Live Activity channels are an HTTP/2 API; this manager speaks binary)`, o.protocol);
		this.#channelClient ??= new ChannelClient({
			target: { host: o.channelGateway.host, port: o.channelGateway.port, cert: this.#credentials?.cert, key: this.#credentials?.key, ca: this.#ca, proxy: o.proxy.channels },
			token: this.#token,
			topic: this.#topic!,
			retry: o.retry,
			maxAttempts: o.maxAttempts,
			connectTimeoutMs: o.connectTimeoutMs,
			requestTimeoutMs: o.requestTimeoutMs,
		});
		return this.#channelClient;
	}

	#enqueue(message: Message, argument: string): Receipt {
		if (this.#options.protocol === 'http2') http2.checkHttp2Message(message, argument);
		else binary.checkBinaryMessage(message, argument);
		return new Receipt(this.#queue.push(message), this.#apnsIds);
	}

	/**
	 * Resolve once fewer than `limit` notifications are pending (p-queue's `onSizeLessThan`): a producer of
	 * millions awaits this between batches and memory stays flat. Resolves at once when already below;
	 * never rejects (after `destroy()` nothing is pending).
	 * @throws {@link InvalidArgumentError} (synchronously) unless `limit` is a whole number >= 1.
	 */
	onPendingBelow(limit: number): Promise<void> {
		if (typeof limit !== 'number' || !Number.isInteger(limit) || limit < 1) throw new InvalidArgumentError('limit', 'a whole number >= 1', limit);
		if (this.#queue.outstanding < limit) return Promise.resolve();
		return new Promise<void>((resolve) => this.#pendingWaiters.push({ limit, resolve }));
	}

	/** Fewer may be pending now: release the `onPendingBelow` waiters whose limit is passed. */
	#pendingChanged(): void {
		if (this.#pendingWaiters.length === 0) return;
		const pending = this.#queue.outstanding;
		if (!this.#pendingWaiters.some((w) => pending < w.limit)) return;
		this.#pendingWaiters = this.#pendingWaiters.filter((w) => {
			if (pending >= w.limit) return true;
			w.resolve();
			return false;
		});
	}

	/**
	 * Resolve once every notification queued so far is delivered (on the gateway's word) or reported
	 * failed. Connections with unconfirmed notifications are probed at once, so this normally takes one
	 * round trip.
	 * @param options.timeoutMs - reject with a {@link TimeoutError} (saying how many are pending) after this
	 * long; nothing is dropped.
	 * @throws {@link InvalidArgumentError} for bad options; nothing else is touched.
	 */
	flushMessages(options?: DeadlineOptions): Promise<void> {
		const timeoutMs = deadline('flushMessages', options);
		const broadcasts = this.#broadcaster?.stats.pending ? this.#broadcaster.idle() : undefined;
		if (broadcasts === undefined) return this.#flush(timeoutMs);
		return Promise.all([this.#flush(timeoutMs), timeoutMs === undefined ? broadcasts : this.#within(broadcasts, timeoutMs)]).then(() => {});
	}

	/** `settling` (the broadcasts), or a {@link TimeoutError} after `timeoutMs`. */
	#within(settling: Promise<void>, timeoutMs: number): Promise<void> {
		let timer: NodeJS.Timeout | undefined;
		const expired = new Promise<never>((_, reject) => {
			timer = setTimeout(() => {
				const pending = this.#broadcaster?.stats.pending ?? 0;
				reject(new TimeoutError(`flushMessages timed out after ${timeoutMs} ms with ${pending} broadcasts still pending`, pending));
			}, timeoutMs);
		});
		return Promise.race([settling, expired]).finally(() => clearTimeout(timer));
	}

	#flush(timeoutMs: number | undefined): Promise<void> {
		if (this.#queue.outstanding === 0) return Promise.resolve();
		return new Promise<void>((resolve, reject) => {
			let timer: NodeJS.Timeout | undefined;
			const waiter = {
				resolve: () => {
					clearTimeout(timer);
					this.#flushes.delete(waiter);
					resolve();
				},
				reject: (error: Error) => {
					clearTimeout(timer);
					this.#flushes.delete(waiter);
					reject(error);
				},
			};
			this.#flushes.add(waiter);
			if (timeoutMs !== undefined) {
				timer = setTimeout(() => {
					const pending = this.#queue.outstanding;
					waiter.reject(new TimeoutError(`flushMessages timed out after ${timeoutMs} ms with ${pending} notifications still pending`, pending));
				}, timeoutMs);
			}
			this.#backend.wake(); // probe connections now rather than after confirmIdleMs
		});
	}

	/**
	 * Read the feedback service: call `callback` for each token APNs reports gone, emit `feedback`, and
	 * resolve with the count. The service forgets what it sends, so persist what you get. Over HTTP/2 the
	 * 410 answers kept since the last call are handed over instead.
	 * @throws {@link InvalidArgumentError} (synchronously) when `callback` is not a function.
	 * @throws (as a rejection) {@link ConnectionError} when the service cannot be reached, {@link TimeoutError}
	 * past `feedbackTimeoutMs`, {@link ProtocolError} when it sends something that is not feedback,
	 * {@link ClosedError} after `close()` or `destroy()`.
	 */
	getFeedback(callback: (feedback: Feedback) => void): Promise<number> {
		if (typeof callback !== 'function') throw new InvalidArgumentError('callback', 'a function', callback);
		if (this.#state !== 'open') return Promise.reject(this.#closedError());
		const o = this.#options;
		if (o.protocol === 'http2') {
			// HTTP/2 has no feedback service: its 410 answers were kept for this call.
			const records = this.#takeFeedback();
			for (const record of records) this.#guard(() => callback(record));
			return Promise.resolve(records.length);
		}
		const c = this.#credentials!;
		return readFeedback(
			{ host: o.feedback.host, port: o.feedback.port, cert: c.cert, key: c.key, ca: c.ca, proxy: o.proxy.feedback, idleTimeoutMs: o.feedbackIdleTimeoutMs, connectTimeoutMs: o.connectTimeoutMs, timeoutMs: o.feedbackTimeoutMs },
			(feedback) => {
				this.#guard(() => callback(feedback));
				this.#emit('feedback', feedback);
			},
		);
	}

	/**
	 * Graceful shutdown: stop accepting sends, flush, then close connections (a peer that does not let go
	 * within a moment is cut off; everything on it is settled by then). Idempotent: later calls return a
	 * promise of the same close (one with its own `timeoutMs` also bounds it); after `destroy()` it
	 * resolves at once.
	 * @param options.timeoutMs - bound the close; when it runs out the manager is destroyed and the
	 * promise rejects with a {@link TimeoutError} whose `pending` is the number dropped.
	 * @throws {@link InvalidArgumentError} (synchronously) for bad options; nothing else is touched.
	 */
	close(options?: DeadlineOptions): Promise<void> {
		const timeoutMs = deadline('close', options);
		if (this.#closing === undefined) {
			if (this.#state === 'closed') return Promise.resolve(); // destroyed: nothing left to close
			this.#state = 'closing';
			// A destroy() meanwhile rejects the flush: the close is then over, by destroy's hand.
			this.#closing = this.#flush(undefined)
				.then(() => Promise.all([this.#backend.close(), this.#channelClient?.close(), this.#broadcaster?.close()]))
				.then(
					() => this.#shutdown(),
					(error: unknown) => {
						if (!(error instanceof ClosedError)) throw error;
					},
				);
		}
		return timeoutMs === undefined ? this.#closing : this.#bounded(this.#closing, timeoutMs);
	}

	/** `closing`, or a {@link TimeoutError} after `timeoutMs`, when the manager is destroyed. */
	#bounded(closing: Promise<void>, timeoutMs: number): Promise<void> {
		let timer: NodeJS.Timeout | undefined;
		const expired = new Promise<never>((_, reject) => {
			timer = setTimeout(() => {
				const dropped = this.#queue.outstanding;
				this.destroy();
				reject(new TimeoutError(`close timed out after ${timeoutMs} ms; ${dropped} notifications were dropped`, dropped));
			}, timeoutMs);
		});
		return Promise.race([closing, expired]).finally(() => clearTimeout(timer));
	}

	/** Abrupt shutdown: drop queued and unconfirmed notifications and close sockets now. Idempotent. */
	destroy(): void {
		if (this.#state === 'closed') return;
		this.#gate?.close();
		this.#channelClient?.destroy();
		this.#broadcaster?.destroy();
		const dropped = this.#queue.clear(this.#backend.destroy());
		if (dropped > 0) this.#logger?.warn({ event: 'dropped', count: dropped }, `destroyed with ${dropped} notifications unsettled`);
		this.#pendingChanged();
		for (const flush of [...this.#flushes]) flush.reject(new ClosedError(`The manager was destroyed with ${dropped} notifications pending`));
		this.#shutdown();
	}

	async [Symbol.asyncDispose](): Promise<void> {
		await this.close();
	}

	#shutdown(): void {
		if (this.#state === 'closed') return;
		this.#state = 'closed';
		this.#gate?.close();
		this.#logger?.info({ event: 'closed' }, 'manager closed');
		this.#emit('closed');
	}

	#assertOpen(): void {
		if (this.#state !== 'open') throw this.#closedError();
	}

	#closedError(): ClosedError {
		return new ClosedError(`The manager is ${this.#state}: no more notifications are accepted`);
	}

	#onIdle(): void {
		for (const flush of [...this.#flushes]) flush.resolve();
		this.#emit('idle');
	}

	#reportFailure(message: Message, index: number, ident: number, status: number, detail: FailureDetail | undefined): void {
		const token = message.token(index);
		const error = new DeliveryError({
			status,
			description: detail?.description ?? detail?.reason ?? this.#describe(status),
			token,
			message,
			ident,
			reason: detail?.reason,
			timestamp: detail?.timestamp,
			apnsId: this.#apnsIds?.of(message, index),
		});
		this.#logger?.[status === 410 ? 'info' : 'warn']({ event: 'deliveryError', token: shortToken(token), status, reason: error.reason ?? error.description, apnsId: error.apnsId }, `notification rejected: ${error.description}`);
		if (this.#errorHandler !== undefined) this.#guard(() => this.#errorHandler!(error));
		else if (this.listenerCount('deliveryError') === 0 && message.call?.done === undefined && !this.#warnedUnheard) {
			// A rejection nobody hears of is a silent loss: say so once.
			this.#warnedUnheard = true;
			process.emitWarning(`apns-worker: APNs rejected a notification (${error.description}, status ${status}) and nothing is listening: pass an errorHandler or listen to 'deliveryError' (or await receipts). Further rejections are not warned about.`, { type: 'ApnsWorkerWarning', code: 'APNS_UNHANDLED_REJECTION' });
		}
		this.#emit('deliveryError', error);
		if (this.#options.protocol === 'http2' && http2.isFeedback(status)) {
			// The HTTP/2 replacement of the feedback service: the same records, through the same calls.
			const record = new Feedback(token, detail?.timestamp ?? new Date());
			this.#keepFeedback(record);
			this.#emit('feedback', record);
		}
	}

	/**
	 * Keep a 410 record for `getFeedback`. Only the newest `maxFeedbackRecords` count; the array is trimmed
	 * when it reaches twice that, so a full buffer costs O(1) per record rather than a shift per record.
	 */
	#keepFeedback(record: Feedback): void {
		this.#feedbackRecords.push(record);
		if (this.#feedbackRecords.length >= 2 * Math.max(1, this.#options.maxFeedbackRecords)) this.#trimFeedback();
	}

	/** The kept 410 records (the newest `maxFeedbackRecords`), emptying the buffer. */
	#takeFeedback(): Feedback[] {
		this.#trimFeedback();
		const records = this.#feedbackRecords;
		this.#feedbackRecords = [];
		return records;
	}

	#trimFeedback(): void {
		const excess = this.#feedbackRecords.length - this.#options.maxFeedbackRecords;
		if (excess <= 0) return;
		this.#feedbackRecords = this.#feedbackRecords.slice(excess);
		this.#feedbackDropped += excess;
	}

	/** Emit, turning a throwing listener into an `error` event so it cannot break the send loop. */
	#emit<E extends keyof ApnsManagerEvents>(event: E, ...args: ApnsManagerEvents[E]): void {
		if (this.listenerCount(event) === 0) return;
		this.#guard(() => (this.emit as (e: E, ...a: ApnsManagerEvents[E]) => boolean)(event, ...args));
	}

	#guard(fn: () => unknown): void {
		try {
			fn();
		} catch (error) {
			if (this.listenerCount('error') > 0) {
				try {
					this.emit('error', error);
					return;
				} catch {
					// An 'error' listener that throws too: fall through to the warning.
				}
			}
			process.emitWarning(`apns-worker: a listener or handler threw: ${error instanceof Error ? error.message : String(error)}`, 'ApnsWorkerWarning');
		}
	}
}

/** Check the options of `close()`/`flushMessages()`; returns `timeoutMs`. */
function deadline(method: string, options: DeadlineOptions | undefined): number | undefined {
	if (options === undefined) return undefined;
	if (options === null || typeof options !== 'object' || Array.isArray(options)) throw new InvalidArgumentError(`${method}(options)`, 'an object such as { timeoutMs }', options);
	for (const key of Object.keys(options)) {
		if (key !== 'timeoutMs') throw new InvalidArgumentError(`${method}(options).${key}`, 'no such option (the only one is timeoutMs)', (options as Record<string, unknown>)[key]);
	}
	const { timeoutMs } = options;
	if (timeoutMs !== undefined && (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 0 || timeoutMs > MAX_TIMER_MS)) {
		throw new InvalidArgumentError(`${method}(options).timeoutMs`, `a whole number of milliseconds from 0 to ${MAX_TIMER_MS}`, timeoutMs);
	}
	return timeoutMs;
}
