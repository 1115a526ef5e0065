/**
 * The engine of `apns-worker serve`: everything that does not depend on where data lives, written once
 * for every {@link PushStore}. It keeps one manager per app, answers the API's operations (api.ts), takes
 * the units of work the store hands out and sends them, records every outcome, delivers feedback to
 * webhooks, publishes metrics, prunes what is past the retention, and shuts down within its deadline.
 *
 * Apps: the store is the truth. A daemon keeps a copy of each app (its settings and a manager made from
 * its credentials) and brings it in line with the store whenever it is used, changed here, or changed
 * elsewhere (a store several daemons share says so: {@link StoreEvents}). Loads of one app run one after
 * another, each reading the store in its turn, so a copy read earlier is never applied over a newer one.
 * An update hands over: the old manager finishes what it holds within `shutdownTimeoutMs`, and what it
 * cannot goes back to the store for the new one. A deleted app's manager is destroyed with what it holds.
 *
 * Work: a unit's tokens not settled yet go to the app's manager in messages of {@link MESSAGE_TOKENS}; as
 * receipts settle, a {@link Recorder} stores their outcomes, batched. A unit whose app cannot send (its
 * credentials do not load) or whose outcomes cannot be stored goes back to the store, backed off; one
 * whose manager closed under it is handed back at once.
 */
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { ChannelError, ServerError, type ApnsManager, type SendResult } from '../index.js';
import { backoffDelay } from '../drivers/backoff.js';
import { appView, SharedTokens, type AppInput, type AppSettings } from './apps.js';
import { Metrics } from './metrics.js';
import type { Accepted, Idempotency, KeyScope, NewNotification, PushStore, StoredApp, StoredKey, TokenFailure, WorkResult, WorkSource, WorkUnit } from './store.js';
import { SecretBox } from './secrets.js';
import { BROADCAST_TOKEN, broadcastBody, feedbackPage, notificationView, openApp, openSecrets, prepareApp, RequestError, SERVE_DEFAULTS, storedBody, storedMessage, watched, type BroadcastInput, type FeedbackPage, type KeyView, type NotificationInput, type NotificationView, type PushService, type ScopedKey, type StoredBody } from './service.js';
import { Webhooks } from './webhook.js';

/** Options of {@link Engine.open}. */
export interface EngineOptions {
	readonly store: PushStore;
	/** The API key (`Authorization: Bearer KEY`); a store several daemons share needs it given, 16 characters or more. */
	readonly apiKey: string;
	/** The secret credentials are sealed under (APNS_WORKER_SECRET); required by a shared store. */
	readonly secret: string | undefined;
	/** Store credentials unsealed when no secret is given (never with a shared store). @default false */
	readonly insecurePlaintextSecrets?: boolean;
	/** How long settled outcomes, idempotency answers and unread feedback are kept, in ms. @default 7 days */
	readonly retentionMs?: number;
	/**
	 * How long a notification is retried after a transient failure (429, 500, 503, unanswered, a lost
	 * connection), from when it was accepted, in ms; its `expiration`, when sooner, ends it first. Then
	 * it is recorded failed with APNs' last answer. @default 24 hours
	 */
	readonly retryForMs?: number;
	/** How long a shutdown may take, in ms: units finish, then (the last 30 %) managers hand back what they hold, then (the last 10 %) outcomes are stored; the rest is left to the store. @default 10_000 */
	readonly shutdownTimeoutMs?: number;
	/** Units worked at once. @default 16 */
	readonly concurrency?: number;
	readonly logger: Logger;
}

/** Tokens per message handed to a manager: the finest grain outcomes are recorded at. */
export const MESSAGE_TOKENS = 100;
/** Outcomes wait at most this long (ms) before they are stored… */
export const FLUSH_MS = 250;
/** …or until this many wait. */
export const FLUSH_OUTCOMES = 1000;
/** Retries of a flush the store refused: 0.25 s doubling to 5 s, until it is stored or the engine gives up. */
const FLUSH_RETRY = { initialDelayMs: 250, maxDelayMs: 5000, jitter: 0.2 } as const;
/** A unit that cannot be sent yet (its app is stopped, the store is away) is tried again: 1 s doubling to 60 s. */
const UNIT_RETRY = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 } as const;
/**
 * A unit whose tokens got only transient answers in a round (each a manager's `DAEMON_MAX_ATTEMPTS`
 * attempts) is handed out again for another round: 5 s doubling to 10 minutes, until its deadline.
 */
const ROUND_RETRY = { initialDelayMs: 5000, maxDelayMs: 600_000, jitter: 0.2 } as const;
/** Loads of every app that failed are tried again: 0.1 s doubling to 5 s. */
const RESYNC_RETRY = { initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 } as const;
/** How often a shared store's apps are compared with this daemon's copies and their webhooks woken (a missed message, a dead daemon's delivery). */
const RECONCILE_MS = 30_000;
/** How long a unit waits for the store to come back before it is given back (a blip passes; an outage does not hold units). */
const STORE_WAIT_MS = 5000;
/**
 * The end of a shutdown's `shutdownTimeoutMs`, kept for managers to hand back what they hold (at most
 * 30 % of it), then for outcomes to be stored (at most 10 %).
 */
const HAND_BACK_MS = 3000;
const ABANDON_MS = 1000;

interface LiveApp {
	readonly app: StoredApp;
	readonly settings: AppSettings;
	readonly manager: ApnsManager | undefined;
	/** Why it has no manager (its credentials do not load). */
	readonly stopped: string | undefined;
	/** What its webhook deliveries are signed with (undefined: unsigned, from before webhooks were signed). */
	readonly webhookSecret: string | undefined;
	/** Its manager's connections and the last error that was the app's (not one token's). */
	readonly health: AppHealth;
}

/**
 * Failures that are one notification's or one token's, not the app's (a device gone, a payload too
 * large): they do not make an app's lastError.
 */
const NOTIFICATION_REASONS: ReadonlySet<string> = new Set(['BadDeviceToken', 'Unregistered', 'ExpiredToken', 'DeviceTokenNotForTopic', 'PayloadTooLarge', 'BadCollapseId', 'BadExpirationDate', 'BadPriority', 'BadMessageId', 'MissingDeviceToken', 'DuplicateHeaders', 'PayloadEmpty', 'BadPushType']);

/** What an app's view and `apns_worker_app_up` say of its link to APNs. */
export class AppHealth {
	/** Connections open now. */
	connections = 0;
	/** The last connect attempt failed (and none succeeded since). */
	#failing = false;
	lastError: { status: number; reason: string; at: string } | undefined;

	/** Follow `manager`'s connections (undefined: the app has none, it is stopped). */
	track(manager: ApnsManager | undefined, stopped: string | undefined): this {
		if (stopped !== undefined) this.error(0, stopped);
		if (manager === undefined) return this;
		manager.on('connected', () => {
			this.connections++;
			this.#failing = false;
		});
		manager.on('disconnected', (info) => {
			this.connections = Math.max(0, this.connections - 1);
			if (info.error !== undefined) this.error(0, `disconnected (${info.reason}): ${info.error.message}`);
		});
		manager.on('connectError', (error) => {
			this.#failing = true;
			this.error(0, error.message);
		});
		return this;
	}

