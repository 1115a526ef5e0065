/**
 * The daemon's embedded store: one SQLite file (better-sqlite3) in the data directory. It keeps the
 * apps (their settings, and their credentials sealed by {@link SecretBox}), every accepted notification
 * until it is settled, the outcomes for a retention period, and the feedback until it is read past.
 *
 * Durability: WAL with `synchronous = FULL`, so a transaction that returned is on disk; the API answers
 * 202 only after the transaction that stored the notifications returned.
 *
 * A notification to N tokens is one `notifications` row and N `pending` rows (the token as 32 bytes).
 * Every table's rows are numbered by AUTOINCREMENT: numbers are never reused, so a cursor (what a
 * manager was handed, what a reader read past) stays meaningful when the rows before it are deleted, and
 * nothing that remembers a number (a cached body, a late outcome) can reach a newer row that took it.
 * A pending row is deleted in the same transaction that records its outcome, so after a crash what is
 * left in `pending` is exactly what was not settled. Each app keeps the highest pending row it handed to
 * its manager (`dispatched`): at start, the rows at or below it were in flight at the crash — in doubt.
 */
import { chmodSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { ServerError } from '../errors.js';

/** The settings of an app as stored (never a secret: those are in `sealed`). */
export interface AppRecord {
	readonly id: string;
	/** Its row number: pending rows and outcomes refer to it. */
	readonly num: number;
	/** JSON of the app's public settings. */
	readonly settings: string;
	/** Its credentials, sealed (see SecretBox); undefined when it has none. */
	readonly sealed: string | undefined;
	readonly createdAt: number;
	readonly updatedAt: number;
}

/** One notification to store: its id, the JSON of what to send, its tokens as 32-byte buffers. */
export interface NewNotification {
	readonly id: string;
	readonly body: string;
	readonly tokens: readonly Buffer[];
}

/** A pending row handed to a manager. */
export interface PendingRow {
	readonly seq: number;
	readonly notification: number;
	readonly token: Buffer;
}

/** What a settlement records, in one transaction. */
export interface Settlement {
	/** Pending rows settled (delivered or failed for good). */
	readonly seqs: readonly number[];
	/** Per notification row: how many were delivered and how many failed. */
	readonly counts: ReadonlyMap<number, { sent: number; failed: number }>;
	readonly failures: ReadonlyArray<{ notification: number; token: string; status: number; reason: string }>;
	/** 410s (and feedback-service records): the app's feedback. */
	readonly feedback: ReadonlyArray<{ app: number; token: string; when: number; reason: string }>;
}

export interface NotificationStatus {
	readonly id: string;
	readonly total: number;
	readonly sent: number;
	readonly failed: number;
	readonly failures: Array<{ token: string; status: number; reason: string }>;
}

export interface FeedbackRecord {
	readonly seq: number;
	readonly token: string;
	readonly when: number;
	readonly reason: string;
}

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

/** The store. Synchronous (better-sqlite3): each call is one statement or one transaction. */
export class Store {
	readonly path: string;
	readonly #db: Database.Database;
	readonly #q: ReturnType<typeof prepare>;
	readonly #accept: (app: number, notifications: readonly NewNotification[], now: number, idempotency: { key: string; response: string } | undefined) => void;
	readonly #settle: (s: Settlement) => void;

	constructor(dir: string) {
		mkdirSync(dir, { recursive: true, mode: 0o700 });
		this.path = join(dir, 'apns-worker.db');
		this.#db = new Database(this.path, { timeout: 0 });
		// Payloads, tokens and sealed credentials: for the daemon's user only (the WAL takes the same mode).
		chmodSync(this.path, 0o600);
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
		this.#db.exec(SCHEMA);
		const q = prepare(this.#db);
		this.#q = q;
		this.#accept = this.#db.transaction((app: number, notifications: readonly NewNotification[], now: number, idempotency: { key: string; response: string } | undefined) => {
			for (const n of notifications) {
				const num = Number(q.insertNotification.run(n.id, app, n.body, n.tokens.length, now).lastInsertRowid);
				for (const token of n.tokens) q.insertPending.run(app, num, token);
			}
			if (idempotency !== undefined) q.insertIdempotency.run(app, idempotency.key, idempotency.response, now);
		});
		this.#settle = this.#db.transaction((s: Settlement) => {
			for (const seq of s.seqs) q.deletePending.run(seq);
			for (const [num, c] of s.counts) q.countOutcome.run(c.sent, c.failed, num);
			for (const f of s.failures) q.insertFailure.run(f.notification, f.token, f.status, f.reason);
			const now = Date.now();
			for (const f of s.feedback) q.insertFeedback.run(f.app, f.token, f.when, f.reason, now);
		});
	}

	getMeta(key: string): string | undefined {
		return (this.#q.getMeta.get(key) as { value: string } | undefined)?.value;
	}

	setMeta(key: string, value: string): void {
		this.#q.setMeta.run(key, value);
	}

	/** Create or update an app; true when it was created. */
	putApp(id: string, settings: string, sealed: string | undefined, now: number): { app: AppRecord; created: boolean } {
		const existing = this.getApp(id);
		if (existing === undefined) this.#q.insertApp.run(id, settings, sealed ?? null, now, now);
		else this.#q.updateApp.run(settings, sealed ?? null, now, id);
		return { app: this.getApp(id)!, created: existing === undefined };
	}

	getApp(id: string): AppRecord | undefined {
		const row = this.#q.getApp.get(id) as AppRow | undefined;
		return row === undefined ? undefined : toApp(row);
	}

	listApps(): AppRecord[] {
		return (this.#q.listApps.all() as AppRow[]).map(toApp);
	}

	/** Delete an app with everything it had; the number of notifications still pending that were dropped. */
	deleteApp(app: AppRecord): number {
		return this.#db.transaction(() => {
			const dropped = Number((this.#q.countPending.get(app.num) as { n: number }).n);
			this.#db.prepare('DELETE FROM pending WHERE app = ?').run(app.num);
			this.#db.prepare('DELETE FROM failures WHERE notification IN (SELECT num FROM notifications WHERE app = ?)').run(app.num);
			this.#db.prepare('DELETE FROM notifications WHERE app = ?').run(app.num);
			this.#db.prepare('DELETE FROM feedback WHERE app = ?').run(app.num);
			this.#db.prepare('DELETE FROM idempotency WHERE app = ?').run(app.num);
			this.#db.prepare('DELETE FROM apps WHERE num = ?').run(app.num);
			return dropped;
		})();
	}

	/** Store notifications (and the answer to an idempotency key) in one durable transaction. */
	accept(app: number, notifications: readonly NewNotification[], now: number, idempotency?: { key: string; response: string }): void {
		this.#accept(app, notifications, now, idempotency);
	}

	/** The stored answer to an earlier request with this idempotency key. */
	idempotent(app: number, key: string): string | undefined {
		return (this.#q.getIdempotency.get(app, key) as { response: string } | undefined)?.response;
	}

	/** Pending rows of `app` after `seq`, oldest first. */
	claim(app: number, after: number, limit: number): PendingRow[] {
		return this.#q.claim.all(app, after, limit) as PendingRow[];
	}

	/** Remember the highest row handed to the app's manager. */
	dispatched(app: number, seq: number): void {
		this.#q.setDispatched.run(seq, app);
	}

	/** At start: the app's pending rows that were handed to its manager before the daemon stopped (in doubt). */
	inDoubt(app: AppRecord): number {
		const dispatched = (this.#q.getDispatched.get(app.num) as { dispatched: number }).dispatched;
		return Number((this.#q.countPendingUpTo.get(app.num, dispatched) as { n: number }).n);
	}

	pendingCount(app: number): number {
		return Number((this.#q.countPending.get(app) as { n: number }).n);
	}

	notificationBody(num: number): { id: string; body: string } | undefined {
		return this.#q.getBody.get(num) as { id: string; body: string } | undefined;
	}

	settle(s: Settlement): void {
		this.#settle(s);
	}

	status(app: number, id: string): NotificationStatus | undefined {
		const row = this.#q.getStatus.get(id, app) as { num: number; total: number; sent: number; failed: number } | undefined;
		if (row === undefined) return undefined;
		const failures = this.#q.getFailures.all(row.num) as Array<{ token: string; status: number; reason: string }>;
		return { id, total: row.total, sent: row.sent, failed: row.failed, failures };
	}

	/**
	 * Feedback of `app` after `after`, at most `limit`; what is at or below `after` was read past and is
	 * deleted — with a webhook, only once the webhook has it too.
	 */
	feedback(app: number, after: number, limit: number, webhook: boolean): FeedbackRecord[] {
		const upTo = webhook ? Math.min(after, (this.#q.getWebhookCursor.get(app) as { webhook_cursor: number }).webhook_cursor) : after;
		if (upTo > 0) this.#q.deleteFeedbackUpTo.run(app, upTo);
		return this.#q.getFeedback.all(app, after, limit) as FeedbackRecord[];
	}

	/** Feedback after the webhook's cursor (not deleted: the API's readers may not have read it). */
	webhookBatch(app: number, limit: number): FeedbackRecord[] {
		const cursor = (this.#q.getWebhookCursor.get(app) as { webhook_cursor: number } | undefined)?.webhook_cursor ?? 0;
		return this.#q.getFeedback.all(app, cursor, limit) as FeedbackRecord[];
	}

	webhookDelivered(app: number, seq: number): void {
		this.#q.setWebhookCursor.run(seq, app);
	}

	/**
	 * Drop settled notifications, idempotency answers and unread feedback older than `before`; how many
	 * notifications. The feedback of the apps in `webhooks` is kept until their webhook has it.
	 */
	prune(before: number, webhooks: readonly number[] = []): number {
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

	close(): void {
		this.#db.close();
	}
}

interface AppRow {
	num: number;
	id: string;
	settings: string;
	sealed: string | null;
	created_at: number;
	updated_at: number;
}

function toApp(row: AppRow): AppRecord {
	return { id: row.id, num: row.num, settings: row.settings, sealed: row.sealed ?? undefined, createdAt: row.created_at, updatedAt: row.updated_at };
}

function prepare(db: Database.Database) {
	return {
		getMeta: db.prepare('SELECT value FROM meta WHERE key = ?'),
		setMeta: db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
		insertApp: db.prepare('INSERT INTO apps (id, settings, sealed, created_at, updated_at) VALUES (?, ?, ?, ?, ?)'),
		updateApp: db.prepare('UPDATE apps SET settings = ?, sealed = ?, updated_at = ? WHERE id = ?'),
		getApp: db.prepare('SELECT num, id, settings, sealed, created_at, updated_at FROM apps WHERE id = ?'),
		listApps: db.prepare('SELECT num, id, settings, sealed, created_at, updated_at FROM apps ORDER BY id'),
		insertNotification: db.prepare('INSERT INTO notifications (id, app, body, total, created_at) VALUES (?, ?, ?, ?, ?)'),
		insertPending: db.prepare('INSERT INTO pending (app, notification, token) VALUES (?, ?, ?)'),
		insertIdempotency: db.prepare('INSERT INTO idempotency (app, key, response, created_at) VALUES (?, ?, ?, ?)'),
		getIdempotency: db.prepare('SELECT response FROM idempotency WHERE app = ? AND key = ?'),
		claim: db.prepare('SELECT seq, notification, token FROM pending WHERE app = ? AND seq > ? ORDER BY seq LIMIT ?'),
		setDispatched: db.prepare('UPDATE apps SET dispatched = max(dispatched, ?) WHERE num = ?'),
		getDispatched: db.prepare('SELECT dispatched FROM apps WHERE num = ?'),
		countPending: db.prepare('SELECT count(*) AS n FROM pending WHERE app = ?'),
		countPendingUpTo: db.prepare('SELECT count(*) AS n FROM pending WHERE app = ? AND seq <= ?'),
		getBody: db.prepare('SELECT id, body FROM notifications WHERE num = ?'),
		deletePending: db.prepare('DELETE FROM pending WHERE seq = ?'),
		countOutcome: db.prepare('UPDATE notifications SET sent = sent + ?, failed = failed + ? WHERE num = ?'),
		insertFailure: db.prepare('INSERT INTO failures (notification, token, status, reason) VALUES (?, ?, ?, ?)'),
		insertFeedback: db.prepare('INSERT INTO feedback (app, token, at, reason, stored_at) VALUES (?, ?, ?, ?, ?)'),
		getStatus: db.prepare('SELECT num, total, sent, failed FROM notifications WHERE id = ? AND app = ?'),
		getFailures: db.prepare('SELECT token, status, reason FROM failures WHERE notification = ? ORDER BY rowid'),
		deleteFeedbackUpTo: db.prepare('DELETE FROM feedback WHERE app = ? AND seq <= ?'),
		getFeedback: db.prepare('SELECT seq, token, at AS "when", reason FROM feedback WHERE app = ? AND seq > ? ORDER BY seq LIMIT ?'),
		getWebhookCursor: db.prepare('SELECT webhook_cursor FROM apps WHERE num = ?'),
		setWebhookCursor: db.prepare('UPDATE apps SET webhook_cursor = ? WHERE num = ?'),
	};
}
