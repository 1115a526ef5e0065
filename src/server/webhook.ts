/**
 * Feedback webhooks: an app with `webhook: { url, secret }` gets its feedback records POSTed in batches,
 * in order, each batch until the receiver answers 2xx (retried with capped, jittered backoff; never
 * skipped). Each POST is signed as Stripe signs: `apns-worker-signature: t=<unix seconds>,v1=<hex
 * HMAC-SHA256(secret, "<t>.<body>")>`, so a receiver can tell our deliveries from a stranger's and refuse
 * old ones (replays). Neither the URL nor a body is logged. p-queue bounds how many apps deliver at once. The app's cursor in the store moves only past
 * what a receiver accepted, so a restart goes on where it stopped (a batch may arrive twice — also when
 * several daemons share one Redis and more than one delivers; records carry their `seq` for that).
 */
import { createHmac } from 'node:crypto';
import PQueue from 'p-queue';
import type { Logger } from 'pino';
import { backoffDelay } from '../drivers/backoff.js';

/** Where the feedback comes from: the SQLite store, or Redis. Apps are named by a key of the source's. */
export interface FeedbackSource {
	/** Records after the webhook's cursor, oldest first. */
	batch(key: string, limit: number): ReadonlyArray<FeedbackItem> | Promise<ReadonlyArray<FeedbackItem>>;
	/** The receiver has every record up to `seq`. */
	delivered(key: string, seq: number): void | Promise<void>;
	/**
	 * Where several daemons share the feedback (Redis): take, or extend, this daemon's turn to deliver
	 * `key`'s records; false while another daemon has it. Without it, this daemon always delivers.
	 */
	claim?(key: string): Promise<boolean>;
	/** Give the turn up (the records are all delivered, or the receiver is failing). */
	release?(key: string): Promise<void>;
}

export interface FeedbackItem {
	readonly seq: number;
	readonly token: string;
	readonly when: number;
	readonly reason: string;
}

/** Records per POST. */
export const WEBHOOK_BATCH = 500;
/** Webhook deliveries in progress at once, over all apps. */
const CONCURRENCY = 4;
const REQUEST_TIMEOUT_MS = 10_000;
/** While another daemon delivers an app's records, look again this often (it may stop, or die). */
const HELD_RETRY_MS = 15_000;
/** Between failed deliveries to one receiver: 1 s doubling to 60 s, up to a fifth less for jitter. */
const BACKOFF = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 } as const;

/** The header a delivery's signature is in. */
export const SIGNATURE_HEADER = 'apns-worker-signature';

/** The signature of `body` sent at `t` (unix seconds) with `secret`: the header's value. */
export function signature(secret: string, t: number, body: string): string {
	return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`;
}

interface Target {
	url: string;
	app: string;
	/** Signs every delivery; undefined for an app stored before webhooks were signed. */
	secret: string | undefined;
	busy: boolean;
	again: boolean;
	failures: number;
	timer: NodeJS.Timeout | undefined;
}

export class Webhooks {
	readonly #source: FeedbackSource;
	readonly #log: Logger;
	readonly #queue = new PQueue({ concurrency: CONCURRENCY });
	readonly #targets = new Map<string, Target>();
	#closed = false;

	constructor(source: FeedbackSource, log: Logger) {
		this.#source = source;
		this.#log = log;
	}

	/** The app `app` (the source's `key`) may have records for `url`: deliver them, signed with `secret`. */
	wake(key: string, url: string, app: string, secret: string | undefined): void {
		if (this.#closed) return;
		let t = this.#targets.get(key);
		if (t === undefined) {
			t = { url, app, secret, busy: false, again: false, failures: 0, timer: undefined };
			this.#targets.set(key, t);
		}
		if (t.url !== url || t.secret !== secret) {
			// Another URL or secret: a fresh target (a delivery to the old one in progress sees it was replaced).
			clearTimeout(t.timer);
			t = { url, app, secret, busy: false, again: false, failures: 0, timer: undefined };
			this.#targets.set(key, t);
		}
		if (t.busy || t.timer !== undefined) {
			t.again = true;
			return;
		}
		t.busy = true;
		void this.#queue.add(() => this.#deliver(key, t));
	}

	async #deliver(key: string, t: Target): Promise<void> {
		for (;;) {
			t.again = false;
			let failure: string | undefined;
			let last = 0;
			if (this.#source.claim !== undefined) {
				// One daemon at a time per app: the others would POST the same records again.
				const mine = await this.#source.claim(key).catch(() => false);
				if (!mine) return this.#later(key, t, HELD_RETRY_MS);
			}
			try {
				const batch = await this.#source.batch(key, WEBHOOK_BATCH);
				if (batch.length === 0 || this.#closed) break;
				last = batch[batch.length - 1]!.seq;
				const body = JSON.stringify({ app: t.app, feedback: batch.map((r) => ({ seq: r.seq, token: r.token, when: new Date(r.when).toISOString(), reason: r.reason })) });
				const headers: Record<string, string> = { 'content-type': 'application/json' };
				if (t.secret !== undefined) headers[SIGNATURE_HEADER] = signature(t.secret, Math.floor(Date.now() / 1000), body);
				// Never followed: a redirect turns the POST into a body-less GET whose 200 would count as delivered.
				const res = await fetch(t.url, { method: 'POST', headers, body, redirect: 'manual', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
				await res.body?.cancel();
				if (res.status < 200 || res.status > 299) failure = `HTTP ${res.status}${res.status >= 300 && res.status < 400 ? ' (a redirect: give the final URL)' : ''}`;
			} catch (error) {
				failure = (error as Error).message;
			}
			// Forgotten meanwhile (the app deleted, its webhook removed or changed): this delivery is over.
			if (this.#closed || this.#targets.get(key) !== t) return;
			if (failure === undefined) {
				try {
					await this.#source.delivered(key, last);
					t.failures = 0;
					continue;
				} catch (error) {
					failure = `cursor not stored: ${(error as Error).message}`;
				}
			}
			t.failures++;
			const delay = backoffDelay(t.failures, BACKOFF);
			this.#log.warn({ app: t.app, failures: t.failures, retryInMs: Math.round(delay), error: failure }, 'feedback webhook failed; retrying');
			await this.#source.release?.(key).catch(() => {});
			return this.#later(key, t, delay);
		}
		await this.#source.release?.(key).catch(() => {});
		t.busy = false;
		if (t.again && !this.#closed) this.wake(key, t.url, t.app, t.secret);
	}

	/** Deliver `key`'s records again in `delay` ms. */
	#later(key: string, t: Target, delay: number): void {
		t.busy = false;
		t.timer = setTimeout(() => {
			t.timer = undefined;
			if (this.#targets.get(key) === t) this.wake(key, t.url, t.app, t.secret);
		}, delay);
		t.timer.unref();
	}

	/** Forget an app (deleted, or its webhook removed). */
	forget(key: string): void {
		const t = this.#targets.get(key);
		if (t !== undefined) clearTimeout(t.timer);
		this.#targets.delete(key);
	}

	close(): void {
		this.#closed = true;
		for (const t of this.#targets.values()) clearTimeout(t.timer);
		this.#queue.clear();
	}
}