	/** A failure that is the app's: kept as its lastError (one that is a token's is not). */
	error(status: number, reason: string): void {
		if (status !== 0 && NOTIFICATION_REASONS.has(reason)) return;
		this.lastError = { status, reason, at: new Date().toISOString() };
	}

	/** It can send: connected, or not failing to connect. */
	get up(): boolean {
		return this.connections > 0 || !this.#failing;
	}
}

export class Engine implements PushService {
	readonly log: Logger;
	readonly metrics: Metrics;
	readonly apiKey: string;
	readonly store: PushStore;
	readonly #options: { retentionMs: number; retryForMs: number; shutdownTimeoutMs: number; concurrency: number };
	readonly #box: SecretBox | undefined;
	readonly #apps = new Map<string, LiveApp>();
	/** Per app id: loads run one after another. */
	readonly #loading = new Map<string, Promise<void>>();
	/** Per app id: the load queued and not started yet, which a caller joins rather than queue another. */
	readonly #queuedLoad = new Map<string, Promise<StoredApp | undefined>>();
	/** Apps whose in-doubt count at start was read (a store that knows it). */
	readonly #counted = new Set<string>();
	readonly #tokens = new SharedTokens();
	readonly #webhooks: Webhooks;
	/** Aborted when the engine stops waiting for the store: outcomes not stored by then stay in doubt. */
	readonly #abandon = new AbortController();
	/** Managers an update replaced, finishing what they hold (close cuts them short). */
	readonly #retiring = new Set<ApnsManager>();
	/** Apps being deleted by this daemon's API (it logs the deletion, with what was dropped). */
	readonly #deleting = new Set<string>();
	/** Units being worked, each resolving when its handler returns (close waits for them, bounded). */
	readonly #working = new Set<Promise<unknown>>();
	#work: WorkSource | undefined;
	#closing = false;
	#started = false;
	#pruneTimer: NodeJS.Timeout | undefined;
	#reconcileTimer: NodeJS.Timeout | undefined;
	/** The resync in progress (one at a time), retried with backoff until every app loaded. */
	#resyncing: Promise<void> | undefined;
	/** Waiters for the store to be reachable again. */
	#backWaiters: Array<() => void> = [];

