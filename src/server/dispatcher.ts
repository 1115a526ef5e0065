/**
 * Moves one app's stored notifications through its manager and records what became of each. It reads
 * pending rows in order, a chunk at a time and only while the manager has room (so a million pending
 * rows cost a chunk of memory, not a million), sends each run of one notification's tokens as one
 * message, and records the receipts' outcomes in batched transactions: a settled row leaves `pending`
 * in the transaction that records its outcome. Rows a closing manager hands back unsent stay pending for
 * the next manager (an app update, a restart).
 */
import type { ApnsManager, Receipt, SendResult } from '../index.js';
import { backoffDelay } from '../drivers/backoff.js';
import { storedMessage, type StoredBody } from './service.js';
import type { AppRecord, PendingRow, Settlement, Store } from './store.js';

/** Rows read per claim. */
const CHUNK = 2000;
/** Claim more once fewer than this are pending in the manager. */
const LOW_WATER = 4000;
/** Record outcomes at least this often (ms), or as soon as this many wait. */
const SETTLE_EVERY_MS = 25;
const SETTLE_BATCH = 5000;
/** Backoff of reads after the database refused one: 0.5 s doubling to 30 s. */
const STORE_RETRY = { initialDelayMs: 500, maxDelayMs: 30_000, jitter: 0 } as const;
/** Parsed notification bodies kept (a chunk usually spans a handful). */
const BODY_CACHE = 256;

/** What the dispatcher tells the daemon (metrics, logs). */
export interface DispatcherEvents {
	delivered(app: string, count: number): void;
	failed(app: string, reason: string, count: number): void;
	/** Feedback records were stored. */
	feedback(app: string, count: number): void;
	error(app: string, error: Error): void;
}

export class Dispatcher {
	readonly #store: Store;
	readonly #app: AppRecord;
	readonly #manager: ApnsManager;
	readonly #events: DispatcherEvents;
	#cursor = 0;
	#stopped = false;
	/** Destroyed (its app deleted): nothing more is recorded. */
	#destroyed = false;
	/** Resolves when stop() or destroy() is called: no wait of the loop outlasts it. */
	readonly #stopping: Promise<void>;
	#stop!: () => void;
	#wake: (() => void) | undefined;
	readonly #bodies = new Map<number, StoredBody>();
	#outstanding = new Set<Promise<void>>();
	// Outcomes waiting for the next settle transaction.
	#seqs: number[] = [];
	#counts = new Map<number, { sent: number; failed: number }>();
	#failures: Array<Settlement['failures'][number]> = [];
	#feedback: Array<Settlement['feedback'][number]> = [];
	#settleTimer: NodeJS.Timeout | undefined;
	readonly #running: Promise<void>;

	constructor(store: Store, app: AppRecord, manager: ApnsManager, events: DispatcherEvents) {
		this.#store = store;
		this.#app = app;
		this.#manager = manager;
		this.#events = events;
		this.#stopping = new Promise<void>((resolve) => (this.#stop = resolve));
		this.#running = this.#run().catch((error: unknown) => this.#events.error(app.id, error as Error));
	}

	/** New rows were stored for this app. */
	wake(): void {
		const wake = this.#wake;
		this.#wake = undefined;
		wake?.();
	}

