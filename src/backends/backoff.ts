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
 */
export class Reconnect {
	readonly #policy: Required<ReconnectOptions>;
	readonly #onDue: () => void;
	#failures = 0;
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
		const retryInMs = backoffDelay(this.#failures, this.#policy);
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
	}

	/** Stop waiting (close, destroy). */
	cancel(): void {
		clearTimeout(this.#timer);
		this.#timer = undefined;
	}
}
