/**
 * How notifications and outcomes cross between the caller's thread and a worker thread of the
 * `'threaded'` backend: as bytes in one transferred buffer per batch, not as structured-cloned objects.
 *
 * A batch is laid out as runs of notifications that are consecutive tokens of one message; each run is
 * that message's own layout (its tokens back to back, then its payload), so the worker's {@link Message}
 * of a run is a view into the batch and every getter the drivers use works unchanged. Per notification
 * the batch carries its ident and its attempts. Its handle, by which the worker reports what became of
 * it, is not carried: a thread's notifications are numbered in the order they are handed to it, so the
 * k-th of a batch is the batch's first handle + k (mod 2^32), and a run of deliveries is a range.
 *
 *   header   u32 × 6      notifications, runs, offset of the per-notification arrays, offset of run records, first handle, pad
 *   runs     bytes        [tokens of the run][payload], 8-aligned, one after another
 *   records  per run      f64 ordinal · f64 expiry (−1: none) · u32 start · u32 count · u32 payloadLength · u32 meta · i32 extra · u32 pad
 *   arrays   u32 ident[n] · u8 tries[n]
 */
import { Message, TOKEN_BYTES } from '../message.js';

const HEADER_BYTES = 24;
const RECORD_BYTES = 40;

/** What a run's rarely set options are, by index into a batch's `extras` (cloned: they are few). */
export type WireExtra = { readonly collapseId: string | undefined; readonly topic: string | undefined; readonly id: string | undefined };

/** A batch as posted: the buffer is transferred, `extras` is cloned. */
export interface WireBatch {
	readonly buffer: ArrayBuffer;
	readonly extras: WireExtra[] | undefined;
}

/** A message of the worker: a view of one run of a batch; its token `i` has handle `(handleBase + i) >>> 0`. */
export type WireMessage = Message & { readonly handleBase: number };

/** The handle of notification `index` of a worker's message. */
export function handleOf(message: Message, index: number): number {
	return ((message as WireMessage).handleBase + index) >>> 0;
}

/**
 * Builds batches on the caller's side. Not re-entrant; `finish()` hands the batch over and starts afresh.
 * Per notification it stores three numbers in typed arrays; runs are found as notifications are added.
 */
export class BatchWriter {
	#n = 0;
	#idents: Uint32Array;
	#tries: Uint8Array;
	/** Runs so far: the message, its first token index, its count. */
	#runMessage: Message[] = [];
	#runFirst: number[] = [];
	#runCount: number[] = [];
	#lastIndex = -1;

	/** @param capacity Notifications a batch usually holds (it grows past that if need be). */
	constructor(capacity = 2048) {
		this.#idents = new Uint32Array(capacity);
		this.#tries = new Uint8Array(capacity);
	}

	get size(): number {
		return this.#n;
	}

