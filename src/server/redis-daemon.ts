/**
 * `apns-worker serve --redis URL`: daemons that share one Redis. Apps, outcomes and feedback live in
 * Redis (redis-store.ts); notifications travel as BullMQ jobs of up to {@link JOB_TOKENS} tokens on the
 * queue `aw-send`, which every daemon works with one BullMQ Worker. A daemon that dies (`kill -9`)
 * stops renewing its jobs' locks: after `lockMs` BullMQ's stalled-job check hands them to another
 * daemon, which sends only the tokens whose outcome was not recorded (redis-jobs.ts).
 *
 * Every daemon keeps one manager per app. A PUT or DELETE through any daemon is published on
 * `aw:apps:changed`, and every daemon loads the app again; a daemon whose subscription was cut loads
 * them all when it is back. While Redis is unreachable the API answers 503 (nothing is accepted that is
 * not stored), ioredis reconnects with capped backoff, and outcomes wait in memory to be recorded.
 */
import { createHash, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { DelayedError, Queue, Worker, type Job } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { ServerError, type ApnsManager, type Receipt } from '../index.js';
import { backoffDelay } from '../drivers/backoff.js';
import { appView, SharedTokens, type AppInput, type AppSettings } from './apps.js';
import { Metrics } from './metrics.js';
import { JOB_TOKENS, JobRun, MESSAGE_TOKENS, popcount, type JobData } from './redis-jobs.js';
import { APPS_CHANNEL, RedisStore, type RedisApp } from './redis-store.js';
import { SecretBox } from './secrets.js';
import { feedbackPage, notificationView, openApp, prepareApp, RequestError, SERVE_DEFAULTS, storedBody, storedMessage, watched, type FeedbackPage, type NotificationInput, type NotificationView, type PushService } from './service.js';
import { Webhooks } from './webhook.js';

/** Options of a {@link RedisDaemon}. */
export interface RedisDaemonOptions {
	/** `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). */
	readonly redis: string;
	/** The API key every daemon of the deployment is given (APNS_WORKER_API_KEY): required. */
	readonly apiKey: string;
	/** The key credentials are sealed under (APNS_WORKER_SECRET): required, the same on every daemon. */
	readonly secret: string;
	/** How long outcomes, idempotency answers and unread feedback are kept, in ms. @default 7 days */
	readonly retentionMs?: number;
	/** How long a graceful shutdown may flush before the rest is handed to other daemons, in ms. @default 10_000 */
	readonly shutdownTimeoutMs?: number;
	/** A job's lock: a daemon that stops renewing it (killed) has its jobs taken over after about this long, in ms. @default 30_000 */
	readonly lockMs?: number;
	/** Jobs a daemon works at once (each up to 5,000 tokens). @default 16 */
	readonly concurrency?: number;
	readonly logger: Logger;
}

/** The BullMQ queue every daemon works. */
export const QUEUE_NAME = 'aw-send';
/** How long the daemon waits for Redis at start before it gives up (exit 2). */
const CONNECT_TIMEOUT_MS = 10_000;
/** Reconnects: 0.1 s doubling to 5 s, up to a fifth less for jitter, for as long as it takes. */
const RECONNECT = { initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 } as const;
/** A job that cannot be sent yet (its app is stopped) is tried again: 1 s doubling to 60 s. */
const JOB_RETRY = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 } as const;
/** Attempts of a job: it never fails for good (it is retried, backed off, until its tokens are settled or its app deleted). */
const ATTEMPTS = 1_000_000_000;
/** How often every daemon compares its apps with Redis and wakes their webhooks (a missed message, a dead daemon's delivery). */
const RECONCILE_MS = 30_000;
/** A Redis command unanswered this long fails (a half-open connection): the API answers 503. */
const COMMAND_TIMEOUT_MS = 5000;
/**
 * A connection with commands waiting and nothing received this long is cut and made again (a half-open
 * link: /healthz answers 503 meanwhile). Both of the worker's connections (BullMQ duplicates the one it is
 * given for its blocking reads) take one longer than BullMQ's longest block (10 s). Commands and socket
 * timeouts go together: a command that failed is not sent again (see open()), and only its own timeout
 * settles it then.
 */
const SOCKET_TIMEOUT_MS = { commands: 10_000, worker: 15_000 } as const;
/** How often an idle daemon pings Redis: a link that died silently is noticed without traffic. */
const HEARTBEAT_MS = 5000;

/** How long a job waits for this daemon's command connection before it is given back (a blip passes; an outage does not hold jobs). */
const READY_WAIT_MS = 5000;

/** A job given back because this daemon could not reach Redis for its commands: retried, backed off, by any daemon (the outage is logged, not each job). */
class RedisAway extends Error {
	override readonly name = 'RedisAway';
}

