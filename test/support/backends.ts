/**
 * The backends every behaviour suite runs on (conformance, hostile gateways, HTTP/2 faults, lifecycle,
 * feedback, receipts). Owned by test/conformance.test.ts, which states the contract: a new backend is one
 * line here, and every one of those suites then runs on it too. (A module of its own, not an export of
 * conformance.test.ts: importing a test file would run its tests in the importer's process.)
 */
import type { ApnsManagerOptions } from '../../src/index.js';

/** A backend as the suites see it: its name in test titles, and the options that choose it. */
export interface BackendUnderTest {
	readonly name: string;
	/** Spread into every manager a suite builds (before the test's own options). */
	readonly options: Partial<ApnsManagerOptions>;
	/**
	 * The driver's timers (reconnect backoff, probes, timeouts) run on the test's own thread, so `mock.timers`
	 * reaches them. False for a backend whose drivers run in worker threads: a test that moves the driver's
	 * clock by hand runs only where this is true; its per-backend counterpart asserts on counts and events.
	 */
	readonly callerThreadTimers: boolean;
	/**
	 * How many connections write at once (one per worker thread). With more than one there is no order
	 * across them: a re-send goes ahead of what its own thread has not written, while another thread may
	 * already be writing newer work.
	 */
	readonly writers: number;
}

/** Every backend; adding one is one line here. */
export const BACKENDS: readonly BackendUnderTest[] = [
	{ name: 'evented', options: { backend: 'evented' }, callerThreadTimers: true, writers: 1 },
	{ name: 'threaded', options: { backend: 'threaded' }, callerThreadTimers: false, writers: 1 },
	// Both threads take work from the start (minThreads 2): by default the second would only while the first is compute-bound.
	{ name: 'threaded×2', options: { backend: 'threaded', threads: 2, minThreads: 2 }, callerThreadTimers: false, writers: 2 },
];
