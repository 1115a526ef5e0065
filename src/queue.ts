/**
 * The notification queue: new work and re-sends, and the count of what drivers hold. It owns every
 * notification from `push()` until it is delivered, reported failed or dropped, so a notification is never
 * in two places and never in none. It knows no protocol: a driver takes notifications, and for each one
 * says what the gateway's answer means — delivered, failed for good, or back to the front of the queue
 * (ahead of new work, in order) for a reason. The reason says whether the re-send uses up an attempt and
 * whether the gateway may have processed it already (*in doubt*: at-least-once, it may arrive twice).
 * What an answer means is the protocol's business (src/protocol/*), and so is when a notification has
 * been answered at all: nothing here settles anything by time.
 *
 * Attempts: a notification is reported failed after `maxAttempts` attempts that can be pinned on it (see
 * {@link Cursor.tries}); drivers ask {@link NotificationQueue.exhausted} before a re-send that counts.
 */
import type { Message } from './message.js';
import type { RateGate } from './rate-limit.js';
import { tokenDelivered, tokenDropped, tokenFailed } from './receipt.js';
import { releaseSpareChunks, Ring } from './ring.js';

/** Options of a {@link NotificationQueue}. */
export interface QueueOptions {
	/**
	 * Hard cap on written-but-unsettled notifications across all connections. When it is reached the
	 * queue stops handing out work (nothing is dropped) and emits `retentionFull` until room is made.
	 * @default 1_000_000
	 */
	readonly maxRetained?: number;
	/**
	 * Attempts a notification gets (see the module comment and {@link Cursor.tries}) before it is reported
	 * failed.
	 * @default 5
	 */
	readonly maxAttempts?: number;
	/**
	 * The first ident handed out. Idents run to 2^32−1 and wrap to 1 (0 is never used, because gateways
	 * have been seen to answer with ident 0 when they could not read one).
	 * @default 1
	 */
	readonly initialIdent?: number;
	/** Words for a status when a failure comes without a reason (the protocol's; receipts show them). */
	readonly describeStatus?: (status: number) => string;
}

export const DEFAULT_QUEUE_OPTIONS = {
	maxRetained: 1_000_000,
	maxAttempts: 5,
	initialIdent: 1,
} as const;

/**
 * Why notifications went back to the front of the queue.
 * - `error`, `shutdown`: what followed the notification a binary error frame named.
 * - `temporary`: the notification a binary error frame named with a "try again" status; counts an attempt.
 * - `retry`: the gateway answered "try again" (HTTP/2 429/500/503, …); counts an attempt.
 * - `unanswered`: it was alone and got no answer (its connection ended, its stream was reset or timed
 *   out); counts an attempt, in doubt.
 * - `refused`: its HTTP/2 stream was refused unprocessed (REFUSED_STREAM, or GOAWAY while alone); counts
 *   an attempt.
 * - `goaway`: cut off unprocessed by GOAWAY together with others.
 * - `silentClose`, `sessionLost`, `identNotFound`: its connection ended without a usable answer while it
 *   was not alone; in doubt.
 */
export type ResendReason = 'error' | 'shutdown' | 'temporary' | 'retry' | 'unanswered' | 'refused' | 'goaway' | 'silentClose' | 'sessionLost' | 'identNotFound' | 'workerLost';

/** Re-sends that use up an attempt. */
const COUNTED: ReadonlySet<ResendReason> = new Set<ResendReason>(['temporary', 'retry', 'unanswered', 'refused']);
/** Re-sends of notifications the gateway may have processed already (possible duplicates). */
const IN_DOUBT: ReadonlySet<ResendReason> = new Set<ResendReason>(['unanswered', 'silentClose', 'sessionLost', 'identNotFound', 'workerLost']);

/**
 * Put `batch` at the front of `front`, in order, adding an attempt to each when `reason` counts one. The
 * one way re-sends are ordered and counted, for the caller's queue and a worker thread's alike.
 */
export function unshiftBatch(front: Ring, batch: readonly InFlight[], reason: ResendReason): number {
	const counted = COUNTED.has(reason) ? 1 : 0;
	for (let i = batch.length - 1; i >= 0; i--) {
		const n = batch[i]!;
		front.unshift(n.message, n.index, n.ident, Math.min(n.tries + counted, 255));
	}
	return batch.length;
}