/** A job given back unfinished because its manager closed (an update, a shutdown): retried at once, by any daemon. */
class HandedBack extends Error {
	override readonly name = 'HandedBack';
}

interface LiveApp {
	readonly app: RedisApp;
	readonly settings: AppSettings;
	readonly manager: ApnsManager | undefined;
	/** Why it has no manager (its credentials do not load). */
	readonly stopped: string | undefined;
}

export class RedisDaemon implements PushService {
	readonly log: Logger;
	readonly metrics: Metrics;
	readonly apiKey: string;
	readonly #options: Required<Omit<RedisDaemonOptions, 'redis' | 'apiKey' | 'secret' | 'logger'>>;
	readonly #where: string;
	readonly #cmd: Redis;
	readonly #sub: Redis;
	/** The connection jobs are added on (POSTs). */
	readonly #queueConn: Redis;
	/** Every connection, closed last (BullMQ does not close connections it was given). */
	readonly #connections: Redis[];
	readonly #store: RedisStore;
	readonly #box: SecretBox;
	readonly #queue: Queue<JobData>;
	readonly #worker: Worker<JobData>;
	readonly #apps = new Map<string, LiveApp>();
	/** Per app id: loads run one after another (pub/sub, a PUT here, a job for an app not seen yet). */
	readonly #loading = new Map<string, Promise<void>>();
	/** Per app id: the load queued and not started yet, which a caller joins rather than queue another. */
	readonly #queuedLoad = new Map<string, Promise<RedisApp | undefined>>();
	readonly #tokens = new SharedTokens();
	readonly #webhooks: Webhooks;
	/** Aborted when the daemon stops waiting for Redis: outcomes not recorded by then stay in doubt. */
	readonly #abandon = new AbortController();
	#closing = false;
	#pruneTimer: NodeJS.Timeout | undefined;
	#reconcileTimer: NodeJS.Timeout | undefined;
	#workerStopped: string | undefined;
	/** The resync in progress (one at a time), retried with backoff until every app loaded. */
	#resyncing: Promise<void> | undefined;
	/** Resolved when the command connection is back (a job waits on it a while rather than fail at once). */
	#readyWait: Promise<void> | undefined;
	#heartbeatTimer: NodeJS.Timeout | undefined;

