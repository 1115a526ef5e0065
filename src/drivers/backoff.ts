/** Capped exponential backoff with jitter, shared by every backend (reconnects, retries). */
import type { ReconnectOptions } from '../options.js';

/** Delay before attempt `failures` + 1: min(max, initial·2^(failures−1)), times a random factor in [1 − jitter, 1]. */
export function backoffDelay(failures: number, policy: Required<ReconnectOptions>): number {
	const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(Math.max(failures, 1) - 1, 30));
	return Math.max(1, Math.round(ceiling * (1 - policy.jitter * Math.random())));
}

/**
 * Consecutive failed connect attempts and the wait before the next one: every backend counts a failure,
 * waits out {@link backoffDelay}, then tries again. A failure is any connection or session that ends
 * before the gateway settled a notification on it, however it ended (refused, handshake error, GOAWAY at
 * connect, garbage, a reset, a silent close, no answer in time); only such a settlement resets the count.
 * The first failure right after a settlement is retried at once (a working gateway dropped one
 * connection: a gateway that drops every few thousand notifications must not cost a backoff each time);
 * the next one in a row waits `initialDelayMs`, and so on. So an immediate reconnect costs the gateway at
 * least one settled notification.
 */
export class Reconnect {
	readonly #policy: Required<ReconnectOptions>;
	readonly #onDue: () => void;
	#failures = 0;
	/** The gateway settled something since the last failure (or ever, before the first). */
	#worked = false;
	#timer: NodeJS.Timeout | undefined;

	constructor(policy: Required<ReconnectOptions>, onDue: () => void) {
		this.#policy = policy;
		this.#onDue = onDue;
	}

	/** Consecutive failed attempts since the last success. */
	get failures(): number {
		return this.#failures;
	}

	/** Waiting out a backoff delay: do not connect now. */
	get waiting(): boolean {
		return this.#timer !== undefined;
	}

	/** An attempt failed: count it and call `onDue` after the backoff. Returns what to report. */
	failed(): { attempt: number; retryInMs: number } {
		this.#failures++;
		const backedOff = this.#worked ? this.#failures - 1 : this.#failures;
		const retryInMs = backedOff === 0 ? 0 : backoffDelay(backedOff, this.#policy);
		clearTimeout(this.#timer);
		this.#timer = setTimeout(() => {
			this.#timer = undefined;
			this.#onDue();
		}, retryInMs);
		return { attempt: this.#failures, retryInMs };
	}

	/** The gateway settled a notification (real progress): the next failure starts the backoff afresh. */
	succeeded(): void {
		this.#failures = 0;
		this.#worked = true;
	}

	/** Stop waiting (close, destroy). */
	cancel(): void {
		clearTimeout(this.#timer);
		this.#timer = undefined;
	}
}

/** A token bucket: `burst` tokens, refilled at `perSecond`. */
export class TokenBucket {
	readonly #perSecond: number;
	readonly #burst: number;
	#tokens: number;
	#at = performance.now();

	constructor(perSecond: number, burst: number) {
		this.#perSecond = perSecond;
		this.#burst = burst;
		this.#tokens = burst;
	}

	/** Take a token if one is there now. */
	take(): boolean {
		const now = performance.now();
		this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#at) * this.#perSecond) / 1000);
		this.#at = now;
		if (this.#tokens < 1) return false;
		this.#tokens--;
		return true;
	}

	/** How long until a token is there, in ms (0 if one is). */
	get waitMs(): number {
		return this.#tokens >= 1 ? 0 : Math.ceil(((1 - this.#tokens) * 1000) / this.#perSecond);
	}
}

/**
 * The connection-rate ceiling for connections a backend chooses to open (binary probes, each a hand-over
 * to a new connection; HTTP/2 sessions): a token bucket of 3 × `perSecond` connects, refilled at `perSecond`. Once it
 * is empty they wait here, so a gateway that answers fast sees no more than `perSecond` of them a second
 * over time. 0 turns it off.
 */
export class ConnectRate {
	readonly #bucket: TokenBucket | undefined;
	readonly #onDue: () => void;
	#timer: NodeJS.Timeout | undefined;

	constructor(perSecond: number, onDue: () => void) {
		this.#bucket = perSecond === 0 ? undefined : new TokenBucket(perSecond, Math.max(1, 3 * perSecond));
		this.#onDue = onDue;
	}

	/** Take a connect if the ceiling allows one now; otherwise `onDue` is called once one is allowed. */
	take(): boolean {
		if (this.#bucket === undefined || this.#bucket.take()) return true;
		if (this.#timer === undefined) {
			this.#timer = setTimeout(() => {
				this.#timer = undefined;
				this.#onDue();
			}, this.#bucket.waitMs);
		}
		return false;
	}

	/** Stop waiting (close, destroy). */
	cancel(): void {
		clearTimeout(this.#timer);
		this.#timer = undefined;
	}
}
