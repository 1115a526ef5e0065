/**
 * The notification queue: new work, re-sends, and what each connection has written but APNs has not yet
 * answered for. It owns every notification from `push()` until it is delivered or reported failed, so a
 * notification is never in two places and never in none.
 *
 * Nothing is settled without the gateway's word. Binary APNs never acknowledges success, so a written
 * notification stays in its connection's {@link SentLog} until one of these settles it:
 * - an error frame for a later ident on the same connection (everything before it was processed),
 * - the answer to a known-bad probe written after it (see {@link NotificationQueue.probe}).
 * Time alone never settles one: a connection that stops answering is presumed dead by its backend, and
 * what it held comes back here through {@link NotificationQueue.connectionClosed}.
 * An error frame for ident X settles what came before X, reports X, and puts everything after X back at
 * the front of the queue in its original order. A connection that ends with no usable answer puts all it
 * still holds back at the front, counted *in doubt* (at-least-once: those may be delivered twice).
 *
 * Attempts: a notification is reported failed after `maxAttempts` attempts that can be pinned on it — the
 * gateway answered "try again" for it, or it went unanswered while alone (the only notification on a
 * connection that ended, or an HTTP/2 stream that was reset or timed out). Re-sends of notifications
 * lost together with others say nothing about any one of them and are not counted; the backend's
 * isolation (one notification per connection or stream after an unanswered end) makes the culprit alone.
 */
import { describeStatus, isTemporaryStatus, STATUS_SHUTDOWN } from './frame.js';
import type { RateGate } from './rate-limit.js';
import { tokenDelivered, tokenDropped, tokenFailed } from './receipt.js';

/** What an empty-token probe draws (binary statuses 2 and 5). */
const STATUS_MISSING_TOKEN = 2;
const STATUS_INVALID_TOKEN_SIZE = 5;
import type { Message } from './message.js';

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
}

export const DEFAULT_QUEUE_OPTIONS = {
	maxRetained: 1_000_000,
	maxAttempts: 5,
	initialIdent: 1,
} as const;

/**
 * Why notifications went back to the front of the queue.
 * - `error`, `shutdown`, `temporary`: after an error frame (binary); `temporary` counts an attempt.
 * - `retry`: the gateway answered "try again" (HTTP/2 429/500/503, …); counts an attempt.
 * - `unanswered`: it was alone and got no answer (its connection ended, its stream was reset or timed
 *   out); counts an attempt, in doubt.
 * - `refused`: its HTTP/2 stream was refused unprocessed (REFUSED_STREAM, or GOAWAY while alone); counts
 *   an attempt.
 * - `goaway`: cut off unprocessed by GOAWAY together with others.
 * - `silentClose`, `sessionLost`, `identNotFound`: its connection ended without a usable answer while it
 *   was not alone; in doubt.
 */
export type ResendReason = 'error' | 'shutdown' | 'temporary' | 'retry' | 'unanswered' | 'refused' | 'goaway' | 'silentClose' | 'sessionLost' | 'identNotFound';

/** Re-sends that use up an attempt. */
const COUNTED: ReadonlySet<ResendReason> = new Set<ResendReason>(['retry', 'unanswered', 'refused']);
/** Re-sends of notifications the gateway may have processed already (possible duplicates). */
const IN_DOUBT: ReadonlySet<ResendReason> = new Set<ResendReason>(['unanswered', 'silentClose', 'sessionLost', 'identNotFound']);

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
	/** An error frame named an ident its connection never carried; what that connection held was re-sent. */
	identNotFound(ident: number, status: number, resent: number): void;
	/** The retention cap was reached; writing pauses until room is made. Once per episode. */
	retentionFull(retained: number): void;
	/** `count` notifications were settled as delivered, on the gateway's word. */
	delivered(count: number): void;
	/** New work, or room to write it: the backend should write. */
	wake(): void;
	/** Nothing is queued or unsettled any more. */
	idle(): void;
}

/** A growable ring of notifications (struct of arrays: no object per notification). */
class Ring {
	#cap: number;
	#mask: number;
	#head = 0;
	#size = 0;
	#msg: Array<Message | undefined>;
	#index: Uint32Array;
	#ident: Uint32Array;
	#tries: Uint8Array;

	constructor(capacity = 1024) {
		this.#cap = capacity;
		this.#mask = capacity - 1;
		this.#msg = new Array<Message | undefined>(capacity);
		this.#index = new Uint32Array(capacity);
		this.#ident = new Uint32Array(capacity);
		this.#tries = new Uint8Array(capacity);
	}