/** {@link unshiftBatch} for the entries of `ring` from `from` on, which leave `ring`. */
export function unshiftRing(front: Ring, ring: Ring, reason: ResendReason, from: number): number {
	const count = ring.size - from;
	if (count <= 0) return 0;
	const counted = COUNTED.has(reason) ? 1 : 0;
	for (let i = ring.size - 1; i >= from; i--) front.unshift(ring.message(i), ring.index(i), ring.ident(i), Math.min(ring.tries(i) + counted, 255));
	ring.dropBack(count);
	return count;
}

/** What a rejection or an unanswered failure says beyond its status. */
export interface FailureDetail {
	/** APNs reason string, e.g. `BadDeviceToken`; or ours for a notification that was never answered (`ConnectionLost`, `StreamReset`, `RequestTimeout`). */
	readonly reason: string;
	/** For 410: when APNs found the token no longer valid. */
	readonly timestamp?: Date | undefined;
	/** A sentence for people, when the reason alone does not say enough. */
	readonly description?: string | undefined;
}

/** A notification out of the queue on a request/response transport (HTTP/2), until it is settled. */
export interface InFlight {
	readonly message: Message;
	readonly index: number;
	readonly ident: number;
	/** Which attempt this is (see {@link Cursor.tries}). */
	readonly tries: number;
}

/** What the queue tells its owner (the manager). Every method is called synchronously. */
export interface QueueListener {
	/** A notification failed for good: rejected (`status` is APNs'), or never answered (`status` 0, see `detail`). */
	failed(message: Message, index: number, ident: number, status: number, detail?: FailureDetail): void;
	/** `count` notifications went back to the front of the queue. */
	resent(count: number, reason: ResendReason): void;
	/** The retention cap was reached; writing pauses until room is made. Once per episode. */
	retentionFull(retained: number): void;
	/** `count` notifications were settled as delivered, on the gateway's word. */
	delivered(count: number): void;
	/** New work, or room to write it: the backend should write. */
	wake(): void;
	/** Nothing is queued or unsettled any more. */
	idle(): void;
}

/** The notification a driver writes next; filled in place by {@link NotificationQueue.take}. */
export interface Cursor {
	message: Message;
	index: number;
	ident: number;
	/**
	 * Which attempt this is: 1 + the attempts so far that can be pinned on this notification — the gateway
	 * answered "try again" for it, or it went unanswered while alone (see {@link ResendReason}). Re-sends
	 * of notifications lost together (a backtrack, a silent close, GOAWAY, a lost session) don't count.
	 */
	tries: number;
}

/** Counters since the queue was made. All are notification counts. */
export interface QueueStats {
	/** Accepted by `push()`. */
	queued: number;
	/** Frames or requests written, re-sends included. */
	written: number;
	/** Settled as delivered, on the gateway's word (a later error frame, a probe answer, an HTTP/2 200). */
	delivered: number;
	/** Reported failed (rejected, or out of attempts). */
	failed: number;
	/** Put back at the front of the queue to be written again. */
	resent: number;
	/** Of `resent`, those the gateway may already have processed (these may be delivered twice). */
	inDoubt: number;
	/** Times the retention cap was reached. */
	retentionFull: number;
	/** Dropped unsettled by `destroy()` (or a `close()` that ran out of time). queued = delivered + failed + dropped + pending. */
	dropped: number;
}


/**
 * What a driver sees of the queue: take notifications, and settle or re-queue each one it took. The
 * {@link NotificationQueue} is one; a worker thread's stand-in for the caller's queue is another.
 */