	async #run(): Promise<void> {
		let failures = 0;
		while (!this.#stopped) {
			// A gateway that takes nothing keeps the manager full: stopping must not wait for room.
			await Promise.race([this.#manager.onPendingBelow(LOW_WATER), this.#stopping]);
			if (this.#stopped) break;
			let rows: PendingRow[];
			try {
				rows = this.#store.claim(this.#app.num, this.#cursor, CHUNK);
				// Durable before any of them can reach APNs: at a crash, these rows are counted in doubt.
				if (rows.length > 0) this.#store.dispatched(this.#app.num, rows[rows.length - 1]!.seq);
				failures = 0;
			} catch (error) {
				// The database refused (a full disk…): try again, backed off, rather than stop sending for good.
				this.#events.error(this.#app.id, error as Error);
				const delay = backoffDelay(++failures, STORE_RETRY);
				await Promise.race([new Promise((resolve) => setTimeout(resolve, delay).unref()), this.#stopping]);
				continue;
			}
			if (rows.length === 0) {
				await Promise.race([new Promise<void>((resolve) => (this.#wake = resolve)), this.#stopping]);
				continue;
			}
			this.#cursor = rows[rows.length - 1]!.seq;
			this.#send(rows);
		}
	}

	/** Send `rows`: each run of one notification's rows as one message. */
	#send(rows: readonly PendingRow[]): void {
		let start = 0;
		for (let i = 1; i <= rows.length; i++) {
			if (i < rows.length && rows[i]!.notification === rows[start]!.notification) continue;
			const run = rows.slice(start, i);
			start = i;
			const body = this.#body(run[0]!.notification);
			if (body === undefined) continue; // the app was deleted under us
			const tokens = run.map((r) => r.token.toString('hex'));
			let receipt: Receipt;
			try {
				receipt = this.#manager.send(storedMessage(tokens, body));
			} catch (error) {
				// Checked when it was accepted, so this is a manager that refuses it for good (its settings
				// changed): each row fails with the error's code rather than staying pending for ever.
				const reason = (error as { code?: string }).code ?? 'Refused';
				this.#record(run, { sent: [], failed: tokens.map((token) => ({ token, status: 0, reason })), dropped: [] });
				continue;
			}
			const done = receipt.settled.then((result) => this.#record(run, result));
			this.#outstanding.add(done);
			void done.finally(() => this.#outstanding.delete(done));
		}
	}

	#body(num: number): StoredBody | undefined {
		let body = this.#bodies.get(num);
		if (body === undefined) {
			const row = this.#store.notificationBody(num);
			if (row === undefined) return undefined;
			body = JSON.parse(row.body) as StoredBody;
			if (this.#bodies.size >= BODY_CACHE) this.#bodies.delete(this.#bodies.keys().next().value!);
			this.#bodies.set(num, body);
		}
		return body;
	}

	/** Queue the outcomes of one message's rows for the next settle transaction. */
	#record(run: readonly PendingRow[], result: SendResult): void {
		// Rows by token (a token may appear twice in one notification: each outcome takes one row).
		const byToken = new Map<string, number[]>();
		for (const r of run) {
			const hex = r.token.toString('hex');
			const list = byToken.get(hex);
			if (list === undefined) byToken.set(hex, [r.seq]);
			else list.push(r.seq);
		}
		const notification = run[0]!.notification;
		const counts = this.#counts.get(notification) ?? { sent: 0, failed: 0 };
		this.#counts.set(notification, counts);
		for (const s of result.sent) {
			const seq = byToken.get(s.token)?.shift();
			if (seq === undefined) continue;
			this.#seqs.push(seq);
			counts.sent++;
		}
		if (result.sent.length > 0) this.#events.delivered(this.#app.id, result.sent.length);
		for (const f of result.failed) {
			const seq = byToken.get(f.token)?.shift();
			if (seq === undefined) continue;
			this.#seqs.push(seq);
			counts.failed++;
			this.#failures.push({ notification, token: f.token, status: f.status, reason: f.reason });
			this.#events.failed(this.#app.id, f.reason, 1);
			if (f.status === 410) {
				this.#feedback.push({ app: this.#app.num, token: f.token, when: (f.timestamp ?? new Date()).getTime(), reason: f.reason });
			}
		}
		// Dropped (a manager closed before it could send them): they stay pending, for the next manager.
		if (this.#destroyed) return;
		if (this.#seqs.length >= SETTLE_BATCH) this.flush();
		else this.#settleTimer ??= setTimeout(() => this.flush(), SETTLE_EVERY_MS);
	}

	/** Record what settled since the last transaction. */
	flush(): void {
		clearTimeout(this.#settleTimer);
		this.#settleTimer = undefined;
		if (this.#destroyed) return;
		if (this.#seqs.length === 0 && this.#failures.length === 0) return;
		const settlement: Settlement = { seqs: this.#seqs, counts: this.#counts, failures: this.#failures, feedback: this.#feedback };
		this.#seqs = [];
		this.#counts = new Map();
		this.#failures = [];
		this.#feedback = [];
		try {
			this.#store.settle(settlement);
			// Told once stored: a webhook reads them from the store.
			if (settlement.feedback.length > 0) this.#events.feedback(this.#app.id, settlement.feedback.length);
		} catch (error) {
			// Not recorded: the rows stay pending and are sent again at the next start (in doubt).
			this.#events.error(this.#app.id, error as Error);
		}
	}

	/**
	 * Stop taking rows and close the manager within `timeoutMs` (what it could not send stays pending),
	 * then record every outcome.
	 */
	async stop(timeoutMs: number): Promise<void> {
		this.#stopped = true;
		this.#stop();
		await this.#running;
		await this.#manager.close({ timeoutMs }).catch(() => {});
		await Promise.all(this.#outstanding);
		this.flush();
	}

	/** Stop at once: nothing more is recorded (what was in flight stays pending, in doubt). */
	destroy(): void {
		this.#destroyed = true;
		this.#stopped = true;
		this.#stop();
		clearTimeout(this.#settleTimer);
		this.#manager.destroy();
	}
}