	private constructor(options: EngineOptions, box: SecretBox | undefined) {
		this.log = options.logger;
		this.apiKey = options.apiKey;
		this.store = options.store;
		this.#box = box;
		this.#options = {
			retentionMs: options.retentionMs ?? SERVE_DEFAULTS.retentionMs,
			retryForMs: options.retryForMs ?? SERVE_DEFAULTS.retryForMs,
			shutdownTimeoutMs: options.shutdownTimeoutMs ?? SERVE_DEFAULTS.shutdownTimeoutMs,
			concurrency: options.concurrency ?? SERVE_DEFAULTS.concurrency,
		};
		this.metrics = new Metrics(async () => {
			const apps = [...this.#apps.values()];
			try {
				const [counts, oldest] = await Promise.all([this.store.pending(apps.map((a) => a.app)), this.store.oldestPending(apps.map((a) => a.app))]);
				const now = Date.now();
				return apps.map((a, i) => ({ app: a.app.id, pending: counts[i]!, up: a.manager !== undefined && a.health.up, oldestPendingSeconds: oldest[i] === undefined ? undefined : Math.max(0, (now - oldest[i]!) / 1000) }));
			} catch {
				return []; // the store is unreachable: no per-app series this scrape
			}
		});
		const me = randomUUID();
		const app = (gen: string): StoredApp => this.#byGen(gen);
		const store = this.store;
		this.#webhooks = new Webhooks({
			batch: (gen, limit) => store.webhookBatch(app(gen), limit),
			delivered: (gen, seq) => store.webhookDelivered(app(gen), seq),
			...(store.webhookClaim === undefined ? {} : { claim: (gen: string) => store.webhookClaim!(app(gen), me) }),
			...(store.webhookRelease === undefined ? {} : { release: (gen: string) => store.webhookRelease!(app(gen), me) }),
		}, this.log);
	}

	/**
	 * Open the engine on `store`: check the API key and the secret against the store's (the first daemon
	 * sets it), and load the apps. Nothing is sent before {@link start}.
	 * @throws {@link ServerError} `APNS_SERVER_CONFIG`, `APNS_SERVER_SECRET`.
	 */
	static async open(options: EngineOptions): Promise<Engine> {
		const { store } = options;
		if (store.shared && options.apiKey.length < 16) throw new ServerError('APNS_SERVER_CONFIG', 'APNS_WORKER_API_KEY (at least 16 characters) is required with --redis: every daemon of a deployment takes the same key');
		const box = await secretBox(store, options.secret, options.insecurePlaintextSecrets === true);
		// Credentials stored unsealed (--insecure-plaintext-secrets) are sealed once a secret is given.
		if (box?.encrypts === true) {
			const sealed = await reseal(store, (sealedValue) => (SecretBox.isPlain(sealedValue) ? box : undefined), box, {});
			if (sealed > 0) options.logger.warn({ apps: sealed }, 'credentials stored unencrypted were sealed under APNS_WORKER_SECRET');
		}
		const engine = new Engine(options, box);
		await engine.#loadAll();
		return engine;
	}

	/** Work the store's units and follow its changes (once the API listens: a daemon that cannot serve must not send). */
	async start(): Promise<void> {
		if (this.#started || this.#closing) return;
		this.#started = true;
		await this.store.watch({
			appChanged: (id) => {
				if (id === undefined) return this.#resync();
				this.#load(id).catch((error: unknown) => {
					this.log.warn({ app: id, err: { message: (error as Error).message } }, 'cannot load a changed app yet: all apps are loaded again');
					this.#resync();
				});
			},
			back: () => {
				this.log.info({ store: this.store.where }, `${this.store.name} is back`);
				for (const resolve of this.#backWaiters.splice(0)) resolve();
				this.#resync();
			},
			lost: () => {
				if (!this.#closing) this.log.warn({ store: this.store.where }, `${this.store.name} connection lost: the API answers 503 until it is back`);
			},
		});
		for (const live of this.#apps.values()) this.#wakeWebhook(live);
		this.#work = this.store.work((unit) => this.#track(this.#handle(unit)), {
			concurrency: this.#options.concurrency,
			error: (error) => this.log.error({ store: this.store.where, err: { message: error.message, code: (error as { code?: string }).code } }, `${this.store.name} refused to hand out work: retrying`),
		});
		if (this.store.shared) {
			this.#reconcileTimer = setInterval(() => this.#resync(true), RECONCILE_MS);
			this.#reconcileTimer.unref();
		}
		this.#pruneTimer = setInterval(() => void this.#prune(), Math.min(this.#options.retentionMs, 3_600_000));
		this.#pruneTimer.unref();
		void this.#prune();
	}

	get closing(): boolean {
		return this.#closing;
	}

	get unavailable(): string | undefined {
		return this.store.unavailable;
	}

	// ---- apps ----

	async #loadAll(): Promise<void> {
		const ids = new Set([...(await this.store.appIds()), ...this.#apps.keys()]);
		await Promise.all([...ids].map((id) => this.#load(id)));
	}

	/** Load every app again until it succeeds (backed off); with `wakeWebhooks`, wake their webhooks after. */
	#resync(wakeWebhooks = false): void {
		if (this.#resyncing !== undefined || this.#closing) return;
		this.#resyncing = (async () => {
			for (let attempt = 1; !this.#closing; attempt++) {
				try {
					await this.#loadAll();
					break;
				} catch (error) {
					if (attempt === 1) this.log.warn({ err: { message: (error as Error).message } }, `cannot load the apps from ${this.store.name} yet: retrying`);
					await sleep(backoffDelay(attempt, RESYNC_RETRY), this.#abandon.signal);
				}
			}
			if (wakeWebhooks) for (const live of this.#apps.values()) this.#wakeWebhook(live);
		})().finally(() => (this.#resyncing = undefined));
	}

	/**
	 * Bring app `id` in line with what the store holds now, and return that (undefined: no such app).
	 * `prepared` is the manager a PUT here checked for `app`: taken if the store still holds exactly that.
	 * Rejects when the store could not be asked.
	 */
	#load(id: string, prepared?: { app: StoredApp; manager: ApnsManager }): Promise<StoredApp | undefined> {
		if (prepared === undefined) {
			const queued = this.#queuedLoad.get(id);
			if (queued !== undefined) return queued;
		}
		const next: Promise<StoredApp | undefined> = (this.#loading.get(id) ?? Promise.resolve()).then(async () => {
			if (this.#queuedLoad.get(id) === next) this.#queuedLoad.delete(id);
			let app: StoredApp | undefined;
			try {
				app = await this.store.getApp(id);
				if (app !== undefined && this.store.inDoubt !== undefined && !this.#counted.has(`${app.id}\0${app.gen}`)) await this.#countInDoubt(app);
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

	/** A store that knows at start what was in flight when its last daemon stopped: count it, once per incarnation. */
	async #countInDoubt(app: StoredApp): Promise<void> {
		const inDoubt = await this.store.inDoubt!(app);
		this.#counted.add(`${app.id}\0${app.gen}`);
		this.metrics.inDoubt.set({ app: app.id }, inDoubt);
		if (inDoubt > 0) this.log.warn({ app: app.id, inDoubt }, 'notifications were in flight when the daemon stopped: they are sent again (APNs may have some already)');
	}

	#apply(id: string, app: StoredApp | undefined, prepared: ApnsManager | undefined): void {
		const live = this.#apps.get(id);
		if (app === undefined) {
			if (live === undefined) return;
			this.#apps.delete(id);
			// Deleted: what its manager holds is dropped with it (the DELETE counted it).
			live.manager?.destroy();
			this.#webhooks.forget(live.app.gen);
			this.metrics.forget(id);
			if (!this.#deleting.has(id)) this.log.info({ app: id }, 'app deleted');
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
				// Its notifications stay stored; a PUT with working credentials starts it.
				stopped = (error as Error).message;
				this.log.error({ app: id, code: (error as { code?: string }).code, err: { message: stopped } }, 'app not started');
			}
		}
		let webhookSecret: string | undefined;
		try {
			webhookSecret = openSecrets(id, app.sealed, this.#box).webhookSecret;
		} catch {
			webhookSecret = undefined; // its credentials do not open: it is stopped, and its webhook waits (below)
		}
		const next: LiveApp = { app, settings, manager, stopped, webhookSecret, health: new AppHealth().track(manager, stopped) };
		this.#apps.set(id, next);
		// It could not send before (stopped): its units waiting out a delay go now.
		if (manager !== undefined && live !== undefined && live.manager === undefined) this.#work?.resume?.(id);
		if (live !== undefined) {
			// Another incarnation: its work is dropped. An update: the old manager finishes what it holds
			// (bounded); what it cannot is handed back and sent by the new one.
			if (live.app.gen !== app.gen) {
				live.manager?.destroy();
				this.#webhooks.forget(live.app.gen);
			} else if (live.manager !== undefined) {
				const old = live.manager;
				this.#retiring.add(old);
				void old
					.close({ timeoutMs: this.#options.shutdownTimeoutMs })
					.catch(() => {})
					.finally(() => this.#retiring.delete(old));
			}
		}
		if (settings.webhook === undefined) this.#webhooks.forget(app.gen);
		else if (this.#started) this.#wakeWebhook(next);
		this.log.info({ app: id, environment: settings.environment, auth: settings.auth }, live === undefined ? 'app loaded' : 'app reloaded');
	}

	/** The app `id` as the store holds it now (a shared store: this daemon's copy brought in line first), or 404; 503 when the store cannot be asked. */
	async #live(id: string): Promise<LiveApp> {
		// A store for this daemon alone changes only through it: its copy is the store's (no read per request).
		const known = this.#apps.get(id);
		if (!this.store.shared && known !== undefined && !this.#loading.has(id)) return known;
		let stored: StoredApp | undefined;
		try {
			stored = await this.#load(id);
		} catch (error) {
			throw this.#unavailable(error);
		}
		const live = this.#apps.get(id);
		if (stored === undefined || live === undefined || live.app.gen !== stored.gen) throw new RequestError(404, 'unknown_app', `no app ${id}`, 'appId');
		return live;
	}

	/** The app of incarnation `gen` (webhooks name apps by it). */
	#byGen(gen: string): StoredApp {
		for (const live of this.#apps.values()) if (live.app.gen === gen) return live.app;
		throw new Error(`no app of incarnation ${gen} is loaded`);
	}

	#wakeWebhook(live: LiveApp): void {
		const hook = live.settings.webhook;
		if (hook === undefined || this.#closing) return;
		// A signed webhook whose secret cannot be opened waits (never delivered unsigned) until a PUT fixes it.
		if (hook.signed === true && live.webhookSecret === undefined) return;
		this.#webhooks.wake(live.app.gen, hook.url, live.app.id, live.webhookSecret);
	}

	// ---- API operations (api.ts) ----

	/** Provision or update an app. */
	async putApp(id: string, input: AppInput): Promise<Record<string, unknown>> {
		const { settings, sealed, manager } = prepareApp(id, input, this.#box, this.#tokens);
		let stored: { app: StoredApp; created: boolean };
		try {
			stored = await this.store.putApp(id, JSON.stringify(settings), sealed, Date.now());
		} catch (error) {
			void manager.close({ timeoutMs: 0 }).catch(() => {});
			throw this.#unavailable(error);
		}
		// This daemon takes the manager it checked; others load the app when told.
		await this.#load(id, { app: stored.app, manager }).catch(() => {});
		this.log.info({ app: id, created: stored.created, auth: settings.auth, environment: settings.environment }, stored.created ? 'app provisioned' : 'app updated');
		return this.#view(this.#apps.get(id) ?? { app: stored.app, settings, manager: undefined, stopped: undefined, webhookSecret: undefined, health: new AppHealth() });
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
		// Before the store is asked: a load that runs meanwhile (a unit's) must not log it too.
		this.#deleting.add(id);
		try {
			try {
				dropped = await this.store.deleteApp(id);
			} catch (error) {
				throw this.#unavailable(error);
			}
			if (dropped === undefined) throw new RequestError(404, 'unknown_app', `no app ${id}`, 'appId');
			this.log.info({ app: id, dropped }, 'app deleted');
			await this.#load(id).catch(() => {}); // the others, and this daemon's next request, load it anyway
		} finally {
			this.#deleting.delete(id);
		}
		return { dropped };
	}

	async #view(live: LiveApp): Promise<Record<string, unknown>> {
		let pending: number;
		let oldest: number | undefined;
		try {
			[[pending], [oldest]] = (await Promise.all([this.store.pending([live.app]), this.store.oldestPending([live.app])])) as [[number], [number | undefined]];
		} catch (error) {
			throw this.#unavailable(error);
		}
		return appView(live.app.id, live.settings, {
			createdAt: live.app.createdAt,
			updatedAt: live.app.updatedAt,
			pending,
			sending: live.manager !== undefined,
			stopped: live.stopped,
			connected: live.health.connections > 0,
			lastError: live.health.lastError,
			oldestPendingSeconds: oldest === undefined ? undefined : Math.max(0, Math.round((Date.now() - oldest) / 1000)),
		});
	}

	/** Accept notifications: 202 once the store has them. */
	async accept(id: string, notifications: readonly NotificationInput[], idempotency: Idempotency | undefined): Promise<{ status: number; body: unknown }> {
		// Every entry checked before anything is written: a request is all or nothing.
		const entries = notifications.map((n, i) => ({ body: storedBody(n, i), tokens: Buffer.from(n.tokens.join(''), 'hex') }));
		return this.#accept(id, entries, idempotency, (result) => ({ accepted: result.accepted, ids: result.ids }));
	}

	async broadcast(id: string, input: BroadcastInput, idempotency: Idempotency | undefined): Promise<{ status: number; body: unknown }> {
		const body = broadcastBody(input);
		return this.#accept(id, [{ body, tokens: BROADCAST_TOKEN }], idempotency, (result) => ({ id: result.ids[0] }));
	}

	async broadcastStatus(id: string, broadcastId: string): Promise<{ id: string; pending: number; sent: number; failed: Array<{ status: number; reason: string }> }> {
		const view = await this.status(id, broadcastId);
		return { id: view.id, pending: view.pending, sent: view.sent, failed: view.failed.map((f) => ({ status: f.status, reason: f.reason })) };
	}

	/** Store `entries` with the request's idempotency answer; `answer` is the body of a fresh 202. */
	async #accept(id: string, entries: NewNotification[], idempotency: Idempotency | undefined, answer: (result: { accepted: number; ids: readonly string[] }) => unknown): Promise<{ status: number; body: unknown }> {
		const live = await this.#live(id);
		let result: Awaited<ReturnType<PushStore['accept']>>;
		try {
			if (idempotency !== undefined) {
				const earlier = await this.store.idempotent(live.app, idempotency.key);
				if (earlier !== undefined) return answered(earlier, idempotency, answer);
			}
			result = await this.store.accept(live.app, entries, Date.now(), idempotency);
		} catch (error) {
			throw this.#unavailable(error);
		}
		// Deleted (or deleted and made again) meanwhile: nothing was accepted.
		if (result === undefined) throw new RequestError(409, 'app_changed', `app ${id} was deleted or re-created while the request was stored: nothing was accepted; retry`, 'appId');
		if (!result.fresh) return answered(result, idempotency!, answer);
		this.metrics.accepted.inc({ app: id }, result.accepted);
		return { status: 202, body: answer(result) };
	}

	async status(id: string, notificationId: string): Promise<NotificationView> {
		const live = await this.#live(id);
		let s: Awaited<ReturnType<PushStore['status']>>;
		try {
			s = await this.store.status(live.app, notificationId);
		} catch (error) {
			throw this.#unavailable(error);
		}
		if (s === undefined) throw new RequestError(404, 'unknown_notification', `no notification ${notificationId} for app ${id} (or its outcome was pruned)`, 'notificationId');
		return notificationView(notificationId, s, s.failures);
	}

	/** A page of feedback after `after`. Reading deletes nothing: the page's end may be acknowledged from now on. */
	async feedback(id: string, after: number, limit: number): Promise<FeedbackPage> {
		const live = await this.#live(id);
		try {
			const records = await this.store.feedback(live.app, after, limit);
			if (records.length > 0) await this.store.feedbackServed(live.app, after, records[records.length - 1]!.seq);
			return feedbackPage(records, after);
		} catch (error) {
			throw this.#unavailable(error);
		}
	}

	/**
	 * The reader has everything up to `upTo` (a `next` the API handed out): it may go — with a webhook,
	 * once the webhook has it too. 409 for a number past what was handed out: nothing is deleted.
	 */
	async ackFeedback(id: string, upTo: number): Promise<{ acknowledged: number }> {
		const live = await this.#live(id);
		let done: boolean;
		try {
			done = await this.store.feedbackAck(live.app, upTo, live.settings.webhook !== undefined);
		} catch (error) {
			throw this.#unavailable(error);
		}
		if (!done) throw new RequestError(409, 'not_handed_out', `upTo ${upTo} is past the feedback the API has handed out for app ${id}: acknowledge a "next" a GET returned`, 'body/upTo');
		return { acknowledged: upTo };
	}

	// ---- Live Activity channels (APNs holds them: nothing is stored here) ----

	async createChannel(id: string, storagePolicy: 0 | 1): Promise<{ channelId: string; storagePolicy: 0 | 1 }> {
		const manager = await this.#sending(id);
		return { channelId: await apnsCall(() => manager.createChannel({ storagePolicy })), storagePolicy };
	}

	async listChannels(id: string): Promise<{ channels: string[] }> {
		const manager = await this.#sending(id);
		return { channels: await apnsCall(() => manager.listChannels()) };
	}

	async getChannel(id: string, channelId: string): Promise<{ channelId: string; storagePolicy: 0 | 1 }> {
		const manager = await this.#sending(id);
		const info = await apnsCall(() => manager.getChannel(channelId));
		return { channelId: info.id, storagePolicy: info.storagePolicy };
	}

	async deleteChannel(id: string, channelId: string): Promise<{ deleted: string }> {
		const manager = await this.#sending(id);
		await apnsCall(() => manager.deleteChannel(channelId));
		return { deleted: channelId };
	}

	/** The manager of app `id`: 404 when there is no such app, 409 while it is stopped. */
	async #sending(id: string): Promise<ApnsManager> {
		const live = await this.#live(id);
		if (live.manager === undefined) throw new RequestError(409, 'app_stopped', `app ${id} is stopped (${live.stopped ?? 'its credentials do not load'}): PUT working credentials first`, 'appId');
		return live.manager;
	}

	// ---- scoped API keys ----

	async keyFor(key: string): Promise<ScopedKey | undefined> {
		// Only what could be one of ours is looked up: a stranger's guess costs no read of the store.
		if (!SCOPED_KEY.test(key)) return undefined;
		let stored: StoredKey | undefined;
		try {
			stored = await this.store.keyByHash(keyHash(key));
		} catch (error) {
			throw this.#unavailable(error);
		}
		return stored === undefined ? undefined : { id: stored.id, apps: new Set(stored.apps), scopes: new Set(stored.scopes) };
	}

	/** A new key for `apps` and `scopes`: returned once, stored as its SHA-256. */
	async createKey(apps: readonly string[], scopes: readonly KeyScope[]): Promise<KeyView & { key: string }> {
		// For apps that exist (a key names ids; deleting an app deletes the keys that name it).
		for (const [i, id] of apps.entries()) {
			let app: StoredApp | undefined;
			try {
				app = await this.store.getApp(id);
			} catch (error) {
				throw this.#unavailable(error);
			}
			if (app === undefined) throw new RequestError(404, 'unknown_app', `no app ${id}: create it first`, `body/apps/${i}`);
		}
		const key = `awk_${randomBytes(32).toString('base64url')}`;
		const stored: StoredKey = { id: randomUUID(), hash: keyHash(key), apps: [...new Set(apps)], scopes: [...new Set(scopes)], createdAt: Date.now() };
		try {
			await this.store.putKey(stored);
		} catch (error) {
			throw this.#unavailable(error);
		}
		this.log.info({ key: stored.id, apps: stored.apps, scopes: stored.scopes }, 'API key created');
		return { ...keyView(stored), key };
	}

	async listKeys(): Promise<KeyView[]> {
		try {
			return (await this.store.keys()).map(keyView);
		} catch (error) {
			throw this.#unavailable(error);
		}
	}

	async deleteKey(id: string): Promise<{ deleted: string }> {
		let done: boolean;
		try {
			done = await this.store.deleteKey(id);
		} catch (error) {
			throw this.#unavailable(error);
		}
		if (!done) throw new RequestError(404, 'unknown_key', `no key ${id}`, 'keyId');
		this.log.info({ key: id }, 'API key deleted');
		return { deleted: id };
	}

	/** A failed store call, as the API answers it (the client retries; nothing was half done that a retry would not fix). */
	#unavailable(error: unknown): Error {
		if (error instanceof RequestError) return error;
		this.log.warn({ store: this.store.where, err: { message: (error as Error).message } }, `${this.store.name} refused a request`);
		return new RequestError(503, 'storage_unavailable', `${this.store.name} did not take the request: retry`);
	}

	// ---- work ----

	#track<T>(working: Promise<T>): Promise<T> {
		this.#working.add(working);
		void working.finally(() => this.#working.delete(working)).catch(() => {});
		return working;
	}

	/** Send a unit's unsettled tokens through its app's manager and store the outcomes. */
	async #handle(unit: WorkUnit): Promise<WorkResult> {
		// Not sent this time: nothing of it reached APNs.
		const untouched = { retryInMs: backoffDelay(unit.attempts + 1, UNIT_RETRY), untouched: true } as const;
		if (this.store.unavailable !== undefined) {
			// The store is away for this daemon: the unit goes back, backed off — never sent after a wait its
			// lease may not have outlived. The wait keeps this daemon from taking unit after unit meanwhile.
			await this.#storeBack(STORE_WAIT_MS);
			return untouched;
		}
		let stored: StoredApp | undefined;
		try {
			stored = await this.#load(unit.app);
		} catch {
			return untouched; // a daemon that cannot tell must not drop it
		}
		// Deleted, or deleted and made again: its work goes with it.
		if (stored === undefined || stored.gen !== unit.gen) return 'gone';
		const live = this.#apps.get(unit.app);
		if (live?.app.gen !== unit.gen) return untouched;
		const manager = live.manager;
		const now = Date.now();
		const deadline = this.#deadline(unit);
		// Its expiration or its retry window passed (while its app was stopped, or between rounds): not sent.
		if (now >= deadline) return this.#expire(unit);
		// Stopped (its credentials do not load): it waits, backed off, until a PUT starts the app, or its deadline.
		if (manager === undefined) return { retryInMs: Math.min(untouched.retryInMs, deadline - now), untouched: true };
		const count = unit.tokens.length / 32;
		const open = count - popcount(unit.settled);
		if (open > 0 && unit.again) {
			this.metrics.inDoubt.inc({ app: unit.app }, open);
			this.log.warn({ app: unit.app, job: unit.notification, inDoubt: open, settled: count - open }, 'taking over a job that was started before: its unsettled tokens are sent again (APNs may have some already)');
		}
		// Transient failures get another round after this delay, unless it would start past the deadline:
		// then they are recorded, with APNs' answer.
		const nextRound = Math.min(backoffDelay(unit.attempts + 1, ROUND_RETRY), deadline - now);
		const run = this.#recorder(unit, deadline - nextRound);
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
			let outcome: Promise<SendResult>;
			try {
				outcome = dispatch(manager, h, unit.body);
			} catch (error) {
				const code = (error as { code?: string }).code;
				// Closed under us (an update, a shutdown): handed back. Anything else refuses it for good.
				if (code === 'APNS_CLOSED') run.dropped += i.length;
				else run.refused(i, h, code ?? 'Refused');
				return;
			}
			settled.push(outcome.then((result) => run.record(i, h, result)));
		};
		for (let i = 0; i < count; i++) {
			if ((unit.settled[i >> 3]! & (1 << (i & 7))) !== 0) continue;
			indices.push(i);
			hex.push(unit.tokens.toString('hex', i * 32, i * 32 + 32));
			if (indices.length === MESSAGE_TOKENS) send();
		}
		if (indices.length > 0) send();
		await Promise.all(settled);
		const later = { retryInMs: backoffDelay(unit.attempts + 1, UNIT_RETRY) };
		try {
			await run.flush();
		} catch {
			return later; // the engine gave up waiting for the store (shutdown): the rest is in doubt for the next holder
		}
		// Deleted meanwhile (its manager destroyed with what it held): nothing to hand back or count.
		if (this.#apps.get(unit.app)?.app.gen !== unit.gen) return 'gone';
		if (run.dropped > 0) {
			// Some may have been written to APNs before the manager closed: counted in doubt here (unless the
			// manager never wrote a request at all, as with an unreachable gateway).
			const inDoubt = manager.stats.written > 0 ? run.dropped : 0;
			this.metrics.inDoubt.inc({ app: unit.app }, inDoubt);
			this.log.warn({ app: unit.app, job: unit.notification, handedBack: run.dropped, inDoubt }, 'job handed back unfinished (its manager closed): the rest is sent by the next run');
			return 'handedBack';
		}
		// Transient answers: another round. When every token got one, the gateway is the app's trouble and
		// its other work waits too; when only some did (429 for one device), the app's other work goes on.
		// (Within the window: a round that ran long must not start the next past the deadline, unsent.)
		if (run.deferred > 0 && run.recorded + run.deferred >= handed) return { retryInMs: Math.max(0, Math.min(nextRound, deadline - Date.now() - 1)), onlyThis: run.recorded > 0 };
		// Every token handed to the manager has its outcome stored, or the unit runs again for the rest.
		if (run.recorded < handed) return later;
		return 'done';
	}

	/** When `unit` stops being retried: its expiration, or `retryForMs` after it was accepted, whichever is first (ms). */
	#deadline(unit: WorkUnit): number {
		const expiration = unit.body.options.expiration;
		const until = unit.acceptedAt + this.#options.retryForMs;
		// 0: APNs does not store it (one attempt there); here it is still retried within the window.
		return expiration === undefined || expiration === 0 ? until : Math.min(until, expiration * 1000);
	}

	/** `unit` is past its deadline before it could be sent (again): its unsettled tokens are recorded failed, {@link EXPIRED}. */
	async #expire(unit: WorkUnit): Promise<WorkResult> {
		const run = this.#recorder(unit, 0);
		const indices: number[] = [];
		const hex: string[] = [];
		for (let i = 0; i < unit.tokens.length / 32; i++) {
			if ((unit.settled[i >> 3]! & (1 << (i & 7))) !== 0) continue;
			indices.push(i);
			hex.push(unit.tokens.toString('hex', i * 32, i * 32 + 32));
		}
		run.refused(indices, hex, EXPIRED);
		try {
			await run.flush();
		} catch {
			return { retryInMs: backoffDelay(unit.attempts + 1, UNIT_RETRY) }; // the engine gave up waiting for the store (shutdown)
		}
		return this.#apps.get(unit.app)?.app.gen === unit.gen ? 'done' : 'gone';
	}

	/** A recorder of `unit`'s outcomes: transient failures before `retryUntil` (ms) are left for another round. */
	#recorder(unit: WorkUnit, retryUntil: number): Recorder {
		return new Recorder(this.store, unit, retryUntil, {
			delivered: (n) => this.metrics.delivered.inc({ app: unit.app }, n),
			failed: (reason, n, status) => {
				this.metrics.failed.inc({ app: unit.app, reason }, n);
				this.#apps.get(unit.app)?.health.error(status, reason);
			},
			feedback: (n) => {
				this.metrics.feedback.inc({ app: unit.app }, n);
				const now = this.#apps.get(unit.app);
				if (now !== undefined) this.#wakeWebhook(now);
			},
			// Once, then every tenth attempt: an outage must not fill the log.
			retrying: (error, attempt) => {
				if (attempt === 1 || attempt % 10 === 0) this.log.warn({ app: unit.app, job: unit.notification, attempt, err: { message: error.message } }, `cannot record outcomes in ${this.store.name} yet: retrying`);
			},
			transient: (status, reason) => this.#apps.get(unit.app)?.health.error(status, reason),
		}, this.#abandon.signal);
	}

	/** Until the store is reachable again, at most `ms` (or until the engine stops waiting for it). */
	#storeBack(ms: number): Promise<void> {
		if (this.store.unavailable === undefined || this.#abandon.signal.aborted) return Promise.resolve();
		return new Promise<void>((resolve) => {
			const signal = this.#abandon.signal;
			const done = (): void => {
				clearTimeout(timer);
				signal.removeEventListener('abort', done);
				const i = this.#backWaiters.indexOf(done);
				if (i >= 0) this.#backWaiters.splice(i, 1);
				resolve();
			};
			const timer = setTimeout(done, ms);
			timer.unref();
			this.#backWaiters.push(done);
			signal.addEventListener('abort', done, { once: true });
		});
	}

	async #prune(): Promise<void> {
		const before = Date.now() - this.#options.retentionMs;
		try {
			const pruned = await this.store.prune(before, [...this.#apps.values()].map((a) => ({ app: a.app, webhook: a.settings.webhook !== undefined })));
			if (pruned > 0) this.log.info({ pruned }, 'old outcomes pruned');
		} catch (error) {
			this.log.warn({ err: { message: (error as Error).message } }, 'prune failed (tried again at the next)');
		}
	}

	/**
	 * Stop: the API answers 503 at once, no new unit is taken, units in progress get `shutdownTimeoutMs`
	 * to finish; then managers hand back what they hold (bounded), outcomes get a last chance to be
	 * stored (bounded), and the store is closed. What is left is the store's for the next daemon.
	 */
	async close(): Promise<void> {
		if (this.#closing) return;
		this.#closing = true;
		clearInterval(this.#pruneTimer);
		clearInterval(this.#reconcileTimer);
		this.#webhooks.close();
		// Every phase inside shutdownTimeoutMs: graceful, then hand back, then the last flushes.
		const timeout = this.#options.shutdownTimeoutMs;
		const end = performance.now() + timeout;
		const abandonAt = end - Math.min(ABANDON_MS, timeout * 0.1);
		const handBackAt = abandonAt - Math.min(HAND_BACK_MS, timeout * 0.3);
		const stopping = this.#work?.stop(end) ?? Promise.resolve();
		// Graceful: units in progress finish.
		await untilDone(this.#working, handBackAt);
		// Out of time: managers (those an update is retiring too) hand back what they hold, the units go back to the store.
		const managers = [...[...this.#apps.values()].map((a) => a.manager), ...this.#retiring];
		await withDeadline(Promise.all(managers.map((m) => m?.close({ timeoutMs: 0 }).catch(() => {}))), Math.max(0, abandonAt - performance.now()));
		await untilDone(this.#working, abandonAt);
		// The store has not taken the outcomes: they stay in doubt (the next holder sends them again).
		this.#abandon.abort();
		await untilDone(this.#working, end);
		await withDeadline(stopping, Math.max(0, end - performance.now()));
		const apps = [...this.#apps.values()];
		let left: number | undefined;
		try {
			left = (await withDeadline(this.store.pending(apps.map((a) => a.app)), Math.max(100, end - performance.now())))?.reduce((sum, n) => sum + n, 0);
		} catch {
			left = undefined;
		}
		await this.store.close();
		this.log.info({ pending: left }, left !== undefined && left > 0 ? 'stopped; pending notifications are kept for the next start' : 'stopped');
	}
}

/** The outcomes of one unit's tokens, stored as they come, batched. */
export class Recorder {
	readonly #store: PushStore;
	readonly #unit: WorkUnit;
	readonly #events: RecorderEvents;
	readonly #abandoned: AbortSignal;
	readonly #retryUntil: number;
	/** Delivered since the last flush. */
	#sent: Uint8Array;
	#anySent = false;
	#failures: TokenFailure[] = [];
	/** Outcomes waiting for the next flush. */
	#waiting = 0;
	#timer: NodeJS.Timeout | undefined;
	#chain: Promise<void> = Promise.resolve();
	/** Tokens a closing manager handed back unsent: the unit is handed back. */
	dropped = 0;
	/** Tokens whose outcome (delivered or failed) was taken for storing. */
	recorded = 0;
	/** Tokens that failed transiently and are left for another round (not stored). */
	deferred = 0;

	/**
	 * @param retryUntil - a transient failure ({@link isTransient}) before this time (ms) is left for
	 *   another round; from then on it is recorded like any other.
	 * @param abandoned - aborted when the engine stops waiting for the store (its flushes give up).
	 */
	constructor(store: PushStore, unit: WorkUnit, retryUntil: number, events: RecorderEvents, abandoned: AbortSignal) {
		this.#store = store;
		this.#unit = unit;
		this.#retryUntil = retryUntil;
		this.#events = events;
		this.#abandoned = abandoned;
		this.#sent = new Uint8Array(Math.ceil(unit.tokens.length / 32 / 8));
	}

	/** The outcome of one message: `indices[i]` is the unit index of its i-th token (`tokens[i]`, hex). */
	record(indices: readonly number[], tokens: readonly string[], result: SendResult): void {
		// A token may appear twice in a notification: each outcome takes one of its indices.
		const byToken = new Map<string, number[]>();
		for (let i = 0; i < tokens.length; i++) {
			const list = byToken.get(tokens[i]!);
			if (list === undefined) byToken.set(tokens[i]!, [indices[i]!]);
			else list.push(indices[i]!);
		}
		for (const s of result.sent) {
			const index = byToken.get(s.token)?.shift();
			if (index === undefined) continue;
			this.#sent[index >> 3]! |= 1 << (index & 7);
			this.#anySent = true;
			this.#waiting++;
			this.recorded++;
		}
		const retrying = Date.now() < this.#retryUntil;
		for (const f of result.failed) {
			const index = byToken.get(f.token)?.shift();
			if (index === undefined) continue;
			if (retrying && isTransient(f.status, f.reason)) {
				this.deferred++;
				this.#events.transient(f.status, f.reason);
				continue;
			}
			this.#failures.push({ index, token: f.token, status: f.status, reason: f.reason, feedbackAt: f.status === 410 ? (f.timestamp ?? new Date()).getTime() : undefined });
			this.#waiting++;
			this.recorded++;
		}
		this.dropped += result.dropped.length;
		if (this.#waiting >= FLUSH_OUTCOMES) void this.flush().catch(() => {});
		else if (this.#waiting > 0) this.#timer ??= setTimeout(() => void this.flush().catch(() => {}), FLUSH_MS);
	}

	/** Tokens that fail before reaching a manager (it refused the message for good). */
	refused(indices: readonly number[], tokens: readonly string[], reason: string): void {
		this.record(indices, tokens, { sent: [], failed: tokens.map((token) => ({ token, status: 0, reason })), dropped: [] });
	}

	/** Store what settled since the last flush (flushes run one after another). */
	flush(): Promise<void> {
		clearTimeout(this.#timer);
		this.#timer = undefined;
		if (!this.#anySent && this.#failures.length === 0) return this.#chain;
		const sent = this.#sent;
		const failures = this.#failures;
		this.#sent = new Uint8Array(sent.length);
		this.#anySent = false;
		this.#failures = [];
		this.#waiting = 0;
		this.#chain = this.#chain.then(() => this.#write(sent, failures));
		return this.#chain;
	}

	async #write(sent: Uint8Array, failures: readonly TokenFailure[]): Promise<void> {
		for (let attempt = 1; ; attempt++) {
			try {
				const done = await this.#store.settle(this.#unit, sent, failures, Date.now());
				if (done.sent > 0) this.#events.delivered(done.sent);
				const reasons = new Map<string, { n: number; status: number }>();
				for (const f of done.failed) reasons.set(f.reason, { n: (reasons.get(f.reason)?.n ?? 0) + 1, status: f.status });
				for (const [reason, { n, status }] of reasons) this.#events.failed(reason, n, status);
				if (done.feedback > 0) this.#events.feedback(done.feedback);
				return;
			} catch (error) {
				// Outcomes not stored stay in doubt: if the engine gives up, whoever takes the unit next sends them again.
				if (this.#abandoned.aborted) throw error;
				this.#events.retrying(error as Error, attempt);
				await sleep(backoffDelay(attempt, FLUSH_RETRY), this.#abandoned);
			}
		}
	}
}

/** What a {@link Recorder} tells the engine (metrics, webhooks, logs). */
export interface RecorderEvents {
	delivered(count: number): void;
	/** `count` tokens failed for `reason` (APNs' `status`, or 0 when none answered). */
	failed(reason: string, count: number, status: number): void;
	feedback(count: number): void;
	/** A flush failed (the store unreachable): it is retried. */
	retrying(error: Error, attempt: number): void;
	/** A token failed transiently and is left for another round: APNs' `status` (0: none answered) and `reason`. */
	transient(status: number, reason: string): void;
}

/**
 * Send what a unit holds for `tokens`: a notification to them, or (a body with a channel, stored with
 * {@link BROADCAST_TOKEN}) a broadcast, whose outcome is the placeholder token's.
 * @throws what `send()` or `broadcast()` throws at the call.
 */
function dispatch(manager: ApnsManager, tokens: string[], body: StoredBody): Promise<SendResult> {
	const channel = body.options.channel;
	if (channel === undefined) return manager.send(storedMessage(tokens, body)).settled;
	const { expiration, priority } = body.options;
	const receipt = manager.broadcast(channel, body.payload, { ...(expiration === undefined ? {} : { expiration }), ...(priority === undefined ? {} : { priority: priority as 1 | 5 | 10 }) });
	const token = tokens[0]!;
	return receipt.settled.then((r) => ({
		sent: r.sent.map((s) => ({ token, apnsId: s.apnsId })),
		failed: r.failed.map((f) => ({ token, status: f.status, reason: f.reason })),
		dropped: r.dropped.map(() => token),
	}));
}

/**
 * A channel management call made for the API: APNs' refusals become the API's answers — 404 for a
 * channel APNs does not know, 409 at the channel limit, 502 for another refusal, 504 when APNs did not
 * answer (each naming APNs' status and reason).
 */
async function apnsCall<T>(call: () => Promise<T>): Promise<T> {
	try {
		return await call();
	} catch (error) {
		if (!(error instanceof ChannelError)) throw error;
		if (error.reason === 'ChannelNotRegistered') throw new RequestError(404, 'unknown_channel', `APNs knows no such channel (400 ChannelNotRegistered; apns-request-id ${error.requestId})`, 'params/channelId');
		if (error.reason === 'CannotCreateChannelConfig') throw new RequestError(409, 'channel_limit', `APNs refused: the app has as many channels as it may (10,000 per environment); delete unused ones (apns-request-id ${error.requestId})`, 'request');
		if (error.status === 0) throw new RequestError(504, 'apns_unanswered', `APNs did not answer (${error.reason}) through every attempt: retry later`, 'request');
		throw new RequestError(502, 'apns_refused', `APNs refused: ${error.status} ${error.reason} (apns-request-id ${error.requestId})`, 'request');
	}
}

/**
 * Reason recorded for a notification whose `expiration`, or the daemon's retry window (`--retry-for`),
 * passed before it could be sent again (its app stopped, or waiting for its next round).
 */
export const EXPIRED = 'Expired';

/** Reasons with status 0 that say no answer came (the library's): the gateway, not the notification. */
const UNANSWERED: ReadonlySet<string> = new Set(['RequestTimeout', 'ConnectionLost', 'StreamReset']);

/**
 * An answer that says "not now" rather than "never": 429, 500, 503, IdleTimeout, or no answer at all.
 * The daemon retries these until the notification's deadline.
 */
export function isTransient(status: number, reason: string): boolean {
	return status === 429 || status === 500 || status === 503 || (status === 400 && reason === 'IdleTimeout') || (status === 0 && UNANSWERED.has(reason));
}

/**
 * Re-seal every stored credential under `next`, the deployment's secret until now being `previous`
 * (undefined: there was none, the credentials are stored unsealed): all apps and the secret's settings
 * at once (`apns-worker serve --rotate-secret`). Daemons still running with the old secret can no longer
 * open them: restart each with the new one. The number of apps re-sealed.
 * @throws {@link ServerError} `APNS_SERVER_SECRET` when `previous` is not the secret the credentials were sealed with.
 */
export async function rotateSecret(store: PushStore, previous: string | undefined, next: string): Promise<number> {
	const check = await store.meta('secret-check');
	let old: SecretBox;
	if (previous === undefined || previous === '') {
		if (check !== undefined) throw new ServerError('APNS_SERVER_SECRET', `the credentials in ${store.where} are sealed: give the secret they were sealed with in APNS_WORKER_SECRET_OLD`);
		old = SecretBox.insecure();
	} else {
		const salt = await store.meta('secret-salt');
		old = SecretBox.fromSecret(previous, Buffer.from(salt ?? '', 'base64'), { plainAllowed: !store.shared });
		if (check === undefined || !old.verify(check)) throw new ServerError('APNS_SERVER_SECRET', `APNS_WORKER_SECRET_OLD is not the secret the credentials in ${store.where} were sealed with`);
	}
	const salt = randomBytes(16).toString('base64');
	const box = SecretBox.fromSecret(next, Buffer.from(salt, 'base64'), { plainAllowed: !store.shared });
	return reseal(store, () => old, box, { 'secret-salt': salt, 'secret-check': box.check() });
}

/**
 * Seal with `box` every app's credentials that `opener` opens (undefined: leave that app as it is), and
 * set `meta`, at once; read again and retried while apps change meanwhile. The number of apps sealed.
 */
async function reseal(store: PushStore, opener: (sealed: string) => SecretBox | undefined, box: SecretBox, meta: Readonly<Record<string, string>>): Promise<number> {
	for (let attempt = 1; ; attempt++) {
		const apps: Array<{ id: string; before: string; after: string }> = [];
		for (const id of await store.appIds()) {
			const app = await store.getApp(id);
			const from = app?.sealed === undefined ? undefined : opener(app.sealed);
			if (app?.sealed !== undefined && from !== undefined) apps.push({ id, before: app.sealed, after: box.seal(from.open(app.sealed, id), id) });
		}
		if (apps.length === 0 && Object.keys(meta).length === 0) return 0;
		if (await store.reseal(apps, meta, Date.now())) return apps.length;
		if (attempt === 5) throw new ServerError('APNS_SERVER_CONFIG', `apps in ${store.where} kept changing while their credentials were re-sealed: try again when no app is being updated`);
	}
}

/** The deployment's secret box: the first daemon stores the salt and a check value, the others must match. */
async function secretBox(store: PushStore, secret: string | undefined, insecure: boolean): Promise<SecretBox | undefined> {
	const given = secret !== undefined && secret !== '';
	if (store.shared && !given) throw new ServerError('APNS_SERVER_SECRET', 'APNS_WORKER_SECRET is required with --redis: credentials in the shared Redis are always encrypted');
	if (!given) {
		if ((await store.meta('secret-check')) !== undefined) throw new ServerError('APNS_SERVER_SECRET', `the credentials in ${store.where} are encrypted: start the daemon with the APNS_WORKER_SECRET they were sealed with`);
		return insecure ? SecretBox.insecure() : undefined;
	}
	const salt = await store.metaOnce('secret-salt', () => randomBytes(16).toString('base64'));
	const box = SecretBox.fromSecret(secret, Buffer.from(salt, 'base64'), { plainAllowed: !store.shared });
	const check = await store.metaOnce('secret-check', () => box.check());
	if (!box.verify(check)) throw new ServerError('APNS_SERVER_SECRET', `APNS_WORKER_SECRET is not the secret the credentials in ${store.where} were sealed with`);
	return box;
}

/** What a scoped key looks like: made by {@link Engine.createKey}. */
const SCOPED_KEY = /^awk_[A-Za-z0-9_-]{43}$/;

/** What a store keeps of a scoped key: its SHA-256, hex. */
function keyHash(key: string): string {
	return createHash('sha256').update(key).digest('hex');
}

function keyView(k: StoredKey): KeyView {
	return { id: k.id, apps: k.apps, scopes: k.scopes, createdAt: new Date(k.createdAt).toISOString() };
}

/** The answer to a request whose Idempotency-Key was answered before: that answer, or 422 when the key came with another body. */
function answered(earlier: Accepted, idempotency: Idempotency, answer: (result: Accepted) => unknown): { status: number; body: unknown } {
	if (earlier.fingerprint !== undefined && earlier.fingerprint !== idempotency.fingerprint) {
		throw new RequestError(422, 'idempotency_key_reused', `Idempotency-Key ${JSON.stringify(idempotency.key)} was used with another request body: use a new key for a new request`, 'headers/idempotency-key');
	}
	return { status: 202, body: answer(earlier) };
}

/** Whether two copies of an app are the same version. */
function sameApp(a: StoredApp, b: StoredApp): boolean {
	return a.gen === b.gen && a.updatedAt === b.updatedAt && a.settings === b.settings && a.sealed === b.sealed;
}

/** Bits set in `bits`. */
export function popcount(bits: Uint8Array): number {
	let n = 0;
	for (let byte of bits) {
		while (byte !== 0) {
			byte &= byte - 1;
			n++;
		}
	}
	return n;
}

/** Wait `ms`, or until `signal` aborts (never rejects, never holds the process open). */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
	if (signal.aborted) return Promise.resolve();
	return new Promise((resolve) => {
		const done = (): void => {
			clearTimeout(timer);
			signal.removeEventListener('abort', done);
			resolve();
		};
		const timer = setTimeout(done, ms);
		timer.unref();
		signal.addEventListener('abort', done, { once: true });
	});
}

/** Until every promise in `set` (as it changes) has settled, or `deadline` (performance.now() time). */
async function untilDone(set: ReadonlySet<Promise<unknown>>, deadline: number): Promise<void> {
	while (set.size > 0) {
		const left = deadline - performance.now();
		if (left <= 0) return;
		const all = Promise.allSettled([...set]);
		if ((await withDeadline(all, left)) === undefined) return;
	}
}

/** `promise`'s value, or undefined once `ms` have passed. */
async function withDeadline<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
	let timer: NodeJS.Timeout | undefined;
	const timeout = new Promise<undefined>((resolve) => {
		timer = setTimeout(() => resolve(undefined), ms);
		timer.unref();
	});
	try {
		return await Promise.race([promise, timeout]);
	} finally {
		clearTimeout(timer);
	}
}
