/**
 * A growable ring of notifications, as a struct of arrays: no object per notification. The queue keeps
 * its re-sends in one; the binary driver keeps what each connection has written and not yet had settled
 * in one.
 */
import type { Message } from './message.js';
import type { Cursor, InFlight } from './queue.js';

export class Ring {
	#cap: number;
	#mask: number;
	#head = 0;
	#size = 0;
	#msg: Array<Message | undefined>;
	#index: Uint32Array;
	#ident: Uint32Array;
	#tries: Uint8Array;

	/** `capacity`: how many it is expected to hold (rounded up to a power of two); it grows past that if need be. */
	constructor(capacity = 1024) {
		const cap = 2 ** Math.ceil(Math.log2(Math.max(16, capacity)));
		this.#cap = cap;
		this.#mask = cap - 1;
		this.#msg = new Array<Message | undefined>(cap);
		this.#index = new Uint32Array(cap);
		this.#ident = new Uint32Array(cap);
		this.#tries = new Uint8Array(cap);
	}

	get size(): number {
		return this.#size;
	}

	/** How many it holds before it grows. */
	get capacity(): number {
		return this.#cap;
	}

	#grow(): void {
		const cap = this.#cap * 2;
		const msg = new Array<Message | undefined>(cap);
		const index = new Uint32Array(cap);
		const ident = new Uint32Array(cap);
		const tries = new Uint8Array(cap);
		for (let i = 0; i < this.#size; i++) {
			const from = (this.#head + i) & this.#mask;
			msg[i] = this.#msg[from];
			index[i] = this.#index[from]!;
			ident[i] = this.#ident[from]!;
			tries[i] = this.#tries[from]!;
		}
		this.#msg = msg;
		this.#index = index;
		this.#ident = ident;
		this.#tries = tries;
		this.#cap = cap;
		this.#mask = cap - 1;
		this.#head = 0;
	}

	#set(at: number, message: Message, index: number, ident: number, tries: number): void {
		this.#msg[at] = message;
		this.#index[at] = index;
		this.#ident[at] = ident;
		this.#tries[at] = tries;
	}

	push(message: Message, index: number, ident: number, tries: number): void {
		if (this.#size === this.#cap) this.#grow();
		this.#set((this.#head + this.#size) & this.#mask, message, index, ident, tries);
		this.#size++;
	}

	/**
	 * Append `count` notifications of one message at once: indexes `index`… and idents `ident`… in step,
	 * one attempt count (a run from the queue's `takeRun`: its idents never wrap).
	 */
	pushRun(message: Message, index: number, ident: number, tries: number, count: number): void {
		while (this.#size + count > this.#cap) this.#grow();
		const mask = this.#mask;
		let at = (this.#head + this.#size) & mask;
		for (let k = 0; k < count; k++) {
			this.#msg[at] = message;
			this.#index[at] = index + k;
			this.#ident[at] = ident + k;
			this.#tries[at] = tries;
			at = (at + 1) & mask;
		}
		this.#size += count;
	}

	unshift(message: Message, index: number, ident: number, tries: number): void {
		if (this.#size === this.#cap) this.#grow();
		this.#head = (this.#head - 1) & this.#mask;
		this.#set(this.#head, message, index, ident, tries);
		this.#size++;
	}

	#at(i: number): number {
		return (this.#head + i) & this.#mask;
	}

	message(i: number): Message {
		return this.#msg[this.#at(i)]!;
	}
	index(i: number): number {
		return this.#index[this.#at(i)]!;
	}
	ident(i: number): number {
		return this.#ident[this.#at(i)]!;
	}
	tries(i: number): number {
		return this.#tries[this.#at(i)]!;
	}
	/** Entry `i`, as an object of its own (it outlives the ring's slot). */
	entry(i: number): InFlight {
		const at = this.#at(i);
		return { message: this.#msg[at]!, index: this.#index[at]!, ident: this.#ident[at]!, tries: this.#tries[at]! };
	}

	/** Copy entry `i` into `into` (no object made: the hot paths' way). */
	read(i: number, into: Cursor): void {
		const at = this.#at(i);
		into.message = this.#msg[at]!;
		into.index = this.#index[at]!;
		into.ident = this.#ident[at]!;
		into.tries = this.#tries[at]!;
	}

	/** Count one more attempt for entry `i` (capped at 255). */
	bumpTries(i: number): void {
		const at = this.#at(i);
		if (this.#tries[at]! < 255) this.#tries[at]!++;
	}

	/**
	 * Empty entry `i` in place (its message reads as undefined after): a hole, for an owner that removes
	 * entries out of order and drops the holes once they reach the front.
	 */
	clear(i: number): void {
		this.#msg[this.#at(i)] = undefined;
	}

	/** Whether entry `i` is a hole left by {@link clear}. */
	isHole(i: number): boolean {
		return this.#msg[this.#at(i)] === undefined;
	}

	/** Remove the last `n` entries. */
	dropBack(n: number): void {
		for (let i = this.#size - n; i < this.#size; i++) this.#msg[this.#at(i)] = undefined;
		this.#size -= n;
		if (this.#size === 0) this.#head = 0;
	}

	/** Remove the first `n` entries. */
	dropFront(n: number): void {
		for (let i = 0; i < n; i++) this.#msg[this.#at(i)] = undefined;
		this.#head = (this.#head + n) & this.#mask;
		this.#size -= n;
		if (this.#size === 0) this.#head = 0;
	}

	/** Position of the newest entry with this ident, or -1. Scans from the newest: errors name recent writes. */
	lastIndexOfIdent(ident: number): number {
		for (let i = this.#size - 1; i >= 0; i--) if (this.#ident[this.#at(i)] === ident) return i;
		return -1;
	}
}

