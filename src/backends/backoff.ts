/** Capped exponential backoff with jitter, shared by every backend (reconnects, retries). */
import type { ReconnectOptions } from '../options.js';

/** Delay before attempt `failures` + 1: min(max, initial·2^(failures−1)), times a random factor in [1 − jitter, 1]. */
export function backoffDelay(failures: number, policy: Required<ReconnectOptions>): number {
	const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** Math.min(Math.max(failures, 1) - 1, 30));
	return Math.max(1, Math.round(ceiling * (1 - policy.jitter * Math.random())));
}
