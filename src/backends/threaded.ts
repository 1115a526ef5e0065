/**
 * The `'threaded'` backend: the protocol's driver runs in `threads` worker threads, each with its own
 * connections, so TLS, HTTP/2 framing and their garbage stay off the caller's event loop. The caller's
 * thread keeps the queue: it hands each thread batches of notifications as bytes (wire.ts), up to a
 * credit per thread, and settles each one on the outcome the thread reports by handle. Until then a
 * handed-out notification is held here too (see {@link Held}), so a thread that dies — an
 * uncaught error, `process.exit()` in it — loses nothing: what it held goes back to the front of the
 * queue, in doubt (`workerLost`), and a new thread takes its place, after a backoff if threads keep
 * dying before anything is settled.
 *
 * Not every thread need take work: `minThreads` always do, and one more is put to work only while every
 * thread taking work is compute-bound (see {@link BusyMeter}). A thread that is not needed would only
 * add work — its own JIT warm-up, garbage collector and connections — competing for the same cores.
 */
import { Worker } from 'node:worker_threads';
import { ConnectionError, ProtocolError } from '../errors.js';
import type { Message } from '../message.js';
import { Reconnect } from '../drivers/backoff.js';
import { MAX_AWAITING } from '../drivers/binary.js';
import { CLOSE_LINGER_MS, coalesced } from '../drivers/schedule.js';
import type { Cursor, DriverQueue, InFlight } from '../queue.js';
import { Ring } from '../ring.js';
import type { Backend, BackendContext, DriverOptions } from './backend.js';
import { BusyMeter } from './busy.js';
import { BatchWriter } from './wire.js';
import type { FromWorker, Report, ToWorker, WireError, WorkerInit } from './worker.js';

/** Notifications per batch message. */
const BATCH = 2048;
/** How long a closing thread may take to say it closed before it is terminated (its drivers linger CLOSE_LINGER_MS). */
const CLOSE_GRACE_MS = CLOSE_LINGER_MS + 1000;
/**
 * The shortest time over which the threads' load is read before one more (or one fewer) takes work:
 * long beside the kernel's lag in counting a running thread's CPU time (up to a scheduler tick, 4-10 ms).
 *
 * @internal exported for tests.
 */
export const SPREAD_WINDOW_MS = 100;
/** A thread this busy (of a core) is compute-bound: one more may take work if every working thread is. */
const SATURATED = 0.9;
/** One thread fewer takes work when those working would each be at most this busy without it. */
const SPREAD_DOWN = 0.6;

/**
 * The notifications a thread holds, by handle: a ring in the order they were handed over, the front's
 * handle known, so handle h is entry (h − front) mod 2^32. The thread reports deliveries as ranges;
 * one that starts at the front, with no hole in the ring, is settled straight from it. Anything settled
 * out of order leaves a hole, dropped once it reaches the front. One held for long at the front (an
 * HTTP/2 request waiting out a 60 s retry while the rest flow) would keep every hole behind it: once the
 * ring spans `limit`, the front is moved aside — its live entries to {@link #parked}, its holes dropped.
 *
 * @internal exported for tests.
 */
export class Held {
	readonly #ring = new Ring();
	/** Live entries taken off the front of a ring that spanned too much, by handle, in hand-over order. */
	readonly #parked = new Map<number, InFlight>();
	readonly #limit: number;
	/** Handle of the ring's first entry, and of the next one put. */
	#front: number;
	#next: number;
	#holes = 0;

	/**
	 * @param limit Entries the ring may span, holes included, before its front is moved aside (twice the
	 *   credit: a ring in order never gets there).
	 * @param start The first handle (tests start near 2^32).
	 */
	constructor(limit: number, start = 0) {
		this.#limit = Math.max(2, limit);
		this.#front = this.#next = start >>> 0;
	}

	/** Notifications held. */
	get size(): number {
		return this.#ring.size - this.#holes + this.#parked.size;
	}

	/** Entries the ring spans, holes included (for tests). */
	get span(): number {
		return this.#ring.size;
	}

	/** Hold the run of `count` the cursor starts (see `DriverQueue.takeRun`); returns its first handle. */
	put(c: Cursor, count = 1): number {
		const h = this.#next;
		this.#ring.pushRun(c.message, c.index, c.ident, c.tries, count);
		this.#next = (h + count) >>> 0;
		return h;
	}

