/**
 * The `rateLimit` option: at most `limit` notifications handed to the wire in any `intervalMs` window.
 * p-queue keeps the window (its strict, sliding-window mode); each of its tasks grants one notification.
 * The queue asks for grants only while work is waiting, and never for more than one window holds, so a
 * million queued notifications are never a million p-queue tasks.
 */
import PQueue from 'p-queue';
import type { RateLimit } from './options.js';

export class RateGate {
	readonly #pq: PQueue;
	readonly #limit: number;
	readonly #intervalMs: number;
	readonly #wake: () => void;
	/**
	 * When each unused grant came (Date.now, as p-queue counts). A grant unused for a whole interval
	 * lapses: p-queue's window no longer counts it, so spending it beside fresh ones would exceed the limit.
	 */
	#credits: number[] = [];
	#head = 0;
	/**
	 * When the last `limit` grants were used, oldest first (a ring). Grants come within p-queue's window,
	 * but one may be used later than it came; counting uses too keeps *sends* within the limit in any
	 * window, exactly.
	 */
	readonly #uses: Float64Array;
	#useAt = 0;
	#useTimer: NodeJS.Timeout | undefined;
	/** Grants asked of p-queue and not yet received. */
	#asked = 0;
	#wakeQueued = false;
	#closed = false;

	constructor(limit: Required<RateLimit>, wake: () => void) {
		this.#pq = new PQueue({ intervalCap: limit.limit, interval: limit.intervalMs, strict: true });
		this.#limit = limit.limit;
		this.#intervalMs = limit.intervalMs;
		this.#uses = new Float64Array(limit.limit).fill(-Infinity);
		this.#wake = wake;
	}

	/** Whether one notification may go now. */
	get open(): boolean {
		return this.#available() > 0 && this.#windowHasRoom();
	}

	/** Use one grant; false when there is none (more are asked for by {@link RateGate.want}). */
	take(): boolean {
		if (!this.open) return false;
		this.#head++;
		this.#uses[this.#useAt] = Date.now();
		this.#useAt = (this.#useAt + 1) % this.#uses.length;
		return true;
	}

	/** Fewer than `limit` uses in the last interval; if not, wake when the oldest leaves it. */
	#windowHasRoom(): boolean {
		const oldest = this.#uses[this.#useAt]!; // the ring's next slot holds its oldest use
		const wait = oldest + this.#intervalMs - Date.now();
		if (wait <= 0) return true;
		if (this.#useTimer === undefined && !this.#closed) {
			this.#useTimer = setTimeout(() => {
				this.#useTimer = undefined;
				this.#wake();
			}, wait);
		}
		return false;
	}

	/** Unused grants still inside their window (lapsed ones are dropped). */
	#available(): number {
		const credits = this.#credits;
		if (this.#head === credits.length) return 0;
		const oldest = Date.now() - this.#intervalMs;
		while (this.#head < credits.length && credits[this.#head]! <= oldest) this.#head++;
		if (this.#head === credits.length) {
			this.#credits = [];
			this.#head = 0;
			return 0;
		}
		return credits.length - this.#head;
	}

	/** `waiting` notifications want to go: ask for grants up to what one window allows. */
	want(waiting: number): void {
		const missing = Math.min(waiting, this.#limit) - this.#available() - this.#asked;
		for (let i = 0; i < missing && !this.#closed; i++) {
			this.#asked++;
			void this.#pq.add(() => this.#grant());
		}
	}

	/** Stop granting; drop what was asked. */
	close(): void {
		this.#closed = true;
		clearTimeout(this.#useTimer);
		this.#pq.clear();
	}

	#grant(): void {
		this.#asked--;
		if (this.#closed) return;
		if (this.#head > 1024 && this.#head * 2 > this.#credits.length) {
			this.#credits = this.#credits.slice(this.#head);
			this.#head = 0;
		}
		this.#credits.push(Date.now());
		// Grants come in bursts (a window opening): one wake for all of them.
		if (this.#wakeQueued) return;
		this.#wakeQueued = true;
		queueMicrotask(() => {
			this.#wakeQueued = false;
			this.#wake();
		});
	}
}
