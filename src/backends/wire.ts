/**
 * How notifications and outcomes cross between the caller's thread and a worker thread of the
 * `'threaded'` backend: as bytes in one transferred buffer per batch, not as structured-cloned objects.
 *
 * A batch is laid out as runs of notifications that are consecutive tokens of one message; each run is
 * that message's own layout (its tokens back to back, then its payload), so the worker's {@link Message}
 * of a run is a view into the batch and every getter the drivers use works unchanged. Per notification
 * the batch carries its ident, its attempts and a handle, by which the worker reports what became of it.
 *
 *   header   u32 × 4      notifications, runs, offset of the per-notification arrays, offset of run records
 *   runs     bytes        [tokens of the run][payload], 8-aligned, one after another
 *   records  per run      f64 ordinal · f64 expiry (−1: none) · u32 start · u32 count · u32 payloadLength · u32 meta · i32 extra · u32 pad
 *   arrays   u32 ident[n] · u32 handle[n] · u8 tries[n]
 */
import { Message, TOKEN_BYTES } from '../message.js';

const HEADER_BYTES = 16;
const RECORD_BYTES = 40;

/** What a run's rarely set options are, by index into a batch's `extras` (cloned: they are few). */
export type WireExtra = { readonly collapseId: string | undefined; readonly topic: string | undefined; readonly id: string | undefined };

/** A batch as posted: the buffer is transferred, `extras` is cloned. */
export interface WireBatch {
	readonly buffer: ArrayBuffer;
	readonly extras: WireExtra[] | undefined;
}

/** A message of the worker: a view of one run of a batch, with the handle of each of its notifications. */
export type WireMessage = Message & { readonly handles: Uint32Array; readonly handleBase: number };

/** Builds batches on the caller's side. Not re-entrant; `finish()` hands the batch over and starts afresh. */
export class BatchWriter {
	#messages: Message[] = [];
	#indexes: number[] = [];
	#idents: number[] = [];
	#handles: number[] = [];
	#tries: number[] = [];

	get size(): number {
		return this.#messages.length;
	}

	add(message: Message, index: number, ident: number, tries: number, handle: number): void {
		this.#messages.push(message);
		this.#indexes.push(index);
		this.#idents.push(ident);
		this.#tries.push(tries);
		this.#handles.push(handle);
	}

	finish(): WireBatch {
		const messages = this.#messages;
		const indexes = this.#indexes;
		const n = messages.length;
		// Runs: consecutive tokens of one message.
		const runStarts: number[] = [];
		let bodyBytes = 0;
		for (let i = 0; i < n; i++) {
			const m = messages[i]!;
			if (i === 0 || m !== messages[i - 1] || indexes[i] !== indexes[i - 1]! + 1) {
				if (runStarts.length > 0) bodyBytes += align8(messages[i - 1]!.payloadLength);
				runStarts.push(i);
			}
			bodyBytes += TOKEN_BYTES;
		}
		if (n > 0) bodyBytes += align8(messages[n - 1]!.payloadLength);
		const runs = runStarts.length;
		const recordsAt = HEADER_BYTES + bodyBytes;
		const arraysAt = recordsAt + runs * RECORD_BYTES;
		const total = arraysAt + n * 9;
		const buffer = new ArrayBuffer(total);
		const bytes = Buffer.from(buffer);
		const view = new DataView(buffer);
		view.setUint32(0, n, true);
		view.setUint32(4, runs, true);
		view.setUint32(8, arraysAt, true);
		view.setUint32(12, recordsAt, true);
		let extras: WireExtra[] | undefined;
		let at = HEADER_BYTES;
		for (let r = 0; r < runs; r++) {
			const first = runStarts[r]!;
			const end = r + 1 < runs ? runStarts[r + 1]! : n;
			const m = messages[first]!;
			const count = end - first;
			const start = at;
			const from = m.start + indexes[first]! * TOKEN_BYTES;
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
			view.setFloat64(rec, m.ordinal + indexes[first]!, true);
			view.setFloat64(rec + 8, m.expiry ?? -1, true);
			view.setUint32(rec + 16, start, true);
			view.setUint32(rec + 20, count, true);
			view.setUint32(rec + 24, m.payloadLength, true);
			view.setUint32(rec + 28, m.meta, true);
			view.setInt32(rec + 32, extra, true);
		}
		const idents = new Uint32Array(buffer, arraysAt, n);
		const handles = new Uint32Array(buffer, arraysAt + 4 * n, n);
		const tries = new Uint8Array(buffer, arraysAt + 8 * n, n);
		for (let i = 0; i < n; i++) {
			idents[i] = this.#idents[i]!;
			handles[i] = this.#handles[i]!;
			tries[i] = this.#tries[i]!;
		}
		this.#messages = [];
		this.#indexes = [];
		this.#idents = [];
		this.#handles = [];
		this.#tries = [];
		return { buffer, extras };
	}
}

/** Read a batch on the worker's side: `each` gets every notification, in order. */
export function readBatch(batch: WireBatch, each: (message: WireMessage, index: number, ident: number, tries: number) => void): void {
	const { buffer, extras } = batch;
	const view = new DataView(buffer);
	const n = view.getUint32(0, true);
	const runs = view.getUint32(4, true);
	const arraysAt = view.getUint32(8, true);
	const recordsAt = view.getUint32(12, true);
	const chunk = Buffer.from(buffer);
	const idents = new Uint32Array(buffer, arraysAt, n);
	const handles = new Uint32Array(buffer, arraysAt + 4 * n, n);
	const tries = new Uint8Array(buffer, arraysAt + 8 * n, n);
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
			handles,
			handleBase: k,
		}) as WireMessage;
		for (let i = 0; i < count; i++, k++) each(m, i, idents[k]!, tries[k]!);
	}
}

function align8(n: number): number {
	return (n + 7) & ~7;
}