	/** Entry of handle `h` in the ring, or −1 if it is not there (parked, or already settled). */
	#entry(h: number): number {
		const i = (h - this.#front) >>> 0;
		return i < this.#ring.size && !this.#ring.isHole(i) ? i : -1;
	}

	/**
	 * The `count` handles from `first` were delivered: settled at once if they are the front of a ring
	 * without holes; otherwise those still held are moved to `scratch`, for the caller to settle with the
	 * rest of the report (one settlement per report, not per range: HTTP/2 answers out of order).
	 */
	delivered(first: number, count: number, queue: DriverQueue, scratch: Ring): void {
		const ring = this.#ring;
		if (this.#holes === 0 && first === this.#front && count <= ring.size) {
			// Moved first: settling calls the user's handlers.
			this.#front = (first + count) >>> 0;
			queue.settleDeliveredRing(ring, count);
			return;
		}
		for (let k = 0; k < count; k++) {
			const h = (first + k) >>> 0;
			const i = this.#entry(h);
			if (i >= 0) {
				scratch.push(ring.message(i), ring.index(i), ring.ident(i), ring.tries(i));
				this.#hole(i);
			} else {
				const n = this.#parked.get(h);
				if (n === undefined) continue;
				this.#parked.delete(h);
				scratch.push(n.message, n.index, n.ident, n.tries);
			}
		}
		this.#tidy();
	}

	/** Remove `h` into `into`; false if it is not held. */
	take(h: number, into: Cursor): boolean {
		const i = this.#entry(h);
		if (i < 0) {
			const n = this.#parked.get(h);
			if (n === undefined) return false;
			this.#parked.delete(h);
			into.message = n.message;
			into.index = n.index;
			into.ident = n.ident;
			into.tries = n.tries;
			return true;
		}
		this.#ring.read(i, into);
		this.#hole(i);
		this.#tidy();
		return true;
	}

	/** Remove everything, in the order it was handed over. */
	takeAll(): InFlight[] {
		const ring = this.#ring;
		const out = [...this.#parked.values()];
		for (let i = 0; i < ring.size; i++) if (!ring.isHole(i)) out.push(ring.entry(i));
		this.#parked.clear();
		ring.dropFront(ring.size);
		this.#front = this.#next;
		this.#holes = 0;
		return out;
	}

	#hole(i: number): void {
		this.#ring.clear(i);
		this.#holes++;
	}

	/**
	 * Drop the holes at the front. If the ring still spans more than the limit with holes in it, move its
	 * front aside until it spans half (each entry is moved at most once, so this costs O(1) per put).
	 */
	#tidy(): void {
		const ring = this.#ring;
		let n = 0;
		while (n < ring.size && ring.isHole(n)) n++;
		this.#holes -= n;
		if (this.#holes > 0 && ring.size > this.#limit) {
			for (; n < ring.size && (ring.size - n > this.#limit >> 1 || ring.isHole(n)); n++) {
				if (ring.isHole(n)) this.#holes--;
				else this.#parked.set((this.#front + n) >>> 0, ring.entry(n));
			}
		}
		if (n === 0) return;
		ring.dropFront(n);
		this.#front = (this.#front + n) >>> 0;
	}
}

class Thread {
	readonly number: number;
	readonly worker: Worker;
	readonly held: Held;
	/** Connection ids it reported up and not down: told down if it dies. */
	readonly connections = new Set<number>();
	/** Its last report's count (a dead thread's attempts still count). */
	connectAttempts = 0;
	/** What it was last told of the caller's queue (see {@link ThreadedBackend.#hint}). */
	told = '';
	exited = false;
	/** The uncaught error it died of, if any. */
	exitError: Error | undefined;
	closed: (() => void) | undefined;
	/** The gateway settled something through it. */
	settled = false;
	/** For tests: who waits for its answers to `spareChunks`, in order. */
	readonly spareAnswers: Array<{ resolve: (count: number) => void; reject: (error: Error) => void }> = [];
	readonly spawnedAt = performance.now();
	readonly busy: BusyMeter;

	constructor(number: number, worker: Worker, credit: number) {
		this.number = number;
		this.worker = worker;
		this.held = new Held(2 * credit);
		this.busy = new BusyMeter(worker, SPREAD_WINDOW_MS);
	}
}

/** The `'threaded'` backend. */
export function createThreadedBackend(context: BackendContext): Backend {
	return new ThreadedBackend(context);
}