	private constructor(options: RedisDaemonOptions, connections: { cmd: Redis; sub: Redis; queue: Redis; worker: Redis }, box: SecretBox) {
		this.log = options.logger;
		this.apiKey = options.apiKey;
		this.#options = {
			retentionMs: options.retentionMs ?? SERVE_DEFAULTS.retentionMs,
			shutdownTimeoutMs: options.shutdownTimeoutMs ?? SERVE_DEFAULTS.shutdownTimeoutMs,
			lockMs: options.lockMs ?? SERVE_DEFAULTS.lockMs,
			concurrency: options.concurrency ?? SERVE_DEFAULTS.concurrency,
		};
		this.#where = redisWhere(options.redis);
		this.#cmd = connections.cmd;
		this.#sub = connections.sub;
		this.#queueConn = connections.queue;
		this.#connections = Object.values(connections);
		this.#box = box;
		this.#store = new RedisStore(this.#cmd, this.#options.retentionMs);
		this.metrics = new Metrics(async () => {
			const apps = [...this.#apps.values()];
			try {
				const counts = await this.#store.pending(apps.map((a) => a.app.gen));
				return apps.map((a, i) => [a.app.id, counts[i]!] as [string, number]);
			} catch {
				return []; // Redis is unreachable: no pending series this scrape
			}
		});
		const me = randomUUID();
		this.#webhooks = new Webhooks({
			batch: (gen, limit) => this.#store.webhookBatch(gen, limit),
			delivered: (gen, seq) => this.#store.webhookDelivered(gen, seq),
			claim: (gen) => this.#store.webhookClaim(gen, me),
			release: (gen) => this.#store.webhookRelease(gen, me),
		}, this.log);
		this.#queue = new Queue<JobData>(QUEUE_NAME, {
			connection: connections.queue,
			// One stack trace kept: BullMQ appends one per retry otherwise, without limit.
			defaultJobOptions: { attempts: ATTEMPTS, backoff: { type: 'apns-worker' }, removeOnComplete: true, removeOnFail: false, stackTraceLimit: 1 },
		});
		this.#worker = new Worker<JobData>(QUEUE_NAME, (job, token) => this.#process(job, token), {
			connection: connections.worker,
			autorun: false,
			concurrency: this.#options.concurrency,
			lockDuration: this.#options.lockMs,
			stalledInterval: this.#options.lockMs,
			// A job is never failed for stalling: its tokens are settled or reported, never dropped.
			maxStalledCount: ATTEMPTS,
			removeOnComplete: { count: 0 },
			settings: { backoffStrategy: (attempts, _type, error) => (error instanceof HandedBack || error?.name === 'HandedBack' ? 0 : backoffDelay(attempts, JOB_RETRY)) },
		});
		for (const [name, emitter] of [['queue', this.#queue], ['worker', this.#worker]] as const) {
			(emitter as unknown as NodeJS.EventEmitter).on('error', (error: Error) => this.log.warn({ redis: this.#where, err: { message: error.message } }, `Redis (${name}) error`));
		}
		this.#worker.on('stalled', (jobId) => this.log.warn({ job: jobId }, 'a job stalled (its daemon stopped renewing it): it is taken over'));
		this.#worker.on('failed', (job, error) => {
			if (error.name !== 'HandedBack' && error.name !== 'RedisAway') this.log.warn({ job: job?.id, attempts: job?.attemptsMade, err: { message: error.message } }, 'job not finished: retried');
		});
	}

	/**
	 * Connect to Redis, check the secret against the deployment's (the first daemon sets it), and load the
	 * apps. Nothing is sent before {@link start}.
	 * @throws {@link ServerError} `APNS_SERVER_CONFIG` (Redis unreachable, options), `APNS_SERVER_SECRET`.
	 */
	static async open(options: RedisDaemonOptions): Promise<RedisDaemon> {
		if (options.apiKey.length < 16) throw new ServerError('APNS_SERVER_CONFIG', 'APNS_WORKER_API_KEY (at least 16 characters) is required with --redis: every daemon of a deployment takes the same key');
		if (options.secret === '') throw new ServerError('APNS_SERVER_SECRET', 'APNS_WORKER_SECRET is required with --redis: credentials in the shared Redis are always encrypted');
		const where = redisWhere(options.redis);
		const base: RedisOptions = {
			retryStrategy: (times) => backoffDelay(times, RECONNECT),
			connectionName: 'apns-worker',
		};
		// Commands fail at once while disconnected (the API answers 503) instead of waiting in a queue, and a
		// command that failed is never sent again after a reconnection: a DELETE the client was told failed
		// (503) must not delete the app it made again meanwhile.
		const commands: RedisOptions = { ...base, enableOfflineQueue: false, maxRetriesPerRequest: 1, autoResendUnfulfilledCommands: false, commandTimeout: COMMAND_TIMEOUT_MS, socketTimeout: SOCKET_TIMEOUT_MS.commands };
		let cmd: Redis;
		try {
			cmd = new Redis(options.redis, { ...commands, lazyConnect: true });
		} catch (error) {
			throw new ServerError('APNS_SERVER_CONFIG', `--redis: ${(error as Error).message}`, { cause: error });
		}
		cmd.on('error', () => {}); // reported through `unavailable`, the 503s and the logs of what failed
		try {
			await Promise.race([cmd.connect(), new Promise((_, reject) => setTimeout(() => reject(new Error(`no answer in ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS).unref())]);
		} catch (error) {
			cmd.disconnect();
			throw new ServerError('APNS_SERVER_CONFIG', `cannot reach Redis at ${where}: ${(error as Error).message}`, { cause: error });
		}
		let box: SecretBox;
		try {
			box = await secretBox(new RedisStore(cmd, 1000), options.secret, where);
		} catch (error) {
			cmd.disconnect();
			throw error;
		}
		const sub = new Redis(options.redis, { ...base, socketTimeout: SOCKET_TIMEOUT_MS.commands, lazyConnect: true });
		const queue = new Redis(options.redis, commands);
		// BullMQ's workers block on Redis and must retry for ever (its documented setting).
		const worker = new Redis(options.redis, { ...base, maxRetriesPerRequest: null, socketTimeout: SOCKET_TIMEOUT_MS.worker });
		for (const c of [sub, queue, worker]) c.on('error', () => {});
		const daemon = new RedisDaemon(options, { cmd, sub, queue, worker }, box);
		await daemon.#loadAll();
		return daemon;
	}

	/** Work the queue and follow app changes (once the API listens). */
	async start(): Promise<void> {
		if (this.#closing) return;
		this.#cmd.on('ready', () => {
			this.log.info({ redis: this.#where }, 'Redis is back');
			this.#resync();
		});
		this.#cmd.on('close', () => {
			if (!this.#closing) this.log.warn({ redis: this.#where }, 'Redis connection lost: the API answers 503 until it is back');
		});
		this.#sub.on('message', (_channel: string, id: string) => {
			this.#load(id).catch((error: unknown) => {
				this.log.warn({ app: id, err: { message: (error as Error).message } }, 'cannot load a changed app yet: all apps are loaded again');
				this.#resync();
			});
		});
		// Every (re)connection: subscribe, then load every app (what was published meanwhile was missed).
		this.#sub.on('ready', () => {
			this.#sub.subscribe(APPS_CHANNEL).then(() => this.#resync(), () => {});
		});
		await this.#sub.connect();
		this.#reconcileTimer = setInterval(() => this.#resync(true), RECONCILE_MS);
		this.#reconcileTimer.unref();
		// A command with no answer for SOCKET_TIMEOUT_MS cuts the link: this makes sure there is one to wait.
		this.#heartbeatTimer = setInterval(() => {
			// (The subscriber too: a silent one would miss every app change until the next resync.)
			for (const c of [this.#cmd, this.#queueConn, this.#sub]) if (c.status === 'ready') c.ping().catch(() => {});
		}, HEARTBEAT_MS);
		this.#heartbeatTimer.unref();
		this.#worker.run().catch((error: unknown) => {
			// A daemon that no longer works the queue must not look healthy: /healthz and /v1 answer 503.
			this.#workerStopped = (error as Error).message;
			this.log.error({ err: { message: this.#workerStopped } }, 'the BullMQ worker stopped: this daemon sends nothing; restart it');
		});
		this.#pruneTimer = setInterval(() => void this.#prune(), Math.min(this.#options.retentionMs, 3_600_000));
		this.#pruneTimer.unref();
	}

	get closing(): boolean {
		return this.#closing;
	}

	get unavailable(): string | undefined {
		if (this.#workerStopped !== undefined) return 'this daemon no longer works the queue (see its log): use another';
		return this.#cmd.status === 'ready' && this.#queueConn.status === 'ready' ? undefined : 'Redis is unreachable: nothing can be stored; retry';
	}

	/** Where the shared state is (for logs): host and port, never a password. */
	get where(): string {
		return this.#where;
	}

	// ---- apps ----

	/** Load every app again; rejects if any could not be. */
	async #loadAll(): Promise<void> {
		const ids = new Set([...(await this.#store.appIds()), ...this.#apps.keys()]);
		await Promise.all([...ids].map((id) => this.#load(id)));
	}

	/**
	 * Load every app again until it succeeds (backed off: 0.1 s doubling to 5 s): after a reconnection,
	 * a missed message, and every {@link RECONCILE_MS}, when the webhooks are woken too.
	 */
	#resync(wakeWebhooks = false): void {
		if (this.#resyncing !== undefined || this.#closing) return;
		this.#resyncing = (async () => {
			for (let attempt = 1; !this.#closing; attempt++) {
				try {
					await this.#loadAll();
					break;
				} catch (error) {
					if (attempt === 1) this.log.warn({ err: { message: (error as Error).message } }, 'cannot load the apps from Redis yet: retrying');
					await sleep(backoffDelay(attempt, RECONNECT), undefined, { ref: false });
				}
			}
			if (wakeWebhooks) for (const a of this.#apps.values()) if (a.settings.webhook !== undefined) this.#webhooks.wake(a.app.gen, a.settings.webhook.url, a.app.id);
		})().finally(() => (this.#resyncing = undefined));
	}

	/**
	 * Bring app `id` in line with what Redis holds now, and return that (undefined: no such app). Loads run
	 * one after another per app, and each reads Redis in its turn: a copy read earlier can never be applied
	 * over a newer one. A caller that finds a load queued and not started joins it (its read still comes
	 * after the call): concurrent requests for one app cost two round trips at most, not one each in line.
	 * `prepared` is the manager a PUT here checked for `app`: taken if Redis still holds exactly that.
	 * Rejects when Redis could not be asked.
	 */
	#load(id: string, prepared?: { app: RedisApp; manager: ApnsManager }): Promise<RedisApp | undefined> {
		if (prepared === undefined) {
			const queued = this.#queuedLoad.get(id);
			if (queued !== undefined) return queued;
		}
		const next: Promise<RedisApp | undefined> = (this.#loading.get(id) ?? Promise.resolve()).then(async () => {
			if (this.#queuedLoad.get(id) === next) this.#queuedLoad.delete(id);
			let app: RedisApp | undefined;
			try {
				app = await this.#store.getApp(id);
			} catch (error) {
				void prepared?.manager.close({ timeoutMs: 0 }).catch(() => {});
				throw error;
			}
			const mine = prepared !== undefined && app !== undefined && sameApp(prepared.app, app) ? prepared.manager : undefined;
			if (mine === undefined) void prepared?.manager.close({ timeoutMs: 0 }).catch(() => {});
			this.#apply(id, app, mine);
			return app;
		});
		if (prepared === undefined) this.#queuedLoad.set(id, next);
		const settledNext = next.then(() => {}, () => {});
		this.#loading.set(id, settledNext);
		void settledNext.then(() => {
			if (this.#loading.get(id) === settledNext) this.#loading.delete(id);
		});
		return next;
	}

	#apply(id: string, app: RedisApp | undefined, prepared: ApnsManager | undefined): void {
		const live = this.#apps.get(id);
		if (app === undefined) {
			if (live === undefined) return;
			this.#apps.delete(id);
			// Deleted: what its manager holds is dropped with it (the DELETE counted it).
			live.manager?.destroy();
			this.#webhooks.forget(live.app.gen);
			this.metrics.forget(id);
			this.log.info({ app: id }, 'app deleted');
			return;
		}
		if (live !== undefined && sameApp(live.app, app)) {
			void prepared?.close({ timeoutMs: 0 }).catch(() => {});
			return;
		}
		const settings = JSON.parse(app.settings) as AppSettings;
		let manager: ApnsManager | undefined;
		let stopped: string | undefined;
		if (prepared !== undefined) manager = watched(id, prepared, this.log);
		else {
			try {
				manager = openApp(id, settings, app.sealed, this.#box, this.#tokens, this.log);
			} catch (error) {
				stopped = (error as Error).message;
				this.log.error({ app: id, err: { message: stopped } }, 'app not started');
			}
		}
		this.#apps.set(id, { app, settings, manager, stopped });
		if (live !== undefined) {
			// Another incarnation: its jobs are dropped. An update: the old manager finishes what it holds
			// (bounded); what it cannot is handed back and sent by the new one.
			if (live.app.gen !== app.gen) live.manager?.destroy();
			else void live.manager?.close({ timeoutMs: this.#options.shutdownTimeoutMs }).catch(() => {});
			if (live.app.gen !== app.gen) this.#webhooks.forget(live.app.gen);
		}
		if (settings.webhook === undefined) this.#webhooks.forget(app.gen);
		else this.#webhooks.wake(app.gen, settings.webhook.url, id);
		this.log.info({ app: id, environment: settings.environment, auth: settings.auth }, live === undefined ? 'app loaded' : 'app reloaded');
	}

	/** The app `id` as Redis holds it now (this daemon's copy brought in line first), or 404; 503 when Redis cannot be asked. */
	async #live(id: string): Promise<LiveApp> {
		let stored: RedisApp | undefined;
		try {
			stored = await this.#load(id);
		} catch (error) {
			throw this.#unavailable(error);
		}
		const live = this.#apps.get(id);
		if (stored === undefined || live === undefined || live.app.gen !== stored.gen) throw new RequestError(404, 'unknown_app', `no app ${id}`, 'appId');
		return live;
	}

	async putApp(id: string, input: AppInput): Promise<Record<string, unknown>> {
		const { settings, sealed, manager } = prepareApp(id, input, this.#box, this.#tokens);
		let stored: { app: RedisApp; created: boolean };
		try {
			stored = await this.#store.putApp(id, JSON.stringify(settings), sealed, Date.now());
		} catch (error) {
			void manager.close({ timeoutMs: 0 }).catch(() => {});
			throw this.#unavailable(error);
		}
		// This daemon takes the manager it checked; the others load the app from the message.
		await this.#load(id, { app: stored.app, manager }).catch(() => {});
		this.log.info({ app: id, created: stored.created, auth: settings.auth, environment: settings.environment }, stored.created ? 'app provisioned' : 'app updated');
		return this.#view(this.#apps.get(id) ?? { app: stored.app, settings, manager: undefined, stopped: undefined });
	}

	async getApp(id: string): Promise<Record<string, unknown>> {
		return this.#view(await this.#live(id));
	}

	async listApps(): Promise<Array<Record<string, unknown>>> {
		try {
			await this.#loadAll();
		} catch (error) {
			throw this.#unavailable(error);
		}
		const apps = [...this.#apps.values()].sort((a, b) => (a.app.id < b.app.id ? -1 : 1));
		return Promise.all(apps.map((a) => this.#view(a)));
	}

	async deleteApp(id: string): Promise<{ dropped: number }> {
		let dropped: number | undefined;
		try {
			dropped = await this.#store.deleteApp(id);
		} catch (error) {
			throw this.#unavailable(error);
		}
		if (dropped === undefined) throw new RequestError(404, 'unknown_app', `no app ${id}`, 'appId');
		await this.#load(id).catch(() => {}); // the others, and this daemon's next request, load it anyway
		return { dropped };
	}

	async #view(live: LiveApp): Promise<Record<string, unknown>> {
		let pending: number;
		try {
			[pending] = (await this.#store.pending([live.app.gen])) as [number];
		} catch (error) {
			throw this.#unavailable(error);
		}
		return appView(live.app.id, live.settings, { createdAt: live.app.createdAt, updatedAt: live.app.updatedAt, pending, sending: live.manager !== undefined, stopped: live.stopped });
	}

	// ---- notifications ----

	/** Accept notifications: 202 once Redis has them (the jobs, and their totals). */
	async accept(id: string, notifications: readonly NotificationInput[], idempotencyKey: string | undefined): Promise<{ status: number; body: unknown }> {
		const live = await this.#live(id);
		const gen = live.app.gen;
		// Every entry checked before anything is written: a request is all or nothing.
		const bodies = notifications.map((n, i) => storedBody(n, i));
		try {
			if (idempotencyKey !== undefined) {
				const earlier = await this.#store.idempotent(gen, idempotencyKey);
				if (earlier !== undefined) return { status: 202, body: JSON.parse(earlier) };
			}
			// With a key, ids and job ids follow from it: a retry after a failure between the two writes below
			// re-adds the same jobs, which BullMQ ignores while they are still queued, and records nothing twice.
			const keyed = idempotencyKey === undefined ? undefined : createHash('sha256').update(`${gen}\0${idempotencyKey}`).digest('hex');
			const ids = notifications.map((_, i) => (keyed === undefined ? randomUUID() : uuidFrom(keyed, i)));
			const jobs: Array<{ name: string; data: JobData; opts?: { jobId: string } }> = [];
			notifications.forEach((n, i) => {
				for (let first = 0; first < n.tokens.length; first += JOB_TOKENS) {
					const tokens = Buffer.from(n.tokens.slice(first, first + JOB_TOKENS).join(''), 'hex').toString('base64');
					jobs.push({ name: 'send', data: { a: id, g: gen, n: ids[i]!, t: tokens, b: bodies[i]! }, ...(keyed === undefined ? {} : { opts: { jobId: keyedJobId(keyed, i, first) } }) });
				}
			});
			const accepted = notifications.reduce((sum, n) => sum + n.tokens.length, 0);
			// Jobs first: a notification counted as pending always has its jobs (see ACCEPT in redis-store.ts).
			await this.#queue.addBulk(jobs);
			if (!(await this.#store.accepted(id, gen, notifications.map((n, i) => ({ id: ids[i]!, total: n.tokens.length }))))) {
				// Deleted (or deleted and made again) meanwhile: nothing was accepted; those jobs are dropped.
				throw new RequestError(409, 'app_changed', `app ${id} was deleted or re-created while the request was stored: nothing was accepted; retry`, 'appId');
			}
			let response: unknown = { accepted, ids };
			if (idempotencyKey !== undefined) response = JSON.parse(await this.#store.remember(gen, idempotencyKey, JSON.stringify(response)));
			this.metrics.accepted.inc({ app: id }, accepted);
			return { status: 202, body: response };
		} catch (error) {
			throw this.#unavailable(error);
		}
	}

	async status(id: string, notificationId: string): Promise<NotificationView> {
		const live = await this.#live(id);
		let s: Awaited<ReturnType<RedisStore['status']>>;
		try {
			s = await this.#store.status(live.app.gen, notificationId);
		} catch (error) {
			throw this.#unavailable(error);
		}
		if (s === undefined) throw new RequestError(404, 'unknown_notification', `no notification ${notificationId} for app ${id} (or its outcome expired)`, 'notificationId');
		return notificationView(notificationId, s, s.failures);
	}

	async feedback(id: string, after: number, limit: number): Promise<FeedbackPage> {
		const live = await this.#live(id);
		let records: Awaited<ReturnType<RedisStore['feedback']>>;
		try {
			records = await this.#store.feedback(live.app.gen, after, limit, live.settings.webhook !== undefined);
		} catch (error) {
			throw this.#unavailable(error);
		}
		return feedbackPage(records, after);
	}

	/** A failed Redis call, as the API answers it (the client retries; nothing was half accepted that a retry would not fix). */
	#unavailable(error: unknown): Error {
		if (error instanceof RequestError) return error;
		this.log.warn({ redis: this.#where, err: { message: (error as Error).message } }, 'Redis refused a request');
		return new RequestError(503, 'storage_unavailable', 'Redis did not take the request: retry');
	}

	// ---- the queue ----

	/**
	 * Send one job's unsettled tokens through its app's manager; outcomes recorded as they come. Every
	 * way out but "its app was deleted" and "every token recorded" throws, and BullMQ runs the job again.
	 */
	async #process(job: Job<JobData>, lock: string | undefined): Promise<void> {
		const d = job.data;
		if (this.#cmd.status !== 'ready') {
			// Redis is away for this daemon's commands (its worker link may still be up): the job goes back,
			// backed off, for whichever daemon can run it — never sent after a wait its lock may not have
			// outlived. The wait (until the link is back, at most READY_WAIT_MS) keeps this daemon from
			// taking job after job meanwhile.
			await this.#ready(READY_WAIT_MS);
			throw new RedisAway(`Redis was unreachable when job ${job.id} was taken: given back`);
		}
		// Asked of Redis every time (a throw retries the job): a daemon that cannot tell must not drop it.
		const stored = await this.#load(d.a);
		if (stored === undefined || stored.gen !== d.g) {
			// Deleted, or deleted and made again (its pending count went with it): so are its jobs, and what
			// they had recorded (no one can ask for it: the incarnation is gone).
			await this.#store.forgetJob({ id: job.id!, gen: d.g, notification: d.n });
			return;
		}
		const live = this.#apps.get(d.a);
		if (live?.app.gen !== d.g) throw new Error(`app ${d.a} is not loaded`);
		const manager = live.manager;
		const tokens = Buffer.from(d.t, 'base64');
		const count = tokens.length / 32;
		const ref = { id: job.id!, app: d.a, gen: d.g, notification: d.n, count, keyed: isKeyedJobId(job.id!) };
		if (manager === undefined) {
			// Stopped (its credentials do not load): the job waits, backed off, without counting an attempt,
			// and its notification's state is kept meanwhile.
			await this.#store.touchJob(ref);
			await job.moveToDelayed(Date.now() + backoffDelay(job.attemptsStarted, JOB_RETRY), lock);
			throw new DelayedError();
		}
		const done = new Uint8Array(Math.ceil(count / 8));
		// Read every time: a job run again (taken over, handed back, or re-added by a retried request
		// with the same Idempotency-Key) sends only what is not recorded.
		const progress = await this.#store.progress(job.id!);
		if (progress !== undefined) done.set(progress.subarray(0, done.length));
		const open = count - popcount(done);
		if (open > 0 && (job.stalledCounter > 0 || (progress !== undefined && job.attemptsStarted <= 1))) {
			this.metrics.inDoubt.inc({ app: d.a }, open);
			this.log.warn({ app: d.a, job: job.id, inDoubt: open, settled: count - open }, 'taking over a job that was started before: its unsettled tokens are sent again (APNs may have some already)');
		}
		const run = new JobRun(this.#store, ref, {
			delivered: (n) => this.metrics.delivered.inc({ app: d.a }, n),
			failed: (reason, n) => this.metrics.failed.inc({ app: d.a, reason }, n),
			feedback: () => {
				const now = this.#apps.get(d.a);
				if (now?.settings.webhook !== undefined) this.#webhooks.wake(now.app.gen, now.settings.webhook.url, d.a);
			},
			// Once, then every tenth attempt: an outage must not fill the log.
			retrying: (error, attempt) => {
				if (attempt === 1 || attempt % 10 === 0) this.log.warn({ app: d.a, job: job.id, attempt, err: { message: error.message } }, 'cannot record outcomes in Redis yet: retrying');
			},
		}, this.#abandon.signal);
		const settled: Array<Promise<void>> = [];
		let indices: number[] = [];
		let hex: string[] = [];
		let handed = 0;
		const send = (): void => {
			const i = indices;
			const h = hex;
			indices = [];
			hex = [];
			handed += i.length;
			let receipt: Receipt;
			try {
				receipt = manager.send(storedMessage(h, d.b));
			} catch (error) {
				const code = (error as { code?: string }).code;
				// Closed under us (an update, a shutdown): handed back. Anything else refuses it for good.
				if (code === 'APNS_CLOSED') run.dropped += i.length;
				else run.refused(i, h, code ?? 'Refused');
				return;
			}
			settled.push(receipt.settled.then((result) => run.record(i, h, result)));
		};
		for (let i = 0; i < count; i++) {
			if ((done[i >> 3]! & (1 << (i & 7))) !== 0) continue;
			indices.push(i);
			hex.push(tokens.toString('hex', i * 32, i * 32 + 32));
			if (indices.length === MESSAGE_TOKENS) send();
		}
		if (indices.length > 0) send();
		await Promise.all(settled);
		await run.flush();
		if (run.dropped > 0) {
			// Some may have been written to APNs before the manager closed: counted in doubt here (unless the
			// manager never wrote a request at all, as with an unreachable gateway).
			const inDoubt = manager.stats.written > 0 ? run.dropped : 0;
			this.metrics.inDoubt.inc({ app: d.a }, inDoubt);
			this.log.warn({ app: d.a, job: job.id, handedBack: run.dropped, inDoubt }, 'job handed back unfinished (its manager closed): the rest is sent by the next run');
			throw new HandedBack(`${run.dropped} of job ${job.id} handed back unsent (its manager closed)`);
		}
		// Every token handed to the manager has an outcome recorded, or the job runs again for the rest.
		if (run.recorded < handed) throw new Error(`${handed - run.recorded} tokens of job ${job.id} have no outcome: run again`);
	}

	/** Until the command connection is ready, at most `ms` (or until the daemon stops waiting for Redis). */
	async #ready(ms: number): Promise<void> {
		if (this.#cmd.status === 'ready' || this.#abandon.signal.aborted) return;
		this.#readyWait ??= new Promise<void>((resolve) => {
			const done = (): void => {
				this.#cmd.off('ready', done);
				this.#abandon.signal.removeEventListener('abort', done);
				this.#readyWait = undefined;
				resolve();
			};
			this.#cmd.on('ready', done);
			this.#abandon.signal.addEventListener('abort', done);
		});
		await Promise.race([this.#readyWait, sleep(ms, undefined, { ref: false })]);
	}

	async #prune(): Promise<void> {
		const before = Date.now() - this.#options.retentionMs;
		for (const live of this.#apps.values()) {
			try {
				await this.#store.pruneFeedback(live.app.gen, before, live.settings.webhook !== undefined);
			} catch (error) {
				this.log.warn({ app: live.app.id, err: { message: (error as Error).message } }, 'feedback prune failed (tried again at the next)');
			}
		}
	}

	/**
	 * Stop: the API answers 503, the worker takes no new job, jobs in progress get `shutdownTimeoutMs` to
	 * finish; what is left is handed back to the queue for the other daemons (or this one's next start).
	 */
	async close(): Promise<void> {
		if (this.#closing) return;
		this.#closing = true;
		clearInterval(this.#pruneTimer);
		clearInterval(this.#reconcileTimer);
		clearInterval(this.#heartbeatTimer);
		this.#webhooks.close();
		const graceful = this.#worker.close();
		const within = (ms: number): Promise<unknown> => Promise.race([graceful, new Promise((resolve) => setTimeout(resolve, ms).unref())]);
		await within(this.#options.shutdownTimeoutMs);
		// Out of time: managers hand back what they hold, the jobs go back to the queue.
		await Promise.all([...this.#apps.values()].map((a) => a.manager?.close({ timeoutMs: 0 }).catch(() => {})));
		await within(5000);
		// Redis has not answered: outcomes not recorded stay in doubt (their jobs' locks expire; others take them).
		this.#abandon.abort();
		await within(1000);
		// Bounded too (a second close() of BullMQ's only returns the first one's promise): then every
		// connection is cut, which ends whatever still waits on Redis.
		await Promise.race([this.#queue.close().catch(() => {}), new Promise((resolve) => setTimeout(resolve, 1000).unref())]);
		for (const c of this.#connections) c.disconnect();
		await within(1000);
		this.log.info({}, 'stopped');
	}
}

/** The deployment's secret box: the first daemon stores the salt and check value, the others must match. */
async function secretBox(store: RedisStore, secret: string, where: string): Promise<SecretBox> {
	const salt = await store.metaOnce('secret-salt', () => randomUUID());
	const box = SecretBox.fromSecret(secret, Buffer.from(salt), { plainAllowed: false });
	const check = await store.metaOnce('secret-check', () => box.check());
	if (!box.verify(check)) throw new ServerError('APNS_SERVER_SECRET', `APNS_WORKER_SECRET is not the secret the credentials in Redis (${where}) were sealed with`);
	return box;
}

/** Whether two copies of an app are the same version. */
function sameApp(a: RedisApp, b: RedisApp): boolean {
	return a.gen === b.gen && a.updatedAt === b.updatedAt && a.settings === b.settings && a.sealed === b.sealed;
}

/** The job id of tokens `first`… of entry `i` of a request with an Idempotency-Key (`keyed`: its hash): a retry adds the same jobs. */
function keyedJobId(keyed: string, i: number, first: number): string {
	return `${keyed.slice(0, 32)}.${i}.${first}`;
}

/** Whether `id` was made by {@link keyedJobId} (BullMQ's own ids are numbers). */
function isKeyedJobId(id: string): boolean {
	return id.includes('.');
}

/** A UUID-shaped id from a hash and an index (ids of a request with an Idempotency-Key). */
function uuidFrom(hash: string, i: number): string {
	const h = createHash('sha256').update(`${hash}:${i}`).digest('hex');
	return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** `host:port/db` of a Redis URL (never its password). */
export function redisWhere(url: string): string {
	try {
		const u = new URL(url);
		return `${u.protocol}//${u.hostname}:${u.port || '6379'}${u.pathname.length > 1 ? u.pathname : ''}`;
	} catch {
		return 'the Redis URL given';
	}
}
