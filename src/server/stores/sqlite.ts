/**
 * The embedded store of `apns-worker serve` (the default): one SQLite file (better-sqlite3) in the data
 * directory, for one daemon. It keeps the apps (their settings, and their credentials sealed by
 * SecretBox), every accepted notification until it is settled, the outcomes for a retention period, and
 * the feedback until it is read past. See ../store.ts for what a store promises.
 *
 * Durability: WAL with `synchronous = FULL`, so a transaction that returned is on disk; `accept` resolves
 * only after the transaction that stored the notifications returned.
 *
 * A notification to N tokens is one `notifications` row and N `pending` rows (the token as 32 bytes).
 * Every table's rows are numbered by AUTOINCREMENT: numbers are never reused, so a cursor (what was handed
 * out, what a reader read past) stays meaningful when the rows before it are deleted. An app's incarnation
 * (`gen`) is its row number. A pending row is deleted in the transaction that records its outcome, so
 * after a crash what is left in `pending` is exactly what was not settled. Each app keeps the highest
 * pending row it handed out (`dispatched`): at start, the rows at or below it were in flight at the crash —
 * in doubt ({@link SqliteStore.inDoubt}).
 *
 * Work: units are read from `pending` in order, per app (taking turns), a chunk at a time and only while
 * there is room for them (tokens out, in all and per app: {@link SqliteWork}), so a million pending rows
 * cost a chunk of memory, not a million. Outcomes settled in the same turn of the event loop are committed
 * in one transaction. The lease is the process: a daemon killed mid-unit leaves its rows pending for the
 * next start. A unit that comes back untouched (its app cannot send) lowers the in-doubt mark to what did
 * reach a manager.
 * A unit handed back, or to be tried later (its app cannot send), keeps its rows: it is handed out again
 * (then, for an app that cannot send, after the delay, with the app's other rows waiting meanwhile).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ServerError } from '../../errors.js';
import type { StoredBody } from '../service.js';
import { UNIT_TOKENS, type Accepted, type Idempotency, type KeyScope, type StoredKey, type FeedbackRecord, type NewNotification, type NotificationCounts, type PushStore, type Settled, type StoredApp, type TokenFailure, type WorkHandler, type WorkResult, type WorkSource, type WorkUnit } from '../store.js';

const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS apps (
	num INTEGER PRIMARY KEY AUTOINCREMENT,
	id TEXT NOT NULL UNIQUE,
	settings TEXT NOT NULL,
	sealed TEXT,
	dispatched INTEGER NOT NULL DEFAULT 0,
	webhook_cursor INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS notifications (
	num INTEGER PRIMARY KEY AUTOINCREMENT,
	id TEXT NOT NULL UNIQUE,
	app INTEGER NOT NULL,
	body TEXT NOT NULL,
	total INTEGER NOT NULL,
	sent INTEGER NOT NULL DEFAULT 0,
	failed INTEGER NOT NULL DEFAULT 0,
	created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_age ON notifications (created_at);
CREATE TABLE IF NOT EXISTS pending (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	app INTEGER NOT NULL,
	notification INTEGER NOT NULL,
	token BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS pending_by_app ON pending (app, seq);
CREATE TABLE IF NOT EXISTS failures (
	notification INTEGER NOT NULL,
	token TEXT NOT NULL,
	status INTEGER NOT NULL,
	reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS failures_by_notification ON failures (notification);
CREATE TABLE IF NOT EXISTS feedback (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	app INTEGER NOT NULL,
	token TEXT NOT NULL,
	at INTEGER NOT NULL,
	reason TEXT NOT NULL,
	stored_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_app ON feedback (app, seq);
CREATE TABLE IF NOT EXISTS idempotency (
	app INTEGER NOT NULL,
	key TEXT NOT NULL,
	response TEXT NOT NULL,
	created_at INTEGER NOT NULL,
	PRIMARY KEY (app, key)
);
`;

/**
 * The schema's version (SQLite's `user_version`), and how each earlier one becomes the next. Version 0 is
 * a file from before versions were kept (its schema is version 1's) or a new, empty file.
 */
export const SCHEMA_VERSION = 3;
const MIGRATIONS: ReadonlyArray<(db: Database.Database) => void> = [
	// 0 → 1: the schema as it was first shipped (CREATE … IF NOT EXISTS: an unversioned file has it already).
	(db) => db.exec(SCHEMA),
	// 1 → 2: how far the API handed out each app's feedback (acknowledgements stop there). Readers of an
	// earlier version were handed cursors up to anything stored so far: every seq assigned yet.
	(db) => {
		db.exec('ALTER TABLE apps ADD COLUMN feedback_served INTEGER NOT NULL DEFAULT 0');
		db.exec("UPDATE apps SET feedback_served = coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'feedback'), 0)");
	},
	// 2 → 3: scoped API keys (their SHA-256, never the key).
	(db) => db.exec('CREATE TABLE api_keys (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, apps TEXT NOT NULL, scopes TEXT NOT NULL, created_at INTEGER NOT NULL)'),
];

/**
 * Bring the file up to {@link SCHEMA_VERSION}, one version at a time, each in a transaction (the file is
 * locked to this daemon already); refuse a file written by a newer version.
 */