export interface DriverQueue {
	readonly maxAttempts: number;
	/** Whether {@link DriverQueue.take} would hand out something now. */
	readonly canTake: boolean;
	/** Waiting to be written. */
	readonly unsent: number;
	/** Work waits only for the rate limit (a driver should not treat that as "out of work"). */
	readonly rateLimited: boolean;
	take(cursor: Cursor): boolean;
	/**
	 * Like {@link DriverQueue.take}, for up to `max` notifications at once: a *run* of one message's
	 * consecutive tokens, with consecutive idents (never across the wrap) and one attempt count. The
	 * cursor gets the first; returns how many (0: as `take` returning false). A run may be shorter than
	 * what waits: a re-send or a rate limit hands out one at a time.
	 */
	takeRun(cursor: Cursor, max: number): number;
	takeOne(): InFlight | undefined;
	exhausted(n: { readonly tries: number }): boolean;
	settleDelivered(n: InFlight): void;
	settleDeliveredRing(ring: Ring, count: number): void;
	settleFailed(n: InFlight, status: number, detail?: FailureDetail): void;
	settleFailedRing(ring: Ring, status: number, detail?: FailureDetail): void;
	requeue(batch: readonly InFlight[], reason: ResendReason): void;
	requeueRing(ring: Ring, reason: ResendReason, from?: number): number;
	/**
	 * Count work done elsewhere on notifications still held (a worker thread that re-sent some of them
	 * itself): `rewritten` writes beyond the first, and re-sends by reason.
	 */
	recordElsewhere(rewritten: number, resent: ReadonlyArray<readonly [count: number, reason: ResendReason]>): void;
}

