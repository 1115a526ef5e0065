/**
 * What `apns-worker serve` keeps, behind one interface: the engine (engine.ts) owns everything that does
 * not depend on where data lives — apps and their managers, the API's operations, sending, turning
 * outcomes into stored results, webhooks, metrics, retention, shutdown — and a {@link PushStore} keeps the
 * data and hands out the work. Two adapters: embedded SQLite (stores/sqlite.ts, the default) and Redis
 * with BullMQ as the work source (stores/redis.ts).
 *
 * ## Writing a third store
 *
 * One file that implements {@link PushStore}, and one line in test/store-conformance.test.ts, which runs
 * the same tests against every store (accept atomicity and idempotency, a lease that lapses when its holder
 * dies, settling exactly once, feedback cursors, retention, deleting an app with pending work, a store that
 * goes away and comes back). What the engine relies on:
 *
 * - **Every call is asynchronous** and may reject: the engine answers the API 503 ("retry") and retries
 *   its own writes with backoff. A call that rejected must not take effect later (no write queued for a
 *   reconnection): a client told 503 may act on that.
 * - **Apps** have an id (the API's) and an incarnation (`gen`), made when the app is created and kept by
 *   updates: deleting an app and creating it again under the same id makes a new incarnation, and nothing
 *   recorded for the old one (work, outcomes, feedback, pending counts) may reach the new one. Credentials
 *   come in sealed (secrets.ts); a store never sees them in the clear.
 * - **Accepting** a request is atomic with its idempotency answer: after `accept` resolves, the work is
 *   durable and will be handed out; a second `accept` with the same key returns the first answer and adds
 *   nothing.
 * - **Work** is handed out in units (one notification's tokens, at most {@link UNIT_TOKENS}) to the handler
 *   given to {@link PushStore.work}, under a lease: a unit is handed to one holder at a time, and a holder
 *   that dies (`kill -9`) loses its leases, so the unit is handed out again (then `again` is true and its
 *   unsettled tokens are in doubt). What the handler returns says what becomes of the unit.
 * - **Settling** records outcomes exactly once per token: settling a token again (a unit run twice) counts
 *   nothing. A 410's token becomes a feedback record, numbered by the app's feedback sequence (never
 *   reused, so cursors stay valid when earlier records are gone).
 */
import type { StoredBody } from './service.js';

/** Tokens in one unit of work at most (a notification to more tokens is split). */
export const UNIT_TOKENS = 5000;

/** An app as a store keeps it. */
export interface StoredApp {
	readonly id: string;
	/** Its incarnation: made at creation, kept by updates (see the module comment). */
	readonly gen: string;
	/** JSON of its public settings (apps.ts `AppSettings`). */
	readonly settings: string;
	/** Its credentials, sealed; undefined when it has none. */
	readonly sealed: string | undefined;
	readonly createdAt: number;
	readonly updatedAt: number;
}

/** What a scoped API key may do: send notifications, read an app's state, outcomes and feedback. */
export type KeyScope = 'send' | 'read';

/** A scoped API key as a store keeps it: never the key, only its SHA-256. */
export interface StoredKey {
	readonly id: string;
	/** SHA-256 of the key, hex. */
	readonly hash: string;
	/** The apps it may act for. */
	readonly apps: readonly string[];
	readonly scopes: readonly KeyScope[];
	readonly createdAt: number;
}

/** One notification of a request to accept. */
export interface NewNotification {
	readonly body: StoredBody;
	/** Its tokens, 32 bytes each, concatenated. */
	readonly tokens: Buffer;
}

/** What a request was answered: the notifications' ids (UUIDs, in the request's order) and how many tokens in all. */
export interface Accepted {
	readonly ids: readonly string[];
	readonly accepted: number;
	/**
	 * With an Idempotency-Key: a digest of the request it answered (the key reused with another body is
	 * refused). Absent in answers stored before it was kept.
	 */
	readonly fingerprint?: string;
}

/** An Idempotency-Key and a digest of the request it came with. */
export interface Idempotency {
	readonly key: string;
	readonly fingerprint: string;
}

/** A notification's outcome so far. */
export interface NotificationCounts {
	readonly total: number;
	readonly sent: number;
	readonly failed: number;
	readonly failures: ReadonlyArray<{ readonly token: string; readonly status: number; readonly reason: string }>;
}

/** A feedback record: a token APNs answered 410 for. `seq` is its number in the app's feedback. */
export interface FeedbackRecord {
	readonly seq: number;
	readonly token: string;
	/** When APNs says the token stopped being valid, in ms. */
	readonly when: number;
	readonly reason: string;
}