	get size(): number {
		return this.#size;
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
	/** Count one more attempt for entry `i` (capped at 255). */
	bumpTries(i: number): void {
		const at = this.#at(i);
		if (this.#tries[at]! < 255) this.#tries[at]!++;
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

/** What a connection has written and not yet had settled. Created by {@link NotificationQueue.openLog}. */
export class SentLog {
	/** @internal */
	readonly ring = new Ring();
	/** Ident of the probe written on this connection, if any. @internal */
	probeIdent: number | undefined;
	/** Notifications written since the last proof (a settled error frame or probe answer). @internal */
	sinceProof = 0;
	/** Settled for good: no more writes, answers or closes count. @internal */
	settled = false;
	/** Notifications the gateway settled on this connection by its word (delivered, or rejected for good). @internal */
	answered = 0;

	/** Notifications written on this connection and not yet settled. */
	get size(): number {
		return this.ring.size;
	}
	/** Whether a probe has been written and not yet answered. */
	get probing(): boolean {
		return this.probeIdent !== undefined;
	}
}

/** The notification a backend must write next; filled in place by {@link NotificationQueue.take}. */
export interface Cursor {
	message: Message;
	index: number;
	ident: number;
	/**
	 * Which attempt this is: 1 + the attempts so far that can be pinned on this notification — the gateway
	 * answered "try again" (binary status 1 or 255; HTTP/2 429, 500, 503, ExpiredProviderToken,
	 * IdleTimeout), or it went unanswered while alone (see {@link ResendReason}). Re-sends of notifications
	 * lost together (a backtrack, a silent close, GOAWAY, a lost session) don't count.
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
	/** Probes answered. */
	probesAnswered: number;
	/** Error frames that named an ident their connection never carried. */
	identsNotFound: number;
	/** Times the retention cap was reached. */
	retentionFull: number;
	/** Dropped unsettled by `destroy()` (or a `close()` that ran out of time). queued = delivered + failed + dropped + pending. */
	dropped: number;
}


/** See the module comment. */
export class NotificationQueue {
	readonly maxRetained: number;
	readonly maxAttempts: number;
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
	readonly #logs = new Set<SentLog>();
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
		probesAnswered: 0,
		identsNotFound: 0,
		retentionFull: 0,
		dropped: 0,
	};

	constructor(options: QueueOptions = {}) {
		this.maxRetained = options.maxRetained ?? DEFAULT_QUEUE_OPTIONS.maxRetained;
		this.maxAttempts = options.maxAttempts ?? DEFAULT_QUEUE_OPTIONS.maxAttempts;
		this.#nextIdent = options.initialIdent ?? DEFAULT_QUEUE_OPTIONS.initialIdent;
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

	/** A log for a new connection. */
	openLog(): SentLog {
		const log = new SentLog();
		this.#logs.add(log);
		return log;
	}

	#allocIdent(): number {
		const ident = this.#nextIdent;
		this.#nextIdent = ident === 0xffff_ffff ? 1 : ident + 1;
		return ident;
	}

	/**
	 * Hand out the next notification for `log`'s connection: re-sends first, then new work. It is recorded
	 * in the log at once, so it is owned by the log from here on. Returns false when there is nothing to
	 * write or the retention cap is reached.
	 */
	take(log: SentLog, cursor: Cursor): boolean {
		if (!this.#next(cursor)) return false;
		log.ring.push(cursor.message, cursor.index, cursor.ident, cursor.tries);
		log.sinceProof++;
		return true;
	}

	/**
	 * Request/response transports (HTTP/2): hand out the next notification without a sent log. It stays
	 * outstanding until {@link NotificationQueue.settleDelivered}, {@link NotificationQueue.settleFailed} or
	 * {@link NotificationQueue.requeue} is called for it; the caller keeps the {@link InFlight} it returns.
	 */
	takeOne(): InFlight | undefined {
		const cursor = this.#scratch;
		if (!this.#next(cursor)) return undefined;
		return { message: cursor.message, index: cursor.index, ident: cursor.ident, tries: cursor.tries };
	}

	/** The next notification into `cursor` (re-sends first, then new work), counted as retained from here. */
	#next(cursor: Cursor): boolean {
		if (this.#retained >= this.maxRetained) {
			if (!this.#full && this.unsent > 0) {
				this.#full = true;
				this.#stats.retentionFull++;
				this.#listener?.retentionFull(this.#retained);
			}
			return false;
		}
		if (this.unsent === 0 || !this.#admitted()) return false;
		let tries: number;
		if (this.#resend.size > 0) {
			cursor.message = this.#resend.message(0);
			cursor.index = this.#resend.index(0);
			cursor.ident = this.#resend.ident(0);
			tries = this.#resend.tries(0);
			this.#resend.dropFront(1);
		} else {
			const range = this.#ranges[this.#rangeHead];
			if (range === undefined) return false;
			cursor.message = range;
			cursor.index = this.#headNext++;
			cursor.ident = this.#allocIdent();
			tries = 1;
			this.#unsentNew--;
			if (this.#headNext === range.count) this.#advanceRange();
		}
		cursor.tries = tries;
		this.#gate?.take();
		this.#retained++;
		this.#stats.written++;
		return true;
	}

	/** Whether `n` has used up its attempts: the next counted failure reports it instead of re-sending it. */
	exhausted(n: InFlight): boolean {
		return n.tries >= this.maxAttempts;
	}

	/** An in-flight notification was accepted. */
	settleDelivered(n: InFlight): void {
		tokenDelivered(n.message);
		this.#delivered(1);
	}

	/** An in-flight notification failed for good. */
	settleFailed(n: InFlight, status: number, detail?: FailureDetail): void {
		this.#failed(n.message, n.index, n.ident, status, detail);
		this.#afterSettle();
	}

	/**
	 * Put in-flight notifications back at the front of the queue, in the order given, ahead of new work.
	 * Reasons that count an attempt (see {@link ResendReason}) add one to each.
	 */
	requeue(batch: readonly InFlight[], reason: ResendReason): void {
		if (batch.length === 0) return;
		const counted = COUNTED.has(reason) ? 1 : 0;
		for (let i = batch.length - 1; i >= 0; i--) {
			const n = batch[i]!;
			this.#resend.unshift(n.message, n.index, n.ident, Math.min(n.tries + counted, 255));
		}
		this.#resent(batch.length, reason);
		this.#afterSettle();
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

	/**
	 * Mark `log`'s connection as probing and hand out the probe's ident. The backend writes the probe frame
	 * and then nothing more on that connection: the answer closes it.
	 */
	probe(log: SentLog): number {
		log.probeIdent = this.#allocIdent();
		return log.probeIdent;
	}

	/**
	 * The connection of `log` received an error frame. Settles the log; returns what happened so the backend
	 * can tell an answer (`probe`, `found`: the gateway's word on this connection's notifications) from one
	 * that proves nothing (`notFound`: an ident this connection never carried, handled as
	 * {@link NotificationQueue.connectionClosed}). The connection is finished afterwards (APNs closes it).
	 */
	errorFrame(log: SentLog, status: number, ident: number): 'probe' | 'found' | 'notFound' {
		if (log.settled) return 'found';
		const ring = log.ring;
		// Gateways have answered the empty-token probe with ident 0 (Pushy 0.4 saw it: they could not read the
		// ident). Only the probe can draw a missing or bad token size; ident 0 is never used for anything else.
		const probeAnswer = ident === log.probeIdent || (ident === 0 && (status === STATUS_MISSING_TOKEN || status === STATUS_INVALID_TOKEN_SIZE));
		if (log.probeIdent !== undefined && probeAnswer) {
			this.#stats.probesAnswered++;
			this.#deliverFront(log, ring.size);
			this.#close(log);
			return 'probe';
		}
		const at = ring.lastIndexOfIdent(ident);
		if (at < 0) {
			// Nothing is settled by time, so every notification this connection carried is still here: the
			// gateway named one it was never sent. Its word is worthless; what it processed is unknown.
			this.#stats.identsNotFound++;
			const count = this.#unanswered(log, 'identNotFound', `an error frame named ident ${ident}, never sent on this connection`);
			this.#listener?.identNotFound(ident, status, count);
			this.#close(log);
			return 'notFound';
		}
		this.#deliverFront(log, at);
		// Now the named notification is at position 0.
		const message = ring.message(0);
		const index = ring.index(0);
		const tries = ring.tries(0);
		if (status === STATUS_SHUTDOWN || status === 0) {
			this.#deliverFront(log, 1);
			this.#backtrack(log, status === 0 ? 'error' : 'shutdown');
		} else if (isTemporaryStatus(status) && tries < this.maxAttempts) {
			ring.bumpTries(0);
			this.#backtrack(log, 'temporary');
		} else {
			ring.dropFront(1);
			log.answered++;
			this.#backtrack(log, 'error');
			this.#failed(message, index, ident, status);
		}
		this.#close(log);
		return 'found';
	}

	/**
	 * The connection of `log` ended with no usable answer. What it still holds may or may not have been
	 * processed, so it all goes back to the front of the queue, in doubt. A notification that was alone on
	 * the connection is what the connection died on, or at least the only suspect: that counts as an
	 * attempt, and one out of attempts is reported failed (`ConnectionLost`) instead of re-sent.
	 * @param cause - what ended the connection, for the failure's description.
	 */
	connectionClosed(log: SentLog, cause?: string): void {
		if (log.settled) return;
		this.#unanswered(log, 'silentClose', cause);
		this.#close(log);
	}

	/**
	 * Drop everything now (destroy), with `inFlight`: what the backend held outside the queue. Each dropped
	 * token is settled as dropped for its receipt. Returns how many notifications were dropped unsettled.
	 */
	clear(inFlight: Iterable<InFlight> = []): number {
		const dropped = this.outstanding;
		this.#stats.dropped += dropped;
		for (const n of inFlight) tokenDropped(n.message, n.index);
		for (let r = this.#rangeHead; r < this.#ranges.length; r++) {
			const range = this.#ranges[r]!;
			for (let i = r === this.#rangeHead ? this.#headNext : 0; i < range.count; i++) tokenDropped(range, i);
		}
		const rings = [this.#resend, ...[...this.#logs].map((log) => log.ring)];
		for (const ring of rings) for (let i = 0; i < ring.size; i++) tokenDropped(ring.message(i), ring.index(i));
		for (const log of this.#logs) log.settled = true;
		this.#logs.clear();
		this.#ranges = [];
		this.#rangeHead = 0;
		this.#headNext = 0;
		this.#unsentNew = 0;
		this.#resend.dropFront(this.#resend.size);
		this.#retained = 0;
		return dropped;
	}

	/** See {@link NotificationQueue.connectionClosed}. Returns how many were re-sent. */
	#unanswered(log: SentLog, reason: ResendReason, cause: string | undefined): number {
		const ring = log.ring;
		if (ring.size !== 1) return this.#backtrack(log, reason);
		if (ring.tries(0) < this.maxAttempts) {
			ring.bumpTries(0);
			return this.#backtrack(log, 'unanswered');
		}
		const [message, index, ident, tries] = [ring.message(0), ring.index(0), ring.ident(0), ring.tries(0)];
		ring.dropFront(1);
		this.#failed(message, index, ident, 0, {
			reason: 'ConnectionLost',
			description: `No answer in ${tries} attempts: each time it was alone on its connection, and the connection ended${cause === undefined ? '' : ` (last: ${cause})`}`,
		});
		return 0;
	}

	#deliverFront(log: SentLog, n: number): void {
		if (n === 0) return;
		for (let i = 0; i < n; i++) tokenDelivered(log.ring.message(i));
		log.ring.dropFront(n);
		log.sinceProof = log.ring.size;
		log.answered += n;
		this.#delivered(n);
	}

	/** Move everything `log` holds back to the front of the re-send queue, in order. */
	#backtrack(log: SentLog, reason: ResendReason): number {
		const ring = log.ring;
		const count = ring.size;
		if (count === 0) return 0;
		for (let i = count - 1; i >= 0; i--) {
			this.#resend.unshift(ring.message(i), ring.index(i), ring.ident(i), ring.tries(i));
		}
		ring.dropFront(count);
		this.#resent(count, reason);
		return count;
	}

	// The bookkeeping of each way a retained notification leaves: one place each, for every transport.

	#delivered(count: number): void {
		this.#retained -= count;
		this.#stats.delivered += count;
		this.#listener?.delivered(count);
		this.#afterSettle();
	}

	#failed(message: Message, index: number, ident: number, status: number, detail?: FailureDetail): void {
		this.#retained--;
		this.#stats.failed++;
		tokenFailed(message, index, status, detail?.reason ?? describeStatus(status), detail?.timestamp);
		this.#listener?.failed(message, index, ident, status, detail);
	}

	#resent(count: number, reason: ResendReason): void {
		this.#retained -= count;
		this.#stats.resent += count;
		if (IN_DOUBT.has(reason)) this.#stats.inDoubt += count;
		this.#listener?.resent(count, reason);
	}

	#close(log: SentLog): void {
		log.settled = true;
		log.probeIdent = undefined;
		this.#logs.delete(log);
		this.#afterSettle();
	}

	#afterSettle(): void {
		if (this.#full && this.#retained < this.maxRetained) this.#full = false;
		if (this.outstanding === 0) {
			if (!this.#idleReported) {
				this.#idleReported = true;
				this.#listener?.idle();
			}
		} else if (this.canTake) this.#listener?.wake();
	}
}