/** @internal exported for tests (`crash`, `spareChunks`). */
export class ThreadedBackend implements Backend {
	readonly #ctx: BackendContext;
	readonly #threads: Array<Thread | undefined>;
	/** Notifications a thread may hold at once. */
	readonly #credit: number;
	readonly #respawn: Reconnect;
	#connectAttemptsOfDead = 0;
	#closing = false;
	#destroyed = false;
	#jwt: string | undefined;
	readonly #writer = new BatchWriter(BATCH);
	readonly #cursor: Cursor = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	readonly #scratch: Cursor = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	readonly #ring = new Ring();
	/** Batch buffers given back by the threads (binary only; see BatchLedger in wire.ts). */
	readonly #pool: ArrayBuffer[] = [];
	/**
	 * As many as the threads' credit spans (~76 KiB each when full: ~10 MiB a binary thread), the memory
	 * in flight at full credit anyway; emptied once no thread holds anything. (With 32 kept, half of a
	 * million's batches were fresh memory: a probe's answer gives back ~30 batches at once.)
	 */
	readonly #poolLimit: number;
	readonly #minThreads: number;
	/** Threads taking work: the first this many live ones, in thread order. */
	#inUse: number;
	#measuredAt = performance.now();
	/** Reads the load again while work waits for a thread that takes none. */
	#spreadTimer: NodeJS.Timeout | undefined;

	constructor(context: BackendContext) {
		this.#ctx = context;
		const { options, protocol } = context.setup;
		// Enough to keep a thread's connections busy while the next batch is on its way. HTTP/2: twice the
		// streams its sessions may carry. Binary: unconfirmed notifications keep their credit until their
		// probe is answered, and up to MAX_AWAITING windows wait for answers while the active connection
		// writes the next and the spare is ready: credit for MAX_AWAITING + 2 windows, a window being
		// confirmEvery or what minConfirmIntervalMs carries at a million a second, whichever is more. (With
		// two windows' credit a thread ran dry waiting for answers: 1M binary notifications took 1.5-1.75 s
		// instead of 1.33-1.45 s, evented 1.44-1.57 s.)
		const window = Math.max(options.confirmEvery, options.minConfirmIntervalMs * 1000);
		this.#credit = protocol === 'binary' ? Math.max(1 << 18, (MAX_AWAITING + 2) * window) : Math.max(8192, 2 * options.connections * options.maxStreamsPerSession);
		this.#poolLimit = (context.threads ?? 1) * Math.ceil(this.#credit / BATCH);
		this.#respawn = new Reconnect(options.reconnect, () => this.#spawnMissing());
		this.#threads = new Array<Thread | undefined>(context.threads ?? 1).fill(undefined);
		this.#minThreads = this.#inUse = Math.min(context.minThreads ?? 1, this.#threads.length);
		this.#spawnMissing();
	}