function migrate(db: Database.Database, path: string): void {
	const version = db.pragma('user_version', { simple: true }) as number;
	if (version > SCHEMA_VERSION) {
		db.close();
		throw new ServerError('APNS_SERVER_CONFIG', `${path} was written by a newer apns-worker (schema version ${version}; this one knows up to ${SCHEMA_VERSION}): upgrade apns-worker, or give another --data`);
	}
	for (let v = version; v < SCHEMA_VERSION; v++) {
		db.transaction(() => {
			MIGRATIONS[v]!(db);
			db.pragma(`user_version = ${v + 1}`);
		})();
	}
}

/** Pending rows read per claim. */
const CHUNK = 2000;
/** Tokens of one app out at once at most (at least one unit): two full units, so one's tail overlaps the next. */
export const APP_TOKENS = 2 * UNIT_TOKENS;
/** Backoff of reads after the database refused one: 0.5 s doubling to 30 s. */
const STORE_RETRY_MS = { initial: 500, max: 30_000 } as const;
/** Parsed notification bodies kept (a chunk usually spans a handful). */
const BODY_CACHE = 256;

/** A unit as this store hands it out: which pending row each token is. */
interface SqliteUnit extends WorkUnit {
	/** App row number. */
	readonly num: number;
	/** Notification row number. */
	readonly notificationNum: number;
	/** Pending row of each token. */
	readonly seqs: readonly number[];
	settled: Uint8Array;
	attempts: number;
	/** A run of it reached a manager (its unsettled rows are in doubt should the daemon die). */
	touched: boolean;
}

/** A settlement waiting for the turn's transaction. */
interface SettleRequest {
	readonly unit: SqliteUnit;
	readonly sent: Uint8Array;
	readonly failures: readonly TokenFailure[];
	readonly now: number;
	resolve(settled: Settled): void;
	reject(error: Error): void;
}

/** The embedded store (see the module comment). Synchronous underneath: each call is one statement or one transaction. */
export class SqliteStore implements PushStore {
	readonly name = 'SQLite';
	readonly shared = false;
	readonly unavailable = undefined;
	/** The database file. */
	readonly where: string;
	readonly #db: Database.Database;
	readonly #q: ReturnType<typeof prepare>;
	readonly #accept: (app: number, notifications: ReadonlyArray<NewNotification & { id: string }>, now: number, idempotency: Idempotency | undefined) => (Accepted & { fresh: boolean }) | undefined;
	/** Settlements of one turn of the event loop, committed together. */
	readonly #settleMany: (batch: readonly SettleRequest[]) => Settled[];
	#settling: SettleRequest[] = [];
	readonly #bodies = new Map<number, { id: string; body: StoredBody; acceptedAt: number }>();
	#work: SqliteWork | undefined;
	/** Each app's in-doubt mark as this process found it (read before anything here could move it). */
	readonly #openingMarks: Map<number, number>;

	/** Open (or create) the store in `dir`; one daemon per directory. @throws {@link ServerError} `APNS_SERVER_CONFIG` when another daemon has it. */
	constructor(dir: string) {
		mkdirSync(dir, { recursive: true, mode: 0o700 });
		this.where = join(dir, 'apns-worker.db');
		this.#db = new Database(this.where, { timeout: 0 });
		// Payloads, tokens and sealed credentials: for the daemon's user only (the WAL takes the same mode).
		chmodSync(this.where, 0o600);
		// One daemon per data directory: two would both send every pending row.
		this.#db.pragma('locking_mode = EXCLUSIVE');
		try {
			this.#db.pragma('journal_mode = WAL');
			this.#db.exec('BEGIN EXCLUSIVE; COMMIT');
		} catch (error) {
			this.#db.close();
			if ((error as { code?: string }).code?.startsWith('SQLITE_BUSY') === true) throw new ServerError('APNS_SERVER_CONFIG', `${dir} is in use by another apns-worker serve (one daemon per data directory)`, { cause: error });
			throw error;
		}
		this.#db.pragma('secure_delete = ON');
		this.#db.pragma('synchronous = FULL');
		this.#db.pragma('foreign_keys = OFF');
		migrate(this.#db, this.where);
		const q = prepare(this.#db);
		this.#q = q;
		this.#openingMarks = new Map((q.allDispatched.all() as Array<{ num: number; dispatched: number }>).map((r) => [r.num, r.dispatched]));
		this.#accept = this.#db.transaction((app: number, notifications: ReadonlyArray<NewNotification & { id: string }>, now: number, idempotency: Idempotency | undefined): (Accepted & { fresh: boolean }) | undefined => {
			// In the transaction: the app still that incarnation, no answer under the key yet, then the rows.
			if (q.getAppNum.get(app) === undefined) return undefined;
			if (idempotency !== undefined) {
				const row = q.getIdempotency.get(app, idempotency.key) as { response: string } | undefined;
				if (row !== undefined) return { ...(JSON.parse(row.response) as Accepted), fresh: false };
			}
			let accepted = 0;
			for (const n of notifications) {
				const count = n.tokens.length / 32;
				accepted += count;
				const num = Number(q.insertNotification.run(n.id, app, JSON.stringify(n.body), count, now).lastInsertRowid);
				for (let i = 0; i < count; i++) q.insertPending.run(app, num, n.tokens.subarray(i * 32, i * 32 + 32));
			}
			const answer: Accepted = { ids: notifications.map((n) => n.id), accepted, ...(idempotency === undefined ? {} : { fingerprint: idempotency.fingerprint }) };
			if (idempotency !== undefined) q.insertIdempotency.run(app, idempotency.key, JSON.stringify(answer), now);
			return { ...answer, fresh: true };
		});
		const settleOne = (unit: SqliteUnit, sent: Uint8Array, failures: readonly TokenFailure[], now: number): Settled => {
			let newSent = 0;
			const failed: TokenFailure[] = [];
			let feedback = 0;
			// A row deleted already (settled before, or its app deleted) is not counted again.
			for (let i = 0; i < unit.seqs.length; i++) if ((sent[i >> 3]! & (1 << (i & 7))) !== 0 && q.deletePending.run(unit.seqs[i]!).changes > 0) newSent++;
			for (const f of failures) {
				if (q.deletePending.run(unit.seqs[f.index]!).changes === 0) continue;
				failed.push(f);
				q.insertFailure.run(unit.notificationNum, f.token, f.status, f.reason);
				if (f.feedbackAt !== undefined) {
					q.insertFeedback.run(unit.num, f.token, f.feedbackAt, f.reason, now);
					feedback++;
				}
			}
			if (newSent + failed.length > 0) q.countOutcome.run(newSent, failed.length, unit.notificationNum);
			return { sent: newSent, failed, feedback };
		};
		this.#settleMany = this.#db.transaction((batch: readonly SettleRequest[]) => batch.map((r) => settleOne(r.unit, r.sent, r.failures, r.now)));
	}

