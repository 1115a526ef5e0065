/**
 * How much of a core a worker thread has been using: the share of wall time it ran on a CPU since the
 * last reading. The threaded backend asks it before putting one more thread to work (see
 * `ThreadedBackend`): another thread adds throughput only when those already working are compute-bound.
 *
 * On Linux it reads the kernel's own count for the thread (`/proc/self/task/TID/schedstat`: nanoseconds
 * on a CPU), so a thread that waits for a core — two busy threads on a machine with no third core free —
 * is not counted busy for the time it waits. Where that file cannot be read (another OS, a kernel
 * without scheduler statistics), the thread's event-loop utilization stands in, which does count it.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import type { EventLoopUtilization } from 'node:perf_hooks';
import type { Worker } from 'node:worker_threads';

/**
 * The calling thread's id in the kernel, where `/proc` tells it (Linux); undefined elsewhere. A worker
 * thread sends it to the caller's thread with its `ready`.
 */
export function kernelThreadId(): number | undefined {
	try {
		const tid = Number(readlinkSync('/proc/thread-self').split('/')[2]);
		return Number.isInteger(tid) && tid > 0 ? tid : undefined;
	} catch {
		return undefined;
	}
}

/** Enough of a Worker to read its event-loop utilization (a fake one in tests). */
export type Measurable = Pick<Worker, 'performance'>;

export class BusyMeter {
	readonly #worker: Measurable;
	/** A reading over less than this is no reading (the kernel's count lags by up to a scheduler tick). */
	readonly #minWindowMs: number;
	/** Its schedstat file, or undefined: measured by event-loop utilization. */
	#path: string | undefined;
	/** When it was last read (performance.now); 0 until the thread is up. */
	#at = 0;
	#cpuNs = 0;
	#elu: EventLoopUtilization | undefined;

	constructor(worker: Measurable, minWindowMs: number) {
		this.#worker = worker;
		this.#minWindowMs = minWindowMs;
	}

	/**
	 * The thread is up (its `ready`): measure from now. Before, there is no reading — a thread's start
	 * (loading its modules) is not the load it will carry.
	 */
	start(tid: number | undefined): void {
		this.#at = performance.now();
		const path = tid === undefined ? undefined : `/proc/self/task/${tid}/schedstat`;
		const ns = path === undefined ? undefined : cpuNs(path);
		// A thread that loaded its modules has used a CPU: 0 is a kernel that keeps no such count.
		if (ns === undefined || ns === 0) {
			this.#byEventLoop();
		} else {
			this.#path = path;
			this.#cpuNs = ns;
		}
	}

	/** Measure by event-loop utilization from now on. */
	#byEventLoop(): void {
		this.#path = undefined;
		this.#elu = this.#worker.performance.eventLoopUtilization();
	}

	/**
	 * The share of wall time (0–1) the thread ran since the last reading (or since it was up); undefined
	 * if it is not up yet, or less than the shortest window has passed (the window then goes on).
	 */
	read(): number | undefined {
		if (this.#at === 0) return undefined;
		const now = performance.now();
		const ms = now - this.#at;
		if (ms < this.#minWindowMs) return undefined;
		this.#at = now;
		if (this.#path !== undefined) {
			const ns = cpuNs(this.#path);
			if (ns !== undefined) {
				const used = (ns - this.#cpuNs) / 1e6;
				this.#cpuNs = ns;
				return share(used / ms);
			}
			// Gone (the thread exited) or unreadable: event-loop utilization from here on.
			this.#byEventLoop();
			return undefined;
		}
		const elu = this.#worker.performance.eventLoopUtilization();
		const since = this.#worker.performance.eventLoopUtilization(elu, this.#elu);
		this.#elu = elu;
		return share(since.utilization);
	}
}

/** A share from 0 to 1 (a NaN is no reading). */
function share(x: number): number | undefined {
	return Number.isFinite(x) ? Math.min(1, Math.max(0, x)) : undefined;
}

/** A thread's time on a CPU so far, in nanoseconds (the first field of its schedstat), or undefined. */
function cpuNs(path: string): number | undefined {
	try {
		const ns = Number(readFileSync(path, 'latin1').split(' ', 1)[0]);
		return Number.isFinite(ns) ? ns : undefined;
	} catch {
		return undefined;
	}
}