	/** Add `count` notifications from token `index` of `message`, idents from `ident` (a run: see `DriverQueue.takeRun`). */
	add(message: Message, index: number, ident: number, tries: number, count = 1): void {
		const n = this.#n;
		while (n + count > this.#idents.length) this.#grow();
		for (let k = 0; k < count; k++) this.#idents[n + k] = ident + k;
		this.#tries.fill(tries, n, n + count);
		this.#n = n + count;
		const runs = this.#runMessage.length;
		// A batch's run is its message's consecutive tokens (attempts and idents are per notification).
		if (runs > 0 && this.#runMessage[runs - 1] === message && index === this.#lastIndex + 1) this.#runCount[runs - 1]! += count;
		else {
			this.#runMessage.push(message);
			this.#runFirst.push(index);
			this.#runCount.push(count);
		}
		this.#lastIndex = index + count - 1;
	}

	/**
	 * @param firstHandle The handle of the batch's first notification (the next ones follow, mod 2^32).
	 * @param pool Buffers a worker gave back (see {@link BatchLedger}): one is reused if it is large enough.
	 */
	finish(firstHandle: number, pool?: ArrayBuffer[]): WireBatch {
		const n = this.#n;
		const runs = this.#runMessage.length;
		let bodyBytes = 0;
		for (let r = 0; r < runs; r++) bodyBytes += this.#runCount[r]! * TOKEN_BYTES + align8(this.#runMessage[r]!.payloadLength);
		const recordsAt = HEADER_BYTES + bodyBytes;
		const arraysAt = recordsAt + runs * RECORD_BYTES;
		const bytesNeeded = arraysAt + n * 5;
		// A fresh buffer is fresh memory: ~100-200 µs of page faults for a full batch, every 2,048 notifications.
		let buffer = pool?.pop();
		if (buffer === undefined || buffer.byteLength < bytesNeeded) buffer = new ArrayBuffer(bytesNeeded);
		const bytes = Buffer.from(buffer);
		const view = new DataView(buffer);
		view.setUint32(0, n, true);
		view.setUint32(4, runs, true);
		view.setUint32(8, arraysAt, true);
		view.setUint32(12, recordsAt, true);
		view.setUint32(16, firstHandle, true);
		let extras: WireExtra[] | undefined;
		let at = HEADER_BYTES;
		for (let r = 0; r < runs; r++) {
			const m = this.#runMessage[r]!;
			const first = this.#runFirst[r]!;
			const count = this.#runCount[r]!;
			const start = at;
			const from = m.start + first * TOKEN_BYTES;
			m.chunk.copy(bytes, at, from, from + count * TOKEN_BYTES);
			at += count * TOKEN_BYTES;
			m.chunk.copy(bytes, at, m.payloadStart, m.payloadStart + m.payloadLength);
			at += align8(m.payloadLength);
			let extra = -1;
			if (m.extra !== undefined) {
				extras ??= [];
				extra = extras.push(m.extra) - 1;
			}
			const rec = recordsAt + r * RECORD_BYTES;
			view.setFloat64(rec, m.ordinal + first, true);
			view.setFloat64(rec + 8, m.expiry ?? -1, true);
			view.setUint32(rec + 16, start, true);
			view.setUint32(rec + 20, count, true);
			view.setUint32(rec + 24, m.payloadLength, true);
			view.setUint32(rec + 28, m.meta, true);
			view.setInt32(rec + 32, extra, true);
		}
		new Uint32Array(buffer, arraysAt, n).set(this.#idents.subarray(0, n));
		new Uint8Array(buffer, arraysAt + 4 * n, n).set(this.#tries.subarray(0, n));
		this.#n = 0;
		this.#runMessage = [];
		this.#runFirst = [];
		this.#runCount = [];
		this.#lastIndex = -1;
		return { buffer, extras };
	}

	#grow(): void {
		const size = this.#idents.length * 2;
		const idents = new Uint32Array(size);
		const tries = new Uint8Array(size);
		idents.set(this.#idents);
		tries.set(this.#tries);
		this.#idents = idents;
		this.#tries = tries;
	}
}

/**
 * Reads a batch on the worker's side, one notification at a time and in order, straight from its bytes
 * (nothing is copied per notification).
 */
export class BatchReader {
	/** Notifications not yet read. */
	remaining: number;
	/** The batch's bytes, its notifications and the first one's handle. */
	readonly buffer: ArrayBuffer;
	readonly count: number;
	readonly firstHandle: number;
	readonly #messages: WireMessage[] = [];
	readonly #idents: Uint32Array;
	readonly #tries: Uint8Array;
	#k = 0;
	#run = 0;
	#i = 0;

	constructor(batch: WireBatch) {
		const { buffer, extras } = batch;
		const view = new DataView(buffer);
		const n = view.getUint32(0, true);
		const runs = view.getUint32(4, true);
		const arraysAt = view.getUint32(8, true);
		const recordsAt = view.getUint32(12, true);
		const firstHandle = view.getUint32(16, true);
		this.buffer = buffer;
		this.count = n;
		this.firstHandle = firstHandle;
		const chunk = Buffer.from(buffer);
		this.remaining = n;
		this.#idents = new Uint32Array(buffer, arraysAt, n);
		this.#tries = new Uint8Array(buffer, arraysAt + 4 * n, n);
		let k = 0;
		for (let r = 0; r < runs; r++) {
			const rec = recordsAt + r * RECORD_BYTES;
			const expiry = view.getFloat64(rec + 8, true);
			const extra = view.getInt32(rec + 32, true);
			const count = view.getUint32(rec + 20, true);
			// The fields a Message has, over the batch's bytes (see the module comment).
			const m = Object.assign(Object.create(Message.prototype) as Message, {
				count,
				chunk,
				start: view.getUint32(rec + 16, true),
				payloadLength: view.getUint32(rec + 24, true),
				meta: view.getUint32(rec + 28, true),
				expiry: expiry < 0 ? undefined : expiry,
				extra: extra < 0 ? undefined : extras![extra],
				ordinal: view.getFloat64(rec, true),
				open: count,
				call: undefined,
				handleBase: (firstHandle + k) >>> 0,
			}) as WireMessage;
			this.#messages.push(m);
			k += count;
		}
	}

	/** Read the next notification into `into`; false when none is left. */
	next(into: { message: Message; index: number; ident: number; tries: number }): boolean {
		return this.nextRun(into, 1) === 1;
	}

	/**
	 * Read up to `max` notifications that make a run (one message's consecutive tokens, consecutive
	 * idents, one attempt count) into `into` (the first of them); returns how many, 0 when none is left.
	 */
	nextRun(into: { message: Message; index: number; ident: number; tries: number }, max: number): number {
		if (this.remaining === 0 || max < 1) return 0;
		let m = this.#messages[this.#run]!;
		if (this.#i === m.count) {
			m = this.#messages[++this.#run]!;
			this.#i = 0;
		}
		const k = this.#k;
		const ident = this.#idents[k]!;
		const tries = this.#tries[k]!;
		const end = k + Math.min(max, m.count - this.#i);
		let j = k + 1;
		while (j < end && this.#idents[j] === ident + (j - k) && this.#tries[j] === tries) j++;
		const n = j - k;
		into.message = m;
		into.index = this.#i;
		into.ident = ident;
		into.tries = tries;
		this.#i += n;
		this.#k = j;
		this.remaining -= n;
		return n;
	}
}

/**
 * Handles delivered, as a worker collects them for its next report: ranges of consecutive handles
 * (mod 2^32), since a thread's notifications are mostly settled in the order they were handed over.
 */
export class DeliveredRanges {
	/** Pairs of first handle and count: the first {@link #n} numbers. */
	#pairs = new Uint32Array(1024);
	#n = 0;

	add(h: number, count = 1): void {
		const d = this.#pairs;
		const n = this.#n;
		// What follows the last range extends it.
		if (n > 0 && h === ((d[n - 2]! + d[n - 1]!) >>> 0)) {
			d[n - 1]! += count;
			return;
		}
		if (n === d.length) {
			const grown = new Uint32Array(d.length * 2);
			grown.set(d);
			this.#pairs = grown;
		}
		this.#pairs[n] = h;
		this.#pairs[n + 1] = count;
		this.#n = n + 2;
	}

	/** The ranges since the last call (a buffer of their own, to be transferred), and start afresh. */
	take(): Uint32Array {
		const out = this.#pairs.slice(0, this.#n);
		this.#n = 0;
		return out;
	}
}

/**
 * Which batches a worker may give back to be reused: a batch's bytes are read again until every one of
 * its notifications is settled (a re-send, or a backtrack from a binary connection's sent log, writes
 * them again), and not after. Only for drivers that copy what they write (binary: frames are encoded
 * into slabs); HTTP/2 hands views of the payload to the session, so its batches are never given back.
 */
export class BatchLedger {
	/** Batches not yet given back, in the order they came: first handle, count, unsettled, buffer. */
	readonly #batches: Array<{ readonly first: number; readonly count: number; open: number; readonly buffer: ArrayBuffer }> = [];
	/** Where the last handle was found: settlements come mostly in order. */
	#last = 0;
	#free: ArrayBuffer[] = [];

	add(reader: BatchReader): void {
		this.#batches.push({ first: reader.firstHandle, count: reader.count, open: reader.count, buffer: reader.buffer });
	}

	/** The `count` handles from `h` were settled (each handle once; they may span batches). */
	settled(h: number, count = 1): void {
		while (count > 0) {
			const k = this.#find(h);
			if (k < 0) {
				// Not one of ours (never so): the rest of the range may be.
				h = (h + 1) >>> 0;
				count--;
				continue;
			}
			const b = this.#batches[k]!;
			const n = Math.min(count, b.count - ((h - b.first) >>> 0));
			h = (h + n) >>> 0;
			count -= n;
			b.open -= n;
			if (b.open === 0) {
				this.#free.push(b.buffer);
				this.#batches.splice(k, 1);
				this.#last = 0;
			}
		}
	}

	/** Index of the batch that holds handle `h`, or −1; the search starts where the last one was found. */
	#find(h: number): number {
		const batches = this.#batches;
		let k = this.#last < batches.length ? this.#last : 0;
		for (let tried = 0; tried < batches.length; tried++, k = k + 1 === batches.length ? 0 : k + 1) {
			if (((h - batches[k]!.first) >>> 0) < batches[k]!.count) return (this.#last = k);
		}
		return -1;
	}

	/** The buffers that may be given back since the last call (to be transferred: unusable here after). */
	take(): ArrayBuffer[] {
		const free = this.#free;
		this.#free = [];
		return free;
	}
}

function align8(n: number): number {
	return (n + 7) & ~7;
}
