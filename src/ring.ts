/**
 * A ring of notifications, as a struct of arrays: no object per notification. The queue keeps its
 * re-sends in one; the binary driver keeps what each connection has written and not yet had settled in
 * one; the threaded backend keeps what each thread holds in one.
 *
 * Its entries live in fixed-size chunks taken from, and given back to, one spare list per thread (see
 * {@link releaseSpareChunks}): a ring grows by a chunk, never by copying, and a stream's rings reuse the
 * memory earlier rings let go. (Grown by doubling, a million-a-second stream allocated several times the
 * memory it ever held at once — each connection's ring grew to ~100,000 slots — and fresh memory costs
 * page faults, measured at 5-13 µs per 4 KiB page on the bench's machine: `#grow` was the largest item of
 * the threaded caller's profile.)
 */
import type { Message } from './message.js';
import type { Cursor, InFlight } from './queue.js';

const CHUNK_BITS = 12;
/** Slots per chunk: 4,096 (36 KiB of numbers, 32 KiB of references — 16 KiB where V8 compresses pointers —, each below V8's 128 KiB large-object size). */
const CHUNK = 1 << CHUNK_BITS;
const SLOT = CHUNK - 1;

class Chunk {
	readonly msg = new Array<Message | undefined>(CHUNK);
	readonly index: Uint32Array;
	readonly ident: Uint32Array;
	readonly tries: Uint8Array;

	constructor() {
		const bytes = new ArrayBuffer(CHUNK * 9);
		this.index = new Uint32Array(bytes, 0, CHUNK);
		this.ident = new Uint32Array(bytes, CHUNK * 4, CHUNK);
		this.tries = new Uint8Array(bytes, CHUNK * 8, CHUNK);
	}
}

/**
 * Chunks no ring uses, for the next one (this thread's: each worker thread has its own). Every slot's
 * message is cleared before a chunk comes here, so the list keeps no message alive.
 */
const spare: Chunk[] = [];
/** The most kept: 256 chunks, 1,048,576 slots (~17 MiB), what the default `maxRetained` holds. */
const SPARE_LIMIT = 256;

function takeChunk(): Chunk {
	return spare.pop() ?? new Chunk();
}

function giveBack(chunk: Chunk): void {
	if (spare.length < SPARE_LIMIT) spare.push(chunk);
}

/**
 * Let the spare chunks go: a stream's memory is not an idle manager's. A queue calls it once nothing it
 * handed out is outstanding (the manager's queue, and each worker thread's stand-in for it). The list is
 * the thread's, shared by every manager in it: one going idle lets go chunks another gave back, which
 * that one then allocates afresh (speed, never correctness).
 */
export function releaseSpareChunks(): void {
	spare.length = 0;
}

/** Spare chunks kept now (for tests). @internal */
export function spareChunks(): number {
	return spare.length;
}

export class Ring {
	/** Entry i is slot `(#head + i) & SLOT` of chunk `(#head + i) >>> CHUNK_BITS`. */
	readonly #chunks: Chunk[] = [];
	#head = 0;
	#size = 0;

	get size(): number {
		return this.#size;
	}

	/** A chunk for the slot at absolute position `at` (the end), taken when the ring reaches it. */
	#chunkFor(at: number): Chunk {
		const c = at >>> CHUNK_BITS;
		if (c === this.#chunks.length) this.#chunks.push(takeChunk());
		return this.#chunks[c]!;
	}

