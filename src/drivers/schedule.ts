/**
 * Timing helpers every backend shares. (It imports nothing: a worker thread loads it, and options.ts with
 * what that imports would add to every thread's start.)
 */

/** The longest delay `setTimeout` honours (2^31−1 ms, ~24.8 days); longer ones fire after 1 ms. */
export const MAX_TIMER_MS = 0x7fff_ffff;

/** After `close()` has ended a connection whose work is all settled, how long its peer may take to close it too. */
export const CLOSE_LINGER_MS = 2000;

/**
 * Wrap `run` so that any number of calls within one turn of the event loop run it once, on the next
 * turn: `wake()` is called for every push, settle and drain, and the work it triggers is a loop anyway.
 */
export function coalesced(run: () => void): () => void {
	let scheduled = false;
	return () => {
		if (scheduled) return;
		scheduled = true;
		setImmediate(() => {
			scheduled = false;
			run();
		});
	};
}

/**
 * Items that fall due at given times, handed to `onDue` in batches, in due order. A binary min-heap with
 * one timer armed for the earliest: adding is O(log n) and a due batch of k costs O(k log n), so a
 * million notifications waiting out a retry delay cost no more per answer than ten do.
 */
export class DueQueue<T> {
	readonly #onDue: (items: T[]) => void;
	readonly #now: () => number;
	#at: number[] = [];
	#items: T[] = [];
	#timer: NodeJS.Timeout | undefined;
	/** When the armed timer fires (Infinity when none is armed). */
	#armedFor = Infinity;

	/** @param now - the clock, in ms (tests inject one). */
	constructor(onDue: (items: T[]) => void, now: () => number = () => performance.now()) {
		this.#onDue = onDue;
		this.#now = now;
	}

	get size(): number {
		return this.#items.length;
	}

	/** Hand `item` to `onDue` after `delayMs` (clamped to what a timer can hold). */
	add(item: T, delayMs: number): void {
		const at = this.#now() + Math.min(Math.max(0, delayMs), MAX_TIMER_MS);
		let i = this.#items.length;
		this.#at.push(at);
		this.#items.push(item);
		while (i > 0) {
			const parent = (i - 1) >> 1;
			if (this.#at[parent]! <= at) break;
			this.#swap(i, parent);
			i = parent;
		}
		if (at < this.#armedFor) this.#arm();
	}

	/** Drop everything without handing it over. */
	/** Remove everything without running it; returns what was waiting. */
	clear(): T[] {
		clearTimeout(this.#timer);
		this.#timer = undefined;
		this.#armedFor = Infinity;
		const items = this.#items;
		this.#at = [];
		this.#items = [];
		return items;
	}

	#arm(): void {
		clearTimeout(this.#timer);
		this.#timer = undefined;
		this.#armedFor = Infinity;
		if (this.#items.length === 0) return;
		const at = this.#at[0]!;
		this.#armedFor = at;
		this.#timer = setTimeout(() => this.#fire(), Math.max(0, at - this.#now()));
	}

	#fire(): void {
		this.#timer = undefined;
		this.#armedFor = Infinity;
		const now = this.#now();
		const due: T[] = [];
		while (this.#items.length > 0 && this.#at[0]! <= now) due.push(this.#pop());
		this.#arm();
		if (due.length > 0) this.#onDue(due);
	}

	#pop(): T {
		const top = this.#items[0]!;
		const lastAt = this.#at.pop()!;
		const lastItem = this.#items.pop()!;
		const n = this.#items.length;
		if (n > 0) {
			this.#at[0] = lastAt;
			this.#items[0] = lastItem;
			let i = 0;
			for (;;) {
				const l = 2 * i + 1;
				const r = l + 1;
				let m = i;
				if (l < n && this.#at[l]! < this.#at[m]!) m = l;
				if (r < n && this.#at[r]! < this.#at[m]!) m = r;
				if (m === i) break;
				this.#swap(i, m);
				i = m;
			}
		}
		return top;
	}

	#swap(a: number, b: number): void {
		const at = this.#at[a]!;
		this.#at[a] = this.#at[b]!;
		this.#at[b] = at;
		const item = this.#items[a]!;
		this.#items[a] = this.#items[b]!;
		this.#items[b] = item;
	}
}