	get connectAttempts(): number {
		let n = this.#connectAttemptsOfDead;
		for (const t of this.#threads) if (t !== undefined) n += t.connectAttempts;
		return n;
	}

	/** Worker threads running now. */
	get threads(): number {
		return this.#threads.filter((t) => t !== undefined).length;
	}

	/** @internal For tests: the worker threads running now. */
	get workers(): Worker[] {
		return this.#threads.flatMap((t) => (t === undefined || t.exited ? [] : [t.worker]));
	}

	readonly #wake = coalesced(() => this.#pump());

	wake(): void {
		if (!this.#destroyed) this.#wake();
	}

	#spawnMissing(): void {
		if (this.#closing) return;
		for (let i = 0; i < this.#threads.length; i++) if (this.#threads[i] === undefined) this.#threads[i] = this.#spawn(i);
		this.wake();
	}

	#spawn(number: number): Thread {
		const { setup, token, apnsIds, queue } = this.#ctx;
		this.#jwt = token?.current();
		const init: WorkerInit = { setup: { ...setup, options: threadShare(setup.options, this.#threads.length), tls: { ...setup.tls, proxy: undefined } }, proxy: setup.tls.proxy?.toWire(), maxAttempts: queue.maxAttempts, apnsIdPrefix: apnsIds?.prefix, jwt: this.#jwt };
		const worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: init });
		const thread = new Thread(number, worker, this.#credit);
		worker.on('message', (message: FromWorker) => this.#onMessage(thread, message));
		worker.on('error', (error: Error) => {
			thread.exitError ??= error;
		});
		worker.on('exit', (code) => this.#onExit(thread, code));
		// Ref'd only while it holds something: an idle manager must not keep the process alive. (After the
		// listeners: adding a 'message' listener refs the worker again.)
		worker.unref();
		return thread;
	}

	#post(thread: Thread, message: ToWorker, transfer?: ArrayBuffer[]): void {
		if (!thread.exited) thread.worker.postMessage(message, transfer);
	}

	#pump(): void {
		if (this.#destroyed) return;
		const { queue, token } = this.#ctx;
		if (token !== undefined) {
			const jwt = token.current();
			if (jwt !== this.#jwt) {
				this.#jwt = jwt;
				for (const t of this.#threads) if (t !== undefined) this.#post(t, { type: 'token', jwt });
			}
		}
		const live = this.#threads.filter((t): t is Thread => t !== undefined && !t.exited && t.closed === undefined);
		this.#spread(live);
		// Of the threads taking work, the least loaded first: one still busy with its last batch gets the rest.
		const working = live.slice(0, this.#inUse).sort((a, b) => a.held.size - b.held.size);
		for (const t of working) {
			while (t.held.size < this.#credit && queue.canTake) {
				const cursor = this.#cursor;
				const writer = this.#writer;
				let first = -1;
				for (;;) {
					const n = queue.takeRun(cursor, Math.min(BATCH - writer.size, this.#credit - t.held.size));
					if (n === 0) break;
					const h = t.held.put(cursor, n);
					if (first < 0) first = h;
					writer.add(cursor.message, cursor.index, cursor.ident, cursor.tries, n);
				}
				if (writer.size === 0) break;
				const batch = writer.finish(first, this.#pool);
				this.#post(t, { type: 'batch', batch, unsent: queue.unsent, rateLimited: queue.rateLimited }, [batch.buffer]);
			}
		}
		live.forEach((t, i) => {
			if (t.held.size > 0) t.worker.ref();
			this.#hint(t, i < this.#inUse);
		});
		// Work waits while a thread takes none: read the load again once the window is over, even if no
		// thread reports meanwhile (a compute-bound one may not for a while).
		if (this.#spreadTimer === undefined && queue.canTake && this.#inUse < live.length && !this.#closing) {
			this.#spreadTimer = setTimeout(
				() => {
					this.#spreadTimer = undefined;
					this.wake();
				},
				Math.max(1, Math.ceil(SPREAD_WINDOW_MS - (performance.now() - this.#measuredAt)) + 1),
			);
			this.#spreadTimer.unref();
		}
	}

	/**
	 * Once a window has passed, read how busy each live thread was and put one more to work if every
	 * thread working was compute-bound, or leave one to finish what it holds if those working would fit
	 * in one fewer. One step per window: the next reading shows what the step did.
	 */
	#spread(live: Thread[]): void {
		if (live.length <= this.#minThreads) return;
		const now = performance.now();
		if (now - this.#measuredAt < SPREAD_WINDOW_MS) return;
		this.#measuredAt = now;
		// By thread number; undefined where there is no reading (not up yet, or up for less than a window).
		const busy = new Array<number | undefined>(this.#threads.length).fill(undefined);
		for (const t of live) busy[t.number] = t.busy.read();
		const working = Math.min(this.#inUse, live.length);
		let sum = 0;
		let saturated = true;
		for (let i = 0; i < working; i++) {
			const b = busy[live[i]!.number];
			// A working thread without a reading: no step until it has one.
			if (b === undefined) return;
			sum += b;
			if (!(b >= SATURATED)) saturated = false;
		}
		let inUse = this.#inUse;
		if (saturated && working < live.length) inUse = working + 1;
		else if (inUse > this.#minThreads && sum <= (working - 1) * SPREAD_DOWN) inUse = Math.max(this.#minThreads, working - 1);
		if (inUse === this.#inUse) return;
		this.#inUse = inUse;
		this.#ctx.events.threadsInUse({ inUse, busy });
	}

	/**
	 * Tell `t` what it needs to know of the caller's queue when that changed: whether work waits here
	 * (binary probes at once rather than idling), whether only the rate limit holds it (no probe per
	 * grant), and whether someone waits for everything to settle. A stale "rate-limited" would stop a
	 * binary thread from ever confirming its last window. A thread not taking work is told that nothing
	 * waits for it and that what it holds is wanted settled: it probes at once and opens no spare
	 * connection for work that will not come.
	 */
	#hint(t: Thread, working: boolean): void {
		const { queue } = this.#ctx;
		const unsent = working ? queue.unsent : 0;
		const rateLimited = working && queue.rateLimited;
		const confirm = !working || this.#ctx.wantsConfirmation();
		const told = `${unsent > 0}/${rateLimited}/${confirm}`;
		if (told === t.told) return;
		t.told = told;
		this.#post(t, { type: 'hint', unsent, rateLimited, confirm });
	}

	#onMessage(thread: Thread, message: FromWorker): void {
		if (this.#destroyed) return;
		if (message.type === 'tokenExpired') {
			this.#ctx.token?.expired();
			this.wake(); // the next pump sends the new token
		} else if (message.type === 'ready') {
			thread.busy.start(message.tid);
			this.#ctx.events.threadReady({ thread: thread.number + 1, startMs: Math.round(performance.now() - thread.spawnedAt) });
		} else if (message.type === 'closed') {
			thread.closed?.();
		} else if (message.type === 'spareChunks') {
			thread.spareAnswers.shift()?.resolve(message.count);
		} else {
			this.#report(thread, message);
		}
	}

	#report(thread: Thread, report: Report): void {
		const { queue, events } = this.#ctx;
		thread.connectAttempts = report.connectAttempts;
		// Connection happenings first: a connectError must be heard before the flush it may end.
		for (const e of report.events) {
			const id = this.#connectionId(thread, e[0] === 'connected' || e[0] === 'disconnected' ? e[1] : 0);
			switch (e[0]) {
				case 'connected':
					thread.connections.add(id);
					events.connected({ connection: id });
					break;
				case 'disconnected':
					thread.connections.delete(id);
					events.disconnected({ connection: id, reason: e[2], ...(e[3] === undefined ? {} : { error: toError(e[3]) }) });
					break;
				case 'connectError':
					events.connectError(toError(e[1]) as ConnectionError, { attempt: e[2], retryInMs: e[3] });
					break;
				case 'identNotFound':
					events.identNotFound({ ident: e[1], status: e[2], resent: e[3] });
					break;
				case 'probeAnswered':
					events.probeAnswered();
					break;
			}
		}
		queue.recordElsewhere(report.rewritten, report.resent);
		for (const b of report.buffers) if (this.#pool.length < this.#poolLimit) this.#pool.push(b);
		const d = report.delivered;
		if (d.length > 0) {
			const scratch = this.#ring;
			for (let p = 0; p < d.length; p += 2) thread.held.delivered(d[p]!, d[p + 1]!, queue, scratch);
			queue.settleDeliveredRing(scratch, scratch.size);
			thread.settled = true;
			this.#respawn.succeeded();
		}
		const n = this.#scratch;
		for (const f of report.failed) {
			if (!thread.held.take(f.handle, n)) continue;
			thread.settled = true;
			queue.settleFailed(n, f.status, f.detail); // read at once, not kept: the scratch cursor will do
		}
		// Ref'd while it holds notifications or has connections open, as the evented backend's sockets are.
		if (thread.held.size === 0 && thread.connections.size === 0) thread.worker.unref();
		else thread.worker.ref();
		// Nothing held anywhere: the batch buffers are a stream's memory, not an idle manager's (the queue
		// lets the spare ring chunks go once nothing is outstanding).
		if (this.#pool.length > 0 && this.#threads.every((t) => t === undefined || t.held.size === 0)) this.#pool.length = 0;
		this.wake();
	}

	/** Connection ids unique across threads: thread k of T numbers its connections k+1, k+1+T, … */
	#connectionId(thread: Thread, local: number): number {
		return (local - 1) * this.#threads.length + thread.number + 1;
	}

	#onExit(thread: Thread, code: number): void {
		thread.exited = true;
		for (const waiter of thread.spareAnswers.splice(0)) waiter.reject(new Error(`thread ${thread.number + 1} exited`));
		this.#connectAttemptsOfDead += thread.connectAttempts;
		if (this.#threads[thread.number] === thread) this.#threads[thread.number] = undefined;
		thread.closed?.();
		if (this.#destroyed) return;
		const held = thread.held.takeAll();
		const error = new ConnectionError(`Worker thread ${thread.number + 1} exited (code ${code})${thread.exitError === undefined ? '' : `: ${thread.exitError.message}`}; ${held.length} notifications it held are re-sent`, { cause: thread.exitError });
		for (const id of thread.connections) this.#ctx.events.disconnected({ connection: id, reason: 'threadExit', error });
		if (this.#closing && held.length === 0) return;
		// A thread that dies before anything was settled through it is backed off like a failed connect
		// (the first death after a settlement is replaced at once).
		if (thread.settled) this.#respawn.succeeded();
		const { retryInMs } = this.#respawn.failed();
		this.#ctx.events.threadExit({ thread: thread.number + 1, error, resent: held.length, retryInMs });
		this.#ctx.queue.requeue(held, 'workerLost');
	}

	close(): Promise<void> {
		this.#closing = true;
		this.#respawn.cancel();
		clearTimeout(this.#spreadTimer);
		const closing: Array<Promise<void>> = [];
		for (const t of this.#threads) {
			if (t === undefined || t.exited) continue;
			closing.push(
				new Promise<void>((resolve) => {
					const timer = setTimeout(() => void t.worker.terminate(), CLOSE_GRACE_MS);
					timer.unref();
					t.closed = () => {
						clearTimeout(timer);
						resolve();
					};
					this.#post(t, { type: 'close' });
				}).then(() => t.worker.terminate().then(() => undefined)),
			);
		}
		return Promise.all(closing).then(() => undefined);
	}

	destroy(): InFlight[] {
		this.#destroyed = true;
		this.#closing = true;
		this.#respawn.cancel();
		clearTimeout(this.#spreadTimer);
		const held: InFlight[] = [];
		for (const t of this.#threads) {
			if (t === undefined) continue;
			for (const n of t.held.takeAll()) held.push(n); // a thread may hold 262,144: more than a spread's arguments
			void t.worker.terminate();
		}
		return held;
	}

	/** @internal For tests: the spare ring chunks thread `number` (from 1) keeps. */
	spareChunks(number: number): Promise<number> {
		const t = this.#threads[number - 1];
		if (t === undefined || t.exited) return Promise.reject(new Error(`no thread ${number}`));
		return new Promise((resolve, reject) => {
			t.spareAnswers.push({ resolve, reject });
			this.#post(t, { type: 'spareChunks' });
		});
	}

	/**
	 * @internal For tests: keep thread `number` (from 1) busy on a CPU, reading nothing, until the returned
	 * function is called (a compute-bound thread).
	 */
	spin(number: number): () => void {
		const until = new SharedArrayBuffer(4);
		const t = this.#threads[number - 1];
		if (t !== undefined) this.#post(t, { type: 'spin', until });
		return () => void Atomics.store(new Int32Array(until), 0, 1);
	}

	/** @internal For tests: make thread `number` (from 1) die by an uncaught error or `process.exit()`. */
	crash(number: number, how: 'throw' | 'exit'): void {
		const t = this.#threads[number - 1];
		if (t !== undefined) this.#post(t, { type: 'crash', how });
	}
}

/**
 * A thread's share of the manager's connection ceilings, so that `threads` threads together open no
 * more connections than one driver would: each gets 1/threads of `maxConnectsPerSecond` (and so of its
 * burst, though never less than one connection: under threads/3 a second, the threads together may burst
 * to one each) and writes `threads` times `minConfirmIntervalMs` on a connection before a probe hands over.
 * (At 1/threads of the rate each, a thread's window in count is what it was.) What APNs sees as
 * connect/disconnect churn is the manager's, however many threads make it.
 *
 * @internal exported for tests.
 */
export function threadShare(options: DriverOptions, threads: number): DriverOptions {
	return { ...options, maxConnectsPerSecond: options.maxConnectsPerSecond / threads, minConfirmIntervalMs: options.minConfirmIntervalMs * threads };
}

/** Rebuild an error that crossed from a worker, as the evented backend would have made it. */
function toError(e: WireError): Error {
	const cause = e.cause === undefined ? undefined : Object.assign(new Error(e.cause.message), { name: e.cause.name, ...(e.cause.code === undefined ? {} : { code: e.cause.code }) });
	if (e.kind === 'ProtocolError') return new ProtocolError(e.message);
	if (e.kind === 'ConnectionError') return new ConnectionError(e.message, { cause });
	return Object.assign(new Error(e.message, { cause }), { name: e.kind });
}