/** See the module comment. */
export class NotificationQueue implements DriverQueue {
	readonly maxRetained: number;
	readonly maxAttempts: number;
	readonly #describe: (status: number) => string;
	#listener: QueueListener | undefined;
	#nextIdent: number;
	/** Number of the next token queued, counting from 0 (see `Message.ordinal`). */
	#ordinal = 0;
	/** New work: messages with the index of their next unsent token. */
	/** New work: messages in order; only the first one (at `#rangeHead`) may be partly handed out. */
	#ranges: Array<Message | undefined> = [];
	/** Index of the next token to hand out of the message at `#rangeHead`. */
	#headNext = 0;
	#rangeHead = 0;
	#unsentNew = 0;
	/** Re-sends, ahead of new work. */
	readonly #resend = new Ring();
	#retained = 0;
	readonly #scratch = { tries: 0 } as Cursor;
	#full = false;
	#gate: RateGate | undefined;
	/** `idle` was reported and nothing has been pushed since: report a transition once. */
	#idleReported = true;
	readonly #stats: QueueStats = {
		queued: 0,
		written: 0,
		delivered: 0,
		failed: 0,
		resent: 0,
		inDoubt: 0,
		retentionFull: 0,
		dropped: 0,
	};

	constructor(options: QueueOptions = {}) {
		this.maxRetained = options.maxRetained ?? DEFAULT_QUEUE_OPTIONS.maxRetained;
		this.maxAttempts = options.maxAttempts ?? DEFAULT_QUEUE_OPTIONS.maxAttempts;
		this.#nextIdent = options.initialIdent ?? DEFAULT_QUEUE_OPTIONS.initialIdent;
		this.#describe = options.describeStatus ?? ((status) => `status ${status}`);
		if (!(this.#nextIdent >= 1 && this.#nextIdent <= 0xffff_ffff && Number.isInteger(this.#nextIdent))) {
			throw new RangeError(`initialIdent must be a whole number from 1 to 4294967295, got ${this.#nextIdent}`);
		}
	}

	/** Connect the owner. One listener per queue. */
	setListener(listener: QueueListener): void {
		this.#listener = listener;
	}

	get stats(): Readonly<QueueStats> {
		return { ...this.#stats };
	}

	/** Waiting to be written (new work and re-sends). */
	get unsent(): number {
		return this.#unsentNew + this.#resend.size;
	}

	/** Written and not yet settled, across connections. */
	get retained(): number {
		return this.#retained;
	}

	/** Neither delivered nor reported failed. */
	get outstanding(): number {
		return this.unsent + this.#retained;
	}

	/** Whether {@link NotificationQueue.take} would hand out something now. */
	get canTake(): boolean {
		return this.unsent > 0 && this.#retained < this.maxRetained && this.#admitted();
	}

	/** Work waits only for the rate gate: not out of work, nor at the retention cap. */
	get rateLimited(): boolean {
		return this.#gate !== undefined && !this.#gate.open && this.unsent > 0 && this.#retained < this.maxRetained;
	}

	/** Limit how fast notifications are handed out (the `rateLimit` option). */
	setRateGate(gate: RateGate): void {
		this.#gate = gate;
	}

	/** The rate gate lets one through now; if not, it is asked for more and wakes the backend then. */
	#admitted(): boolean {
		const gate = this.#gate;
		if (gate === undefined || gate.open) return true;
		gate.want(this.unsent);
		return false;
	}

	/**
	 * Append a message: each of its tokens becomes a notification, in order. Returns the message as queued:
	 * `message` itself, or a copy when it was queued before (each send keeps its own delivery state).
	 */
	push(message: Message): Message {
		if (message.ordinal >= 0) message = message.forAnotherSend();
		message.ordinal = this.#ordinal;
		this.#ordinal += message.count;
		message.open = message.count;
		this.#ranges.push(message);
		this.#unsentNew += message.count;
		this.#stats.queued += message.count;
		this.#idleReported = false;
		this.#listener?.wake();
		return message;
	}

	/**
	 * Hand out the next notification into `cursor`: re-sends first, then new work. From here the driver
	 * holds it until it settles or re-queues it. Returns false when there is nothing to write, the
	 * retention cap is reached, or the rate limit holds it back.
	 */
	take(cursor: Cursor): boolean {
		if (this.#retained >= this.maxRetained) {
			if (!this.#full && this.unsent > 0) {
				this.#full = true;
				this.#stats.retentionFull++;
				this.#listener?.retentionFull(this.#retained);
			}
			return false;
		}
		if (this.unsent === 0 || !this.#admitted()) return false;
		if (this.#resend.size > 0) {
			this.#resend.read(0, cursor);
			this.#resend.dropFront(1);
		} else if (this.#takeNew(cursor, 1) === 0) {
			return false;
		}
		this.#gate?.take();
		this.#retained++;
		this.#stats.written++;
		return true;
	}

	/** See {@link DriverQueue.takeRun}. */
	takeRun(cursor: Cursor, max: number): number {
		// One at a time where each needs its own say: re-sends (idents and attempts of their own), a rate
		// limit (a grant each), the retention cap (reported once reached).
		if (max < 1) return 0;
		if (max === 1 || this.#resend.size > 0 || this.#gate !== undefined || this.#retained >= this.maxRetained) return this.take(cursor) ? 1 : 0;
		const n = this.#takeNew(cursor, Math.min(max, this.maxRetained - this.#retained));
		this.#retained += n;
		this.#stats.written += n;
		return n;
	}

	/**
	 * New work into `cursor`: up to `max` of the head message's next tokens, on their first attempt, with
	 * consecutive idents (never across the wrap from 2^32−1 to 1). Returns how many.
	 */
	#takeNew(cursor: Cursor, max: number): number {
		const range = this.#ranges[this.#rangeHead];
		if (range === undefined) return 0;
		const ident = this.#nextIdent;
		const n = Math.min(max, range.count - this.#headNext, 0xffff_ffff - ident + 1);
		cursor.message = range;
		cursor.index = this.#headNext;
		cursor.ident = ident;
		cursor.tries = 1;
		this.#headNext += n;
		this.#nextIdent = ident + n > 0xffff_ffff ? 1 : ident + n;
		this.#unsentNew -= n;
		if (this.#headNext === range.count) this.#advanceRange();
		return n;
	}

	/** {@link NotificationQueue.take} into a new object, for drivers that keep one per request (HTTP/2). */
	takeOne(): InFlight | undefined {
		const cursor = this.#scratch;
		if (!this.take(cursor)) return undefined;
		return { message: cursor.message, index: cursor.index, ident: cursor.ident, tries: cursor.tries };
	}

	/** Whether `n` has used up its attempts: the next counted failure reports it instead of re-sending it. */
	exhausted(n: { readonly tries: number }): boolean {
		return n.tries >= this.maxAttempts;
	}

	/** A held notification was delivered, on the gateway's word. */
	settleDelivered(n: InFlight): void {
		tokenDelivered(n.message);
		this.#delivered(1);
	}

	/** The first `count` notifications of `ring` were delivered; they leave it. */
	settleDeliveredRing(ring: Ring, count: number): void {
		if (count === 0) return;
		for (let i = 0; i < count; i++) tokenDelivered(ring.message(i));
		ring.dropFront(count);
		this.#delivered(count);
	}

	/** A held notification failed for good: rejected (`status` is the gateway's) or never answered (`status` 0). */
	settleFailed(n: InFlight, status: number, detail?: FailureDetail): void {
		this.#failed(n.message, n.index, n.ident, status, detail);
		this.#afterSettle();
	}

	/** The first notification of `ring` failed for good; it leaves the ring. */
	settleFailedRing(ring: Ring, status: number, detail?: FailureDetail): void {
		const message = ring.message(0);
		const index = ring.index(0);
		const ident = ring.ident(0);
		ring.dropFront(1);
		this.settleFailed({ message, index, ident, tries: 0 }, status, detail);
	}

	/**
	 * Put held notifications back at the front of the queue, in the order given, ahead of new work.
	 * Reasons that count an attempt (see {@link ResendReason}) add one to each.
	 */
	requeue(batch: readonly InFlight[], reason: ResendReason): void {
		if (batch.length === 0) return;
		this.#resent(unshiftBatch(this.#resend, batch, reason), reason);
		this.#afterSettle();
	}

	/**
	 * {@link NotificationQueue.requeue} for the notifications of `ring` from position `from` on (all, by
	 * default); they leave the ring. Returns how many.
	 */
	requeueRing(ring: Ring, reason: ResendReason, from = 0): number {
		const count = unshiftRing(this.#resend, ring, reason, from);
		if (count === 0) return 0;
		this.#resent(count, reason);
		this.#afterSettle();
		return count;
	}

	/**
	 * Drop everything now (destroy), with `held`: what drivers held. Each dropped token is settled as
	 * dropped for its receipt. Returns how many notifications were dropped unsettled.
	 */
	clear(held: Iterable<InFlight> = []): number {
		const dropped = this.outstanding;
		this.#stats.dropped += dropped;
		for (const n of held) tokenDropped(n.message, n.index);
		for (let r = this.#rangeHead; r < this.#ranges.length; r++) {
			const range = this.#ranges[r]!;
			for (let i = r === this.#rangeHead ? this.#headNext : 0; i < range.count; i++) tokenDropped(range, i);
		}
		for (let i = 0; i < this.#resend.size; i++) tokenDropped(this.#resend.message(i), this.#resend.index(i));
		this.#ranges = [];
		this.#rangeHead = 0;
		this.#headNext = 0;
		this.#unsentNew = 0;
		this.#resend.dropFront(this.#resend.size);
		this.#retained = 0;
		releaseSpareChunks(); // nothing is outstanding any more, as after the last settlement
		return dropped;
	}

	recordElsewhere(rewritten: number, resent: ReadonlyArray<readonly [count: number, reason: ResendReason]>): void {
		this.#stats.written += rewritten;
		for (const [count, reason] of resent) {
			this.#stats.resent += count;
			if (IN_DOUBT.has(reason)) this.#stats.inDoubt += count;
			this.#listener?.resent(count, reason);
		}
	}

	#advanceRange(): void {
		this.#ranges[this.#rangeHead] = undefined;
		this.#headNext = 0;
		this.#rangeHead++;
		if (this.#rangeHead === this.#ranges.length) {
			this.#ranges = [];
			this.#rangeHead = 0;
		} else if (this.#rangeHead > 1024 && this.#rangeHead * 2 > this.#ranges.length) {
			this.#ranges = this.#ranges.slice(this.#rangeHead);
			this.#rangeHead = 0;
		}
	}

	// The bookkeeping of each way a held notification leaves: one place each, for every driver.

	#delivered(count: number): void {
		this.#retained -= count;
		this.#stats.delivered += count;
		this.#listener?.delivered(count);
		this.#afterSettle();
	}

	#failed(message: Message, index: number, ident: number, status: number, detail?: FailureDetail): void {
		this.#retained--;
		this.#stats.failed++;
		tokenFailed(message, index, status, detail?.reason ?? this.#describe(status), detail?.timestamp);
		this.#listener?.failed(message, index, ident, status, detail);
	}

	#resent(count: number, reason: ResendReason): void {
		this.#retained -= count;
		this.#stats.resent += count;
		if (IN_DOUBT.has(reason)) this.#stats.inDoubt += count;
		this.#listener?.resent(count, reason);
	}

	#afterSettle(): void {
		if (this.#full && this.#retained < this.maxRetained) this.#full = false;
		if (this.outstanding === 0) {
			if (!this.#idleReported) {
				this.#idleReported = true;
				// The spare ring chunks are a stream's memory, not an idle manager's.
				releaseSpareChunks();
				this.#listener?.idle();
			}
		} else if (this.canTake) this.#listener?.wake();
	}
}
