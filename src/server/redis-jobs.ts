/**
 * One BullMQ job of the Redis daemon: up to {@link JOB_TOKENS} tokens of one notification. The job is
 * sent through the app's manager in messages of {@link MESSAGE_TOKENS}; as receipts settle, their
 * outcomes are recorded in Redis with the job's progress bitmap ({@link JobRun.record}): one script call
 * per flush — once {@link FLUSH_OUTCOMES} wait, or {@link FLUSH_MS} after the first, and at the job's end
 * — not one command per token. A daemon that takes the job over after a crash sends only the tokens
 * whose bit is not set — the ones in doubt.
 *
 * The sizes keep Redis' work per notification small: BullMQ runs about 33 commands per job (add, take,
 * finish, their events), and each flush about 10, so a job of 5,000 tokens costs about 0.02 commands a
 * notification, a job of 500 about 0.1.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { SendResult } from '../index.js';
import { backoffDelay } from '../drivers/backoff.js';
import type { RedisFailure, RedisJobRef, RedisStore } from './redis-store.js';
import type { StoredBody } from './service.js';

/** Tokens per job (a notification entry to more tokens is split into several jobs). */
export const JOB_TOKENS = 5000;
/** Tokens per message handed to the manager: the finest grain progress is recorded at. */
export const MESSAGE_TOKENS = 100;
/** Outcomes wait at most this long (ms) before they are recorded… */
export const FLUSH_MS = 250;
/** …or until this many wait. */
export const FLUSH_OUTCOMES = 1000;
/** Retries of a flush Redis refused: 0.25 s doubling to 5 s, until it is stored or the daemon gives up. */
const FLUSH_RETRY = { initialDelayMs: 250, maxDelayMs: 5000, jitter: 0.2 } as const;

/** A job's data (short keys: it is stored once per job). */
export interface JobData {
	/** App id. */
	readonly a: string;
	/** App incarnation. */
	readonly g: string;
	/** Notification id. */
	readonly n: string;
	/** The tokens, 32 bytes each, concatenated, base64. */
	readonly t: string;
	readonly b: StoredBody;
}

/** What a run tells the daemon (metrics, webhooks, logs). */
export interface JobEvents {
	delivered(count: number): void;
	failed(reason: string, count: number): void;
	feedback(count: number): void;
	/** A flush failed (Redis unreachable): it is retried. */
	retrying(error: Error, attempt: number): void;
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

export class JobRun {
	readonly #store: RedisStore;
	readonly #job: RedisJobRef;
	readonly #events: JobEvents;
	readonly #abandoned: AbortSignal;
	/** Delivered since the last flush. */
	#sent: Uint8Array;
	#anySent = false;
	#failures: RedisFailure[] = [];
	/** Outcomes waiting for the next flush. */
	#waiting = 0;
	#timer: NodeJS.Timeout | undefined;
	#chain: Promise<void> = Promise.resolve();
	/** Tokens a closing manager handed back unsent: the job is run again. */
	dropped = 0;
	/** Tokens whose outcome (delivered or failed) was taken for recording. */
	recorded = 0;

	/** @param abandoned - aborted when the daemon stops waiting for Redis (its flushes give up). */
	constructor(store: RedisStore, job: RedisJobRef, events: JobEvents, abandoned: AbortSignal) {
		this.#store = store;
		this.#job = job;
		this.#events = events;
		this.#abandoned = abandoned;
		this.#sent = new Uint8Array(Math.ceil(job.count / 8));
	}

	/** The outcome of one message: `indices[i]` is the job index of its i-th token (`tokens[i]`, hex). */
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
		for (const f of result.failed) {
			const index = byToken.get(f.token)?.shift();
			if (index === undefined) continue;
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

	/** Record what settled since the last flush (flushes run one after another). */
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

	async #write(sent: Uint8Array, failures: readonly RedisFailure[]): Promise<void> {
		for (let attempt = 1; ; attempt++) {
			try {
				const done = await this.#store.settle(this.#job, sent, failures, Date.now());
				if (done.sent > 0) this.#events.delivered(done.sent);
				const reasons = new Map<string, number>();
				for (const f of failures) reasons.set(f.reason, (reasons.get(f.reason) ?? 0) + 1);
				for (const [reason, n] of reasons) this.#events.failed(reason, n);
				if (done.feedback > 0) this.#events.feedback(done.feedback);
				return;
			} catch (error) {
				// Unrecorded outcomes stay in doubt: if the daemon gives up, whoever runs the job next sends them again.
				if (this.#abandoned.aborted) throw error;
				this.#events.retrying(error as Error, attempt);
				await sleep(backoffDelay(attempt, FLUSH_RETRY), undefined, { signal: this.#abandoned }).catch(() => {});
			}
		}
	}
}