/** Some tokens of one notification, handed to one holder at a time. */
export interface WorkUnit {
	readonly app: string;
	readonly gen: string;
	readonly notification: string;
	readonly body: StoredBody;
	/** The tokens, 32 bytes each, concatenated (token i at `i * 32`). */
	readonly tokens: Buffer;
	/** Bit i set: token i's outcome is recorded already (a unit handed out again). */
	readonly settled: Uint8Array;
	/**
	 * Its holder died with it and that was not counted when the store opened ({@link PushStore.inDoubt}):
	 * its unsettled tokens may have reached APNs (in doubt).
	 */
	readonly again: boolean;
	/** Times it was handed out before (for the backoff of a unit that cannot be sent yet). */
	readonly attempts: number;
	/** When its notification was accepted (ms): its retry window starts then. */
	readonly acceptedAt: number;
}

/** One token's failure, by its index in the unit. */
export interface TokenFailure {
	readonly index: number;
	readonly token: string;
	readonly status: number;
	readonly reason: string;
	/** A 410: when APNs found the token invalid (ms); the token becomes a feedback record. */
	readonly feedbackAt: number | undefined;
}

/** What a settlement newly recorded (what was recorded before is not counted again). */
export interface Settled {
	readonly sent: number;
	/** The failures given that were recorded now (those of tokens recorded before left out). */
	readonly failed: readonly TokenFailure[];
	readonly feedback: number;
}

/**
 * What becomes of a unit once its handler is done with it:
 * - `'done'`: every token's outcome is recorded;
 * - `'gone'`: its app (that incarnation) is deleted: the unit and its notification's state are forgotten;
 * - `{ retryInMs }`: hand it out again after this long (its app cannot send now; outcomes could not be
 *   recorded; APNs answered "not now"); it keeps what was settled. `untouched`: none of its tokens reached
 *   APNs this time (its app cannot send), so a store that counts what it handed out as in doubt need not
 *   count these. `onlyThis`: the delay is this unit's (its tokens' answers), not its app's: the app's
 *   other work goes on meanwhile (without it, a store may hold the app's other work back too);
 * - `'handedBack'`: its manager closed before it was done (an update, a shutdown): hand it out again at once.
 */
export type WorkResult = 'done' | 'gone' | 'handedBack' | { readonly retryInMs: number; readonly untouched?: boolean; readonly onlyThis?: boolean };

/** Takes a unit: sends what is not settled and records the outcomes. */
export type WorkHandler = (unit: WorkUnit) => Promise<WorkResult>;

/** The work a store hands out. */
export interface WorkSource {
	/**
	 * Stop taking units; resolves once every handler running has returned, or at `deadline`
	 * (`performance.now()` time), whichever is first. Units not finished are handed out again later.
	 */
	stop(deadline: number): Promise<void>;
	/**
	 * App `id` can send again (a PUT gave it working credentials): its units that wait out a delay may be
	 * handed out now. A store that cannot cut a delay short leaves this out (they wait their delay).
	 */
	resume?(id: string): void;
}

/** Why the store cannot be used now, and what happened to it: for the API (503) and the logs. */
export interface StoreEvents {
	/** An app changed elsewhere (another daemon): load it again. `undefined`: load them all (a message may have been missed). */
	appChanged(id: string | undefined): void;
	/** The store is reachable again after it was not. */
	back(): void;
	/** It stopped being reachable. */
	lost(): void;
}

/** Where `apns-worker serve` keeps its data. See the module comment. */
export interface PushStore {
	/** What it is, for messages: `'SQLite'`, `'Redis'`. */
	readonly name: string;
	/** Where it is, for logs and messages (never a password). */
	readonly where: string;
	/**
	 * Several daemons share it: the engine then requires a secret (credentials are always sealed, and a
	 * value stored unsealed is refused) and follows changes made elsewhere ({@link PushStore.watch}).
	 */
	readonly shared: boolean;
	/** Why it cannot be used now (the API answers 503 with this), or undefined. */
	readonly unavailable: string | undefined;

	/** `key` of the deployment's settings, set to `make()` first if it has none (the first daemon's value wins). */
	metaOnce(key: string, make: () => string): Promise<string>;
	/** `key` of the deployment's settings, if set. */
	meta(key: string): Promise<string | undefined>;

	/**
	 * Replace the sealed credentials of the apps listed — each only if it still holds `before` — and set
	 * the deployment's settings in `meta` (`secret-salt`, `secret-check`), all at once: a secret rotated,
	 * or plaintext credentials sealed. Changed apps get `now` as their update time (daemons load them
	 * again). False, with nothing changed, when an app changed meanwhile: read again and retry.
	 */
	reseal(apps: ReadonlyArray<{ readonly id: string; readonly before: string; readonly after: string }>, meta: Readonly<Record<string, string>>, now: number): Promise<boolean>;

	/** Store a scoped API key (its id and hash are new). */
	putKey(key: StoredKey): Promise<void>;
	/** The key whose SHA-256 is `hash`, if any. */
	keyByHash(hash: string): Promise<StoredKey | undefined>;
	/** Every scoped key, oldest first. */
	keys(): Promise<StoredKey[]>;
	/** Delete a key; false when there is none with this id. */
	deleteKey(id: string): Promise<boolean>;