	async meta(key: string): Promise<string | undefined> {
		return (this.#q.getMeta.get(key) as { value: string } | undefined)?.value;
	}

	async metaOnce(key: string, make: () => string): Promise<string> {
		this.#q.setMetaOnce.run(key, make());
		return (await this.meta(key))!;
	}

	async putApp(id: string, settings: string, sealed: string | undefined, now: number): Promise<{ app: StoredApp; created: boolean }> {
		const existing = this.#app(id);
		if (existing === undefined) this.#q.insertApp.run(id, settings, sealed ?? null, now, now);
		else this.#q.updateApp.run(settings, sealed ?? null, now, id);
		return { app: this.#app(id)!, created: existing === undefined };
	}

	async getApp(id: string): Promise<StoredApp | undefined> {
		return this.#app(id);
	}

	async putKey(key: StoredKey): Promise<void> {
		this.#q.insertKey.run(key.id, key.hash, JSON.stringify(key.apps), JSON.stringify(key.scopes), key.createdAt);
	}

	async keyByHash(hash: string): Promise<StoredKey | undefined> {
		const row = this.#q.keyByHash.get(hash) as KeyRow | undefined;
		return row === undefined ? undefined : toKey(row);
	}

	async keys(): Promise<StoredKey[]> {
		return (this.#q.allKeys.all() as KeyRow[]).map(toKey);
	}

	async deleteKey(id: string): Promise<boolean> {
		return this.#q.deleteKey.run(id).changes > 0;
	}

	async reseal(apps: ReadonlyArray<{ readonly id: string; readonly before: string; readonly after: string }>, meta: Readonly<Record<string, string>>, now: number): Promise<boolean> {
		const changed = Symbol('changed');
		try {
			this.#db.transaction(() => {
				for (const a of apps) if (this.#q.reseal.run(a.after, now, a.id, a.before).changes === 0) throw changed;
				for (const [key, value] of Object.entries(meta)) this.#q.setMeta.run(key, value);
			})();
		} catch (error) {
			if (error === changed) return false;
			throw error;
		}
		return true;
	}

	#app(id: string): StoredApp | undefined {
		const row = this.#q.getApp.get(id) as AppRow | undefined;
		return row === undefined ? undefined : toApp(row);
	}

	async appIds(): Promise<string[]> {
		return (this.#q.appIds.all() as Array<{ id: string }>).map((r) => r.id);
	}

	async deleteApp(id: string): Promise<number | undefined> {
		const app = this.#app(id);
		if (app === undefined) return undefined;
		const num = Number(app.gen);
		return this.#db.transaction(() => {
			const dropped = Number((this.#q.countPending.get(num) as { n: number }).n);
			this.#db.prepare('DELETE FROM pending WHERE app = ?').run(num);
			this.#db.prepare('DELETE FROM failures WHERE notification IN (SELECT num FROM notifications WHERE app = ?)').run(num);
			this.#db.prepare('DELETE FROM notifications WHERE app = ?').run(num);
			this.#db.prepare('DELETE FROM feedback WHERE app = ?').run(num);
			this.#db.prepare('DELETE FROM idempotency WHERE app = ?').run(num);
			// Keys scoped to it go with it: an app made again under the id must not inherit them.
			this.#db.prepare('DELETE FROM api_keys WHERE id IN (SELECT k.id FROM api_keys k, json_each(k.apps) j WHERE j.value = ?)').run(id);
			this.#db.prepare('DELETE FROM apps WHERE num = ?').run(num);
			return dropped;
		})();
	}

	async accept(app: StoredApp, notifications: readonly NewNotification[], now: number, idempotency: Idempotency | undefined): Promise<(Accepted & { fresh: boolean }) | undefined> {
		const result = this.#accept(Number(app.gen), notifications.map((n) => ({ ...n, id: randomUUID() })), now, idempotency);
		if (result?.fresh === true) this.#work?.wake();
		return result;
	}

	async idempotent(app: StoredApp, key: string): Promise<Accepted | undefined> {
		const row = this.#q.getIdempotency.get(Number(app.gen), key) as { response: string } | undefined;
		return row === undefined ? undefined : (JSON.parse(row.response) as Accepted);
	}

	async pending(apps: readonly StoredApp[]): Promise<number[]> {
		return apps.map((a) => Number((this.#q.countPending.get(Number(a.gen)) as { n: number }).n));
	}

	async oldestPending(apps: readonly StoredApp[]): Promise<Array<number | undefined>> {
		return apps.map((a) => (this.#q.oldestPending.get(Number(a.gen)) as { created_at: number } | undefined)?.created_at);
	}

	async status(app: StoredApp, id: string): Promise<NotificationCounts | undefined> {
		const row = this.#q.getStatus.get(id, Number(app.gen)) as { num: number; total: number; sent: number; failed: number } | undefined;
		if (row === undefined) return undefined;
		const failures = this.#q.getFailures.all(row.num) as Array<{ token: string; status: number; reason: string }>;
		return { total: row.total, sent: row.sent, failed: row.failed, failures };
	}

	/** At start: `app`'s pending rows handed out before the daemon stopped (in doubt). */
	async inDoubt(app: StoredApp): Promise<number> {
		const num = Number(app.gen);
		const dispatched = (this.#q.getDispatched.get(num) as { dispatched: number }).dispatched;
		return Number((this.#q.countPendingUpTo.get(num, dispatched) as { n: number }).n);
	}

	work(handler: WorkHandler, options: { readonly concurrency: number; readonly error: (error: Error) => void }): WorkSource {
		this.#work = new SqliteWork(this, handler, options.concurrency, options.error);
		return this.#work;
	}

	/**
	 * Settlements asked for in the same turn of the event loop are committed in one transaction: one
	 * sync to disk for many small units. If it fails, each of them rejects (none took effect).
	 */
	settle(unit: WorkUnit, sent: Uint8Array, failures: readonly TokenFailure[], now: number): Promise<Settled> {
		return new Promise<Settled>((resolve, reject) => {
			if (this.#settling.push({ unit: unit as SqliteUnit, sent, failures, now, resolve, reject }) === 1) setImmediate(() => this.#commitSettled());
		});
	}

	#commitSettled(): void {
		const batch = this.#settling;
		this.#settling = [];
		let results: Settled[];
		try {
			results = this.#settleMany(batch);
		} catch {
			// Each alone: one that cannot be stored does not fail the others.
			for (const r of batch) {
				try {
					r.resolve(this.#settleMany([r])[0]!);
				} catch (error) {
					r.reject(error as Error);
				}
			}
			return;
		}
		batch.forEach((r, i) => r.resolve(results[i]!));
	}

	async feedback(app: StoredApp, after: number, limit: number): Promise<FeedbackRecord[]> {
		return this.#q.getFeedback.all(Number(app.gen), after, limit) as FeedbackRecord[];
	}

	async feedbackServed(app: StoredApp, after: number, seq: number): Promise<void> {
		this.#q.setFeedbackServed.run(seq, Number(app.gen), after);
	}

	async feedbackAck(app: StoredApp, upTo: number, webhook: boolean): Promise<boolean> {
		const num = Number(app.gen);
		return this.#db.transaction(() => {
			const row = this.#q.getFeedbackCursors.get(num) as { feedback_served: number; webhook_cursor: number } | undefined;
			if (row === undefined || upTo > row.feedback_served) return false;
			const cut = webhook ? Math.min(upTo, row.webhook_cursor) : upTo;
			if (cut > 0) this.#q.deleteFeedbackUpTo.run(num, cut);
			return true;
		})();
	}

	async webhookBatch(app: StoredApp, limit: number): Promise<FeedbackRecord[]> {
		const num = Number(app.gen);
		const cursor = (this.#q.getWebhookCursor.get(num) as { webhook_cursor: number } | undefined)?.webhook_cursor ?? 0;
		return this.#q.getFeedback.all(num, cursor, limit) as FeedbackRecord[];
	}

	async webhookDelivered(app: StoredApp, seq: number): Promise<void> {
		this.#q.setWebhookCursor.run(seq, Number(app.gen));
	}

	async prune(before: number, apps: ReadonlyArray<{ app: StoredApp; webhook: boolean }>): Promise<number> {
		const webhooks = apps.filter((a) => a.webhook).map((a) => Number(a.app.gen));
		return this.#db.transaction(() => {
			const old = 'SELECT num FROM notifications WHERE created_at < ? AND sent + failed = total';
			this.#db.prepare(`DELETE FROM failures WHERE notification IN (${old})`).run(before);
			const n = this.#db.prepare(`DELETE FROM notifications WHERE num IN (${old})`).run(before).changes;
			this.#db.prepare('DELETE FROM idempotency WHERE created_at < ?').run(before);
			// By when it was stored: `at` is APNs' word on when the token went, which may be long before.
			const held = webhooks.length === 0 ? '' : ` AND NOT (app IN (${webhooks.map(() => '?').join(',')}) AND seq > (SELECT webhook_cursor FROM apps WHERE apps.num = feedback.app))`;
			this.#db.prepare(`DELETE FROM feedback WHERE stored_at < ?${held}`).run(before, ...webhooks);
			return n;
		})();
	}

	/** One daemon per store: nothing changes elsewhere. */
	async watch(): Promise<void> {}

	async close(): Promise<void> {
		if (this.#settling.length > 0) this.#commitSettled();
		this.#work?.detach();
		this.#db.close();
	}

	// ---- for SqliteWork ----

	/** Apps (row numbers) with pending rows after their cursor… asked cheaply: every app. */
	appNums(): number[] {
		return (this.#q.appNums.all() as Array<{ num: number }>).map((r) => r.num);
	}

	/** Up to a chunk of `app`'s pending rows after `after`, as units (one notification's consecutive rows each); marked handed out first. */
	claim(app: number, after: number): SqliteUnit[] {
		const rows = this.#q.claim.all(app, after, CHUNK) as Array<{ seq: number; notification: number; token: Buffer }>;
		if (rows.length === 0) return [];
		const gen = String(app);
		const appId = (this.#q.getAppId.get(app) as { id: string } | undefined)?.id;
		if (appId === undefined) return [];
		// Durable before any of them can reach APNs: at a crash, these rows are counted in doubt.
		this.markDispatched(app, rows[rows.length - 1]!.seq);
		const units: SqliteUnit[] = [];
		let start = 0;
		for (let i = 1; i <= rows.length; i++) {
			if (i < rows.length && rows[i]!.notification === rows[start]!.notification && i - start < UNIT_TOKENS) continue;
			const run = rows.slice(start, i);
			start = i;
			const body = this.#body(run[0]!.notification);
			if (body === undefined) continue; // its app deleted under us
			units.push({ app: appId, gen, notification: body.id, body: body.body, acceptedAt: body.acceptedAt, tokens: Buffer.concat(run.map((r) => r.token)), settled: new Uint8Array(Math.ceil(run.length / 8)), again: false, attempts: 0, touched: false, num: app, notificationNum: run[0]!.notification, seqs: run.map((r) => r.seq) });
		}
		return units;
	}

	/** `app`'s rows up to `seq` may reach APNs from now on (at a crash, those still pending are in doubt). */
	markDispatched(app: number, seq: number): void {
		this.#q.setDispatched.run(seq, app);
	}

	/**
	 * None of `app`'s rows above `seq` reached APNs from this process (they came back untouched): not in
	 * doubt at a crash. Never below the mark found at open: those rows were in flight when the last daemon
	 * stopped, and stay in doubt until settled.
	 */
	lowerDispatched(app: number, seq: number): void {
		this.#q.lowerDispatched.run(Math.max(seq, this.#openingMarks.get(app) ?? 0), app);
	}

	/** `unit` as it stands now: its rows settled meanwhile marked settled; undefined when none is left. */
	refresh(unit: SqliteUnit): SqliteUnit | undefined {
		const left = new Set((this.#db.prepare(`SELECT seq FROM pending WHERE seq IN (${unit.seqs.map(() => '?').join(',')})`).all(...unit.seqs) as Array<{ seq: number }>).map((r) => r.seq));
		if (left.size === 0) return undefined;
		const settled = new Uint8Array(unit.settled.length);
		unit.seqs.forEach((seq, i) => {
			if (!left.has(seq)) settled[i >> 3]! |= 1 << (i & 7);
		});
		return { ...unit, settled, attempts: unit.attempts + 1 };
	}

	#body(num: number): { id: string; body: StoredBody; acceptedAt: number } | undefined {
		let body = this.#bodies.get(num);
		if (body === undefined) {
			const row = this.#q.getBody.get(num) as { id: string; body: string; created_at: number } | undefined;
			if (row === undefined) return undefined;
			body = { id: row.id, body: JSON.parse(row.body) as StoredBody, acceptedAt: row.created_at };
			if (this.#bodies.size >= BODY_CACHE) this.#bodies.delete(this.#bodies.keys().next().value!);
			this.#bodies.set(num, body);
		}
		return body;
	}
}

/**
 * Hands out the store's pending rows as units: the apps take turns, each from its own cursor. Units are
 * counted in tokens: at most `concurrency × UNIT_TOKENS` out at once, and at most {@link APP_TOKENS} of one
 * app (at least one unit each), so a million one-token notifications go out a few thousand at a time and
 * a slow app holds only its share. A unit given back (handed back, or to be tried later) is kept and
 * handed out again; while one of an app's units waits to be tried later, the app's other rows wait too.
 */
class SqliteWork implements WorkSource {
	readonly #store: SqliteStore;
	readonly #handler: WorkHandler;
	/** Tokens out at once, all apps. */
	readonly #maxTokens: number;
	readonly #error: (error: Error) => void;
	readonly #cursors = new Map<number, number>();
	/** Per app: tokens out, units out. */
	readonly #out = new Map<number, { tokens: number; units: number }>();
	/** App row number by id (for resume), and how often each was resumed; each unit out, the count when it went out. */
	readonly #nums = new Map<string, number>();
	readonly #resumed = new Map<number, number>();
	readonly #outAt = new WeakMap<SqliteUnit, number>();
	/** Apps whose in-doubt mark was lowered since their last claim: a unit handed out raises it first. */
	readonly #lowered = new Set<number>();
	/** Claimed and not handed out yet, and their tokens. */
	#ready: SqliteUnit[] = [];
	#readyTokens = 0;
	/** Given back, each due at a time (performance.now()). */
	readonly #again: Array<{ unit: SqliteUnit; at: number }> = [];
	/** Apps waiting out a delay, until when. */
	readonly #paused = new Map<number, number>();
	/** The app whose turn is next. */
	#turn = 0;
	#tokens = 0;
	#running = 0;
	#stopped = false;
	#detached = false;
	#timer: NodeJS.Timeout | undefined;
	/** Reads the database refused in a row, and until when nothing is read (backed off). */
	#failures = 0;
	#holdUntil = 0;
	#scheduled = false;
	#idle: Array<() => void> = [];

	constructor(store: SqliteStore, handler: WorkHandler, concurrency: number, error: (error: Error) => void) {
		this.#store = store;
		this.#handler = handler;
		this.#maxTokens = concurrency * UNIT_TOKENS;
		this.#error = error;
		this.wake();
	}

	/** Rows were stored, a unit came back, or a delay ran out: hand out what there is room for (on the next turn). */
	wake(): void {
		if (this.#scheduled || this.#stopped) return;
		this.#scheduled = true;
		setImmediate(() => {
			this.#scheduled = false;
			this.#pump();
		});
	}

	resume(id: string): void {
		const num = this.#nums.get(id);
		if (num === undefined) return;
		// Units out now were handed out before it could send: if they come back to wait, they need not.
		this.#resumed.set(num, (this.#resumed.get(num) ?? 0) + 1);
		for (const a of this.#again) if (a.unit.num === num) a.at = 0;
		this.#paused.delete(num);
		this.wake();
	}

	#pump(): void {
		while (!this.#stopped) {
			const unit = this.#next();
			if (unit === undefined) return;
			const count = unit.tokens.length / 32;
			const out = this.#out.get(unit.num) ?? { tokens: 0, units: 0 };
			out.tokens += count;
			out.units++;
			this.#out.set(unit.num, out);
			this.#tokens += count;
			this.#running++;
			this.#nums.set(unit.app, unit.num);
			this.#outAt.set(unit, this.#resumed.get(unit.num) ?? 0);
			void this.#handler(unit).then(
				(result) => this.#done(unit, result),
				(error: unknown) => {
					this.#error(error as Error);
					this.#done(unit, { retryInMs: STORE_RETRY_MS.initial });
				},
			);
		}
	}

	/**
	 * Whether a unit of `count` tokens of `app` may go out now: `'go'`; `'app'` when its app has its share
	 * out (others may go before it); `'full'` when the total is out (nothing goes before it, so a large
	 * unit is not passed over by small ones for ever).
	 */
	#fit(app: number, count: number): 'go' | 'app' | 'full' {
		const out = this.#out.get(app);
		if (out !== undefined && out.units > 0 && out.tokens + count > APP_TOKENS) return 'app';
		if (this.#running > 0 && this.#tokens + count > this.#maxTokens) return 'full';
		return 'go';
	}

	#next(): SqliteUnit | undefined {
		const now = performance.now();
		if (now < this.#holdUntil) return undefined;
		for (let k = 0; k < this.#again.length; k++) {
			const item = this.#again[k]!;
			if (item.at > now) continue;
			const fit = this.#fit(item.unit.num, item.unit.tokens.length / 32);
			if (fit === 'app') continue;
			if (fit === 'full') return undefined; // #done wakes the source when room frees
			const read = this.#safe(() => this.#store.refresh(item.unit));
			if (read === undefined) return undefined; // the database refused: held, tried again backed off
			if (read.value === undefined) {
				// Nothing of it left (settled, or its app deleted).
				this.#again.splice(k--, 1);
				continue;
			}
			if (!this.#raise(read.value)) return undefined; // kept: tried again backed off
			this.#again.splice(k, 1);
			return read.value;
		}
		for (;;) {
			for (let i = 0; i < this.#ready.length; i++) {
				const unit = this.#ready[i]!;
				if (this.#isPaused(unit.num, now)) continue;
				const fit = this.#fit(unit.num, unit.tokens.length / 32);
				if (fit === 'app') continue;
				if (fit === 'full') return undefined;
				if (!this.#raise(unit)) return undefined;
				this.#ready.splice(i, 1);
				this.#readyTokens -= unit.tokens.length / 32;
				return unit;
			}
			// Claimed and waiting is bounded by what may be out at once, however many apps there are.
			const claimed = this.#readyTokens >= this.#maxTokens ? undefined : this.#claim(now);
			if (claimed === undefined) {
				this.#arm(now);
				return undefined;
			}
			this.#ready.push(...claimed);
			for (const u of claimed) this.#readyTokens += u.tokens.length / 32;
		}
	}

	/**
	 * Before `unit` goes out, if its app's mark was lowered: the mark raised over every unit of the app
	 * held here, in one write. False: the database refused.
	 */
	#raise(unit: SqliteUnit): boolean {
		if (!this.#lowered.has(unit.num)) return true;
		let top = unit.seqs[unit.seqs.length - 1]!;
		for (const a of this.#again) if (a.unit.num === unit.num) top = Math.max(top, a.unit.seqs[a.unit.seqs.length - 1]!);
		for (const u of this.#ready) if (u.num === unit.num) top = Math.max(top, u.seqs[u.seqs.length - 1]!);
		if (this.#safe(() => this.#store.markDispatched(unit.num, top)) === undefined) return false;
		this.#lowered.delete(unit.num);
		return true;
	}

	/** The next app's rows after its cursor, taking turns; undefined when no app has any (or room for them). */
	#claim(now: number): SqliteUnit[] | undefined {
		const apps = this.#safe(() => this.#store.appNums(), false)?.value ?? [];
		const waiting = new Set(this.#ready.map((u) => u.num));
		for (let k = 0; k < apps.length; k++) {
			const app = apps[(this.#turn + k) % apps.length]!;
			// An app with claimed units waiting (for room, or out a delay) is not read further.
			if (waiting.has(app) || this.#isPaused(app, now) || this.#fit(app, 1) !== 'go') continue;
			const units = this.#safe(() => this.#store.claim(app, this.#cursors.get(app) ?? 0))?.value;
			if (units === undefined) return undefined;
			if (units.length === 0) continue;
			this.#turn = (this.#turn + k + 1) % apps.length;
			this.#lowered.delete(app); // the claim marked everything up to its last row
			const last = units[units.length - 1]!;
			this.#cursors.set(app, last.seqs[last.seqs.length - 1]!);
			return units;
		}
		return undefined;
	}

	/**
	 * A read or write the database refused (a full disk…): reported, and nothing is read until a
	 * backed-off retry. `resets`: success ends the backoff (not for a read that succeeds while writes fail).
	 */
	#safe<T>(read: () => T, resets = true): { value: T } | undefined {
		try {
			const value = read();
			if (resets) this.#failures = 0;
			return { value };
		} catch (error) {
			this.#error(error as Error);
			this.#failures++;
			const now = performance.now();
			this.#holdUntil = now + Math.min(STORE_RETRY_MS.max, STORE_RETRY_MS.initial * 2 ** (this.#failures - 1));
			this.#arm(now);
			return undefined;
		}
	}

	#isPaused(app: number, now: number): boolean {
		const until = this.#paused.get(app);
		if (until === undefined) return false;
		if (until > now) return true;
		this.#paused.delete(app);
		return false;
	}

	/** Wake at the next due unit or unpaused app, not before a backed-off retry. */
	#arm(now: number): void {
		let at = Infinity;
		// Due already and not handed out: waiting for room, which #done wakes the source for.
		for (const a of this.#again) if (a.at > now) at = Math.min(at, a.at);
		for (const [app, until] of this.#paused) {
			if (until <= now) this.#paused.delete(app); // over (its app may be gone: nothing would clear it)
			else at = Math.min(at, until);
		}
		if (this.#holdUntil > now) at = Math.max(at === Infinity ? this.#holdUntil : at, this.#holdUntil);
		clearTimeout(this.#timer);
		this.#timer = undefined;
		if (at === Infinity || this.#stopped) return;
		// Ref'd: work that waits out a delay is work to do (stop() clears it).
		this.#timer = setTimeout(() => this.wake(), Math.max(0, at - now));
	}

	#done(unit: SqliteUnit, result: WorkResult): void {
		const count = unit.tokens.length / 32;
		const out = this.#out.get(unit.num)!;
		out.tokens -= count;
		out.units--;
		if (out.units === 0) this.#out.delete(unit.num);
		this.#tokens -= count;
		this.#running--;
		if (typeof result === 'object') {
			if (result.untouched !== true) unit.touched = true;
			const at = this.#outAt.get(unit) !== (this.#resumed.get(unit.num) ?? 0) ? 0 : performance.now() + result.retryInMs;
			this.#again.push({ unit, at });
			// Its app's other rows wait too: an app that cannot send is not read past (unless the delay is the unit's own).
			if (at > 0 && result.onlyThis !== true) this.#paused.set(unit.num, Math.max(this.#paused.get(unit.num) ?? 0, at));
			if (result.untouched === true && out.units === 0 && !this.#detached) this.#lower(unit.num);
		} else if (result === 'handedBack') {
			unit.touched = true;
			this.#again.push({ unit, at: 0 });
		}
		// 'done', 'gone': its rows are settled, or gone with their app.
		if (this.#running === 0 && this.#stopped) for (const resolve of this.#idle.splice(0)) resolve();
		this.wake();
	}

	/**
	 * Nothing of `app` is out and a unit came back untouched (its app cannot send): only its units that
	 * reached a manager before stay counted in doubt, so a restart does not warn of rows never sent.
	 */
	#lower(app: number): void {
		let mark = 0;
		for (const a of this.#again) if (a.unit.num === app && a.unit.touched) mark = Math.max(mark, a.unit.seqs[a.unit.seqs.length - 1]!);
		if (this.#safe(() => this.#store.lowerDispatched(app, mark)) !== undefined) this.#lowered.add(app);
	}

	/** The database is closed: a handler that returns late touches nothing. */
	detach(): void {
		this.#detached = true;
		this.#stopped = true;
		clearTimeout(this.#timer);
	}

	stop(deadline: number): Promise<void> {
		this.#stopped = true;
		clearTimeout(this.#timer);
		if (this.#running === 0) return Promise.resolve();
		return new Promise<void>((resolve) => {
			const timer = setTimeout(resolve, Math.max(0, deadline - performance.now()));
			this.#idle.push(() => {
				clearTimeout(timer);
				resolve();
			});
		});
	}
}

/** The API key: given, stored in `dir/api-key`, or generated there now (mode 0600). */
export function loadApiKey(dir: string, given: string | undefined): { key: string; generated: boolean } {
	if (given !== undefined && given !== '') {
		if (given.length < 16) throw new ServerError('APNS_SERVER_CONFIG', 'APNS_WORKER_API_KEY must be at least 16 characters');
		return { key: given, generated: false };
	}
	mkdirSync(dir, { recursive: true, mode: 0o700 });
	const file = join(dir, 'api-key');
	try {
		const key = readFileSync(file, 'utf8').trim();
		if (key !== '') return { key, generated: false };
	} catch (error) {
		if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
	}
	const key = randomBytes(32).toString('base64url');
	writeFileSync(file, `${key}\n`, { mode: 0o600 });
	chmodSync(file, 0o600);
	return { key, generated: true };
}

interface AppRow {
	num: number;
	id: string;
	settings: string;
	sealed: string | null;
	created_at: number;
	updated_at: number;
}

interface KeyRow {
	id: string;
	hash: string;
	apps: string;
	scopes: string;
	created_at: number;
}

function toKey(row: KeyRow): StoredKey {
	return { id: row.id, hash: row.hash, apps: JSON.parse(row.apps) as string[], scopes: JSON.parse(row.scopes) as KeyScope[], createdAt: row.created_at };
}

function toApp(row: AppRow): StoredApp {
	return { id: row.id, gen: String(row.num), settings: row.settings, sealed: row.sealed ?? undefined, createdAt: row.created_at, updatedAt: row.updated_at };
}

function prepare(db: Database.Database) {
	return {
		getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
		setMetaOnce: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING'),
		insertKey: db.prepare('INSERT INTO api_keys (id, hash, apps, scopes, created_at) VALUES (?, ?, ?, ?, ?)'),
		keyByHash: db.prepare('SELECT id, hash, apps, scopes, created_at FROM api_keys WHERE hash = ?'),
		allKeys: db.prepare('SELECT id, hash, apps, scopes, created_at FROM api_keys ORDER BY created_at, id'),
		deleteKey: db.prepare('DELETE FROM api_keys WHERE id = ?'),
		setMeta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
		reseal: db.prepare('UPDATE apps SET sealed = ?, updated_at = ? WHERE id = ? AND sealed = ?'),
		insertApp: db.prepare('INSERT INTO apps (id, settings, sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?)'),
		updateApp: db.prepare('UPDATE apps SET settings = ?, sealed = ?, updated_at = ? WHERE id = ?'),
		getApp: db.prepare('SELECT num, id, settings, sealed, created_at, updated_at FROM apps WHERE id = ?'),
		appIds: db.prepare('SELECT id FROM apps ORDER BY id'),
		appNums: db.prepare('SELECT num FROM apps ORDER BY num'),
		getAppNum: db.prepare('SELECT num FROM apps WHERE num = ?'),
		getAppId: db.prepare('SELECT id FROM apps WHERE num = ?'),
		insertNotification: db.prepare('INSERT INTO notifications (id, app, body, total, created_at) VALUES (?, ?, ?, ?, ?)'),
		insertPending: db.prepare('INSERT INTO pending (app, notification, token) VALUES (?, ?, ?)'),
		insertIdempotency: db.prepare('INSERT INTO idempotency (app, key, response, created_at) VALUES (?, ?, ?, ?)'),
		getIdempotency: db.prepare('SELECT response FROM idempotency WHERE app = ? AND key = ?'),
		claim: db.prepare('SELECT seq, notification, token FROM pending WHERE app = ? AND seq > ? ORDER BY seq LIMIT ?'),
		setDispatched: db.prepare('UPDATE apps SET dispatched = max(dispatched, ?) WHERE num = ?'),
		lowerDispatched: db.prepare('UPDATE apps SET dispatched = min(dispatched, ?) WHERE num = ?'),
		getDispatched: db.prepare('SELECT dispatched FROM apps WHERE num = ?'),
		allDispatched: db.prepare('SELECT num, dispatched FROM apps'),
		countPending: db.prepare('SELECT count(*) AS n FROM pending WHERE app = ?'),
		// The lowest pending row is of the oldest notification (rows are numbered as they are accepted).
		oldestPending: db.prepare('SELECT n.created_at FROM pending p JOIN notifications n ON n.num = p.notification WHERE p.app = ? ORDER BY p.seq LIMIT 1'),
		countPendingUpTo: db.prepare('SELECT count(*) AS n FROM pending WHERE app = ? AND seq <= ?'),
		getBody: db.prepare('SELECT id, body, created_at FROM notifications WHERE num = ?'),
		deletePending: db.prepare('DELETE FROM pending WHERE seq = ?'),
		countOutcome: db.prepare('UPDATE notifications SET sent = sent + ?, failed = failed + ? WHERE num = ?'),
		insertFailure: db.prepare('INSERT INTO failures (notification, token, status, reason) VALUES (?, ?, ?, ?)'),
		insertFeedback: db.prepare('INSERT INTO feedback (app, token, at, reason, stored_at) VALUES (?, ?, ?, ?, ?)'),
		getStatus: db.prepare('SELECT num, total, sent, failed FROM notifications WHERE id = ? AND app = ?'),
		getFailures: db.prepare('SELECT token, status, reason FROM failures WHERE notification = ? ORDER BY rowid'),
		deleteFeedbackUpTo: db.prepare('DELETE FROM feedback WHERE app = ? AND seq <= ?'),
		getFeedback: db.prepare('SELECT seq, token, at AS "when", reason FROM feedback WHERE app = ? AND seq > ? ORDER BY seq LIMIT ?'),
		getWebhookCursor: db.prepare('SELECT webhook_cursor FROM apps WHERE num = ?'),
		getFeedbackCursors: db.prepare('SELECT feedback_served, webhook_cursor FROM apps WHERE num = ?'),
		setFeedbackServed: db.prepare('UPDATE apps SET feedback_served = max(feedback_served, ?) WHERE num = ? AND feedback_served >= ?'),
		setWebhookCursor: db.prepare('UPDATE apps SET webhook_cursor = ? WHERE num = ?'),
	};
}