	#set(chunk: Chunk, s: number, message: Message, index: number, ident: number, tries: number): void {
		chunk.msg[s] = message;
		chunk.index[s] = index;
		chunk.ident[s] = ident;
		chunk.tries[s] = tries;
	}

	push(message: Message, index: number, ident: number, tries: number): void {
		const at = this.#head + this.#size;
		this.#set(this.#chunkFor(at), at & SLOT, message, index, ident, tries);
		this.#size++;
	}

	/**
	 * Append `count` notifications of one message at once: indexes `index`… and idents `ident`… in step,
	 * one attempt count (a run from the queue's `takeRun`: its idents never wrap).
	 */
	pushRun(message: Message, index: number, ident: number, tries: number, count: number): void {
		let at = this.#head + this.#size;
		for (let k = 0; k < count; ) {
			const chunk = this.#chunkFor(at);
			const s = at & SLOT;
			const n = Math.min(count - k, CHUNK - s);
			const { msg, index: ix, ident: id } = chunk;
			for (let j = 0; j < n; j++) {
				msg[s + j] = message;
				ix[s + j] = index + k + j;
				id[s + j] = ident + k + j;
			}
			chunk.tries.fill(tries, s, s + n);
			k += n;
			at += n;
		}
		this.#size += count;
	}

	unshift(message: Message, index: number, ident: number, tries: number): void {
		if (this.#head === 0) {
			this.#chunks.unshift(takeChunk());
			this.#head = CHUNK;
		}
		this.#head--;
		this.#set(this.#chunks[0]!, this.#head, message, index, ident, tries);
		this.#size++;
	}

	#chunk(i: number): Chunk {
		return this.#chunks[(this.#head + i) >>> CHUNK_BITS]!;
	}

	message(i: number): Message {
		return this.#chunk(i).msg[(this.#head + i) & SLOT]!;
	}
	index(i: number): number {
		return this.#chunk(i).index[(this.#head + i) & SLOT]!;
	}
	ident(i: number): number {
		return this.#chunk(i).ident[(this.#head + i) & SLOT]!;
	}
	tries(i: number): number {
		return this.#chunk(i).tries[(this.#head + i) & SLOT]!;
	}
	/** Entry `i`, as an object of its own (it outlives the ring's slot). */
	entry(i: number): InFlight {
		const chunk = this.#chunk(i);
		const s = (this.#head + i) & SLOT;
		return { message: chunk.msg[s]!, index: chunk.index[s]!, ident: chunk.ident[s]!, tries: chunk.tries[s]! };
	}

	/** Copy entry `i` into `into` (no object made: the hot paths' way). */
	read(i: number, into: Cursor): void {
		const chunk = this.#chunk(i);
		const s = (this.#head + i) & SLOT;
		into.message = chunk.msg[s]!;
		into.index = chunk.index[s]!;
		into.ident = chunk.ident[s]!;
		into.tries = chunk.tries[s]!;
	}

	/** Count one more attempt for entry `i` (capped at 255). */
	bumpTries(i: number): void {
		const tries = this.#chunk(i).tries;
		const s = (this.#head + i) & SLOT;
		if (tries[s]! < 255) tries[s]!++;
	}

	/**
	 * Empty entry `i` in place (its message reads as undefined after): a hole, for an owner that removes
	 * entries out of order and drops the holes once they reach the front.
	 */
	clear(i: number): void {
		this.#chunk(i).msg[(this.#head + i) & SLOT] = undefined;
	}

	/** Whether entry `i` is a hole left by {@link clear}. */
	isHole(i: number): boolean {
		return this.#chunk(i).msg[(this.#head + i) & SLOT] === undefined;
	}

	/** Clear the messages of absolute positions [from, to): a dropped slot keeps no message alive. */
	#clearRange(from: number, to: number): void {
		while (from < to) {
			const s = from & SLOT;
			const n = Math.min(to - from, CHUNK - s);
			this.#chunks[from >>> CHUNK_BITS]!.msg.fill(undefined, s, s + n);
			from += n;
		}
	}

	/** Remove the last `n` entries. */
	dropBack(n: number): void {
		const end = this.#head + this.#size;
		this.#clearRange(end - n, end);
		this.#size -= n;
		if (this.#size === 0) this.#head = 0;
		this.#giveBackPastEnd();
	}

	/** Give back the chunks past the last entry: all of them once the ring is empty (an idle ring holds no memory). */
	#giveBackPastEnd(): void {
		const needed = Math.ceil((this.#head + this.#size) / CHUNK);
		while (this.#chunks.length > needed) giveBack(this.#chunks.pop()!);
	}

	/** Remove the first `n` entries. */
	dropFront(n: number): void {
		this.#clearRange(this.#head, this.#head + n);
		this.#head += n;
		this.#size -= n;
		const chunks = this.#chunks;
		if (this.#size === 0) {
			// Empty: every chunk goes back (the next push takes one from the spare list, most likely the one just given back).
			this.#head = 0;
			this.#giveBackPastEnd();
			return;
		}
		let done = this.#head >>> CHUNK_BITS;
		if (done === 0) return;
		this.#head &= SLOT;
		while (done-- > 0) giveBack(chunks.shift()!);
	}

	/** Position of the newest entry with this ident, or -1. Scans from the newest: errors name recent writes. */
	lastIndexOfIdent(ident: number): number {
		for (let i = this.#size - 1; i >= 0; i--) if (this.ident(i) === ident) return i;
		return -1;
	}
}
