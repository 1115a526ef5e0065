/**
 * Per-call outcomes. `sendAps()` and `send()` return a {@link Receipt}: not a promise, so fire-and-forget
 * code holds nothing and leaves no floating promise; its `settled` promise resolves once every token of
 * that call is delivered, failed or dropped. The state lives on the message (see `CallState`): the
 * queue settles tokens one by one through the functions below, whether or not anyone holds the receipt.
 */
import { randomBytes } from 'node:crypto';
import type { CallState, Message } from './message.js';

/** A token APNs accepted. */
export interface SentToken {
	readonly token: string;
	/** The `apns-id` of the request (HTTP/2; undefined on the binary protocol, which has none). */
	readonly apnsId?: string | undefined;
}

/** A token that failed for good. */
export interface FailedToken {
	readonly token: string;
	/** APNs' HTTP status or binary status code; 0 when it was never answered (see `reason`). */
	readonly status: number;
	/** APNs' reason (`BadDeviceToken`, `Unregistered`, …), or ours (`ConnectionLost`, `StreamReset`, `RequestTimeout`). */
	readonly reason: string;
	/** For 410: when APNs found the token no longer valid. */
	readonly timestamp?: Date | undefined;
	readonly apnsId?: string | undefined;
}

/** What became of every token of one call. `sent` + `failed` + `dropped` = the call's tokens. */
export interface SendResult {
	readonly sent: SentToken[];
	readonly failed: FailedToken[];
	/** Tokens dropped unsettled by `destroy()` (or a `close()` that ran out of time). */
	readonly dropped: string[];
}

/**
 * Generated `apns-id`s: a random prefix per manager and the notification's number in its sequence, so
 * no id is stored per notification and every one is a distinct version-4-shaped UUID.
 */
export class ApnsIds {
	readonly #prefix: string;

	/** @param prefix - another instance's {@link ApnsIds.prefix}, to make the same ids (a worker thread does). */
	constructor(prefix?: string) {
		if (prefix !== undefined) {
			this.#prefix = prefix;
			return;
		}
		const r = randomBytes(10).toString('hex'); // 72 random bits in the prefix, 2 for the variant
		const variant = '89ab'[parseInt(r[18]!, 16) & 3]!;
		this.#prefix = `${r.slice(0, 8)}-${r.slice(8, 12)}-4${r.slice(12, 15)}-${variant}${r.slice(15, 18)}-`;
	}

	/** The random part every id of this sequence shares. */
	get prefix(): string {
		return this.#prefix;
	}

	/** The apns-id of token `index` of `message`: its own `id`, or a generated one. */
	of(message: Message, index: number): string {
		if (message.id !== undefined) return message.id;
		// 48 bits of sequence: 2.8·10^14 notifications per manager before the suffix repeats.
		const n = (message.ordinal + index) % 0x1_0000_0000_0000;
		return `${this.#prefix}${Math.floor(n / 0x1_0000_0000).toString(16).padStart(4, '0')}${(n >>> 0).toString(16).padStart(8, '0')}`;
	}
}

/** The outcome of one `send`/`sendAps` call. */
export class Receipt {
	readonly #message: Message;
	readonly #ids: ApnsIds | undefined;

	/** @internal */
	constructor(message: Message, ids: ApnsIds | undefined) {
		this.#message = message;
		this.#ids = ids;
	}

	/** Tokens in this call. */
	get count(): number {
		return this.#message.count;
	}

	/** Tokens of this call neither delivered, failed nor dropped yet. */
	get pending(): number {
		return this.#message.open;
	}

	/**
	 * Resolves once every token of this call is settled, with what became of each. Never rejects: a
	 * `destroy()` resolves it with the tokens it dropped in `dropped`.
	 */
	get settled(): Promise<SendResult> {
		const m = this.#message;
		if (m.open === 0) return Promise.resolve(this.#result());
		const call = callState(m);
		call.done ??= new Promise<void>((resolve) => (call.resolve = resolve));
		return call.done.then(() => this.#result());
	}

	#result(): SendResult {
		const m = this.#message;
		const ids = this.#ids;
		const call = m.call;
		const failed: FailedToken[] = [];
		const dropped: string[] = [];
		const notSent = new Set<number>();
		for (const f of call?.failed ?? []) {
			notSent.add(f.index);
			failed.push({ token: m.token(f.index), status: f.status, reason: f.reason, timestamp: f.timestamp, apnsId: ids?.of(m, f.index) });
		}
		for (const index of call?.dropped ?? []) {
			notSent.add(index);
			dropped.push(m.token(index));
		}
		const sent: SentToken[] = [];
		for (let i = 0; i < m.count; i++) if (!notSent.has(i)) sent.push({ token: m.token(i), apnsId: ids?.of(m, i) });
		return { sent, failed, dropped };
	}
}

function callState(m: Message): CallState {
	return (m.call ??= { failed: [], dropped: [], resolve: undefined, done: undefined });
}

function settledOne(m: Message): void {
	if (--m.open === 0) m.call?.resolve?.();
}

/** One token of `m` was delivered. */
export function tokenDelivered(m: Message): void {
	settledOne(m);
}

/** Token `index` of `m` failed for good. */
export function tokenFailed(m: Message, index: number, status: number, reason: string, timestamp: Date | undefined): void {
	callState(m).failed.push({ index, status, reason, timestamp });
	settledOne(m);
}

/** Token `index` of `m` was dropped unsettled. */
export function tokenDropped(m: Message, index: number): void {
	callState(m).dropped.push(index);
	settledOne(m);
}