	/** Create or update an app (its `gen` kept by an update). */
	putApp(id: string, settings: string, sealed: string | undefined, now: number): Promise<{ app: StoredApp; created: boolean }>;
	getApp(id: string): Promise<StoredApp | undefined>;
	/** Every app's id. */
	appIds(): Promise<string[]>;
	/** Delete an app and everything it had (scoped keys naming it too); the number of its notifications still pending, or undefined when there is no such app. */
	deleteApp(id: string): Promise<number | undefined>;

	/**
	 * Store `notifications` for `app`, with the answer under `idempotency.key` (and its fingerprint), atomically: afterwards
	 * their work will be handed out. With a key answered before, that answer (`fresh` false), and nothing
	 * stored. Undefined, with nothing stored, when `app` is no longer that incarnation.
	 */
	accept(app: StoredApp, notifications: readonly NewNotification[], now: number, idempotency: Idempotency | undefined): Promise<(Accepted & { fresh: boolean }) | undefined>;
	/** The answer to an earlier request with this key, if any. */
	idempotent(app: StoredApp, key: string): Promise<Accepted | undefined>;
	/** Notifications (one per token) accepted and not yet settled, per app. */
	pending(apps: readonly StoredApp[]): Promise<number[]>;
	/** When each app's oldest notification not yet settled was accepted (ms), or undefined when it has none. */
	oldestPending(apps: readonly StoredApp[]): Promise<Array<number | undefined>>;
	status(app: StoredApp, notification: string): Promise<NotificationCounts | undefined>;

	/**
	 * Where the store itself knows at start what was in flight when the last daemon on it stopped (one
	 * daemon per store): how many of `app`'s notifications are in doubt. Units of those are not `again`.
	 */
	inDoubt?(app: StoredApp): Promise<number>;
	/**
	 * Start handing out units to `handler`, at most `concurrency` at once, counted in full units: a store
	 * whose units are often small (one token each) may hand out more of them, as long as at most
	 * `concurrency × UNIT_TOKENS` tokens are out at once and no app holds more than a fair share of those
	 * (one slow app must not hold every slot). `error` hears what went wrong in the store's own work (a
	 * read it retries, backed off).
	 */
	work(handler: WorkHandler, options: { readonly concurrency: number; readonly error: (error: Error) => void }): WorkSource;
	/** Record outcomes of `unit`'s tokens: `sent` has bit i set for each delivered token i. */
	settle(unit: WorkUnit, sent: Uint8Array, failures: readonly TokenFailure[], now: number): Promise<Settled>;

	/** Feedback of `app` after `after`, at most `limit`, oldest first. */
	feedback(app: StoredApp, after: number, limit: number): Promise<FeedbackRecord[]>;
	/**
	 * The API handed out feedback from `after` up to `seq` (a page). Handed out counts from the start only:
	 * the mark moves to `seq` when `after` is at or below it (a page that skipped ahead hands out nothing
	 * before it), so acknowledgements never reach records no page showed.
	 */
	feedbackServed(app: StoredApp, after: number, seq: number): Promise<void>;
	/**
	 * A reader acknowledges everything up to `upTo`: it may go (with a webhook, once the webhook has it
	 * too). False, with nothing deleted, when `upTo` is past what the API handed out (a reader must never
	 * delete what it has not seen). Reading never deletes.
	 */
	feedbackAck(app: StoredApp, upTo: number, webhook: boolean): Promise<boolean>;
	/** Feedback after the webhook's cursor. */
	webhookBatch(app: StoredApp, limit: number): Promise<FeedbackRecord[]>;
	/** The webhook has every record up to `seq` (the cursor never moves back). */
	webhookDelivered(app: StoredApp, seq: number): Promise<void>;
	/**
	 * Where several daemons share a store: take or extend `owner`'s turn to deliver `app`'s webhook (false
	 * while another has it), and give it up. A store for one daemon leaves them out.
	 */
	webhookClaim?(app: StoredApp, owner: string): Promise<boolean>;
	webhookRelease?(app: StoredApp, owner: string): Promise<void>;

	/**
	 * Drop what is older than `before`: settled notifications' outcomes, idempotency answers, and feedback
	 * no one read (of the apps with a webhook, only what the webhook has). How many records went.
	 */
	prune(before: number, apps: ReadonlyArray<{ app: StoredApp; webhook: boolean }>): Promise<number>;

	/** Follow the store: what changed elsewhere, and whether it is reachable. */
	watch(events: StoreEvents): Promise<void>;
	/** Close its connections (after {@link WorkSource.stop}): whatever still waits on the store ends. */
	close(): Promise<void>;
}
