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
	readonly #wake: () => void;
	/** Grants received and not used yet. */
	#credits = 0;
	/** Grants asked of p-queue and not yet received. */
	#asked = 0;
	#wakeQueued = false;
	#closed = false;

	constructor(limit: Required<RateLimit>, wake: () => void) {
		this.#pq = new PQueue({ intervalCap: limit.limit, interval: limit.intervalMs, strict: true });
		this.#limit = limit.limit;
		this.#wake = wake;
	}

	/** Whether one notification may go now. */
	get open(): boolean {
		return this.#credits > 0;
	}

	/** Use one grant; false when there is none (more are asked for by {@link RateGate.want}). */
	take(): boolean {
		if (this.#credits === 0) return false;
		this.#credits--;
		return true;
	}

	/** `waiting` notifications want to go: ask for grants up to what one window allows. */
	want(waiting: number): void {
		const missing = Math.min(waiting, this.#limit) - this.#credits - this.#asked;
		for (let i = 0; i < missing && !this.#closed; i++) {
			this.#asked++;
			void this.#pq.add(() => this.#grant());
		}
	}

	/** Stop granting; drop what was asked. */
	close(): void {
		this.#closed = true;
		this.#pq.clear();
	}

	#grant(): void {
		this.#asked--;
		if (this.#closed) return;
		this.#credits++;
		// Grants come in bursts (a window opening): one wake for all of them.
		if (this.#wakeQueued) return;
		this.#wakeQueued = true;
		queueMicrotask(() => {
			this.#wakeQueued = false;
			this.#wake();
		});
	}
}
