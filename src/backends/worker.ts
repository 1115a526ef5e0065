/**
 * A worker thread of the `'threaded'` backend: the protocol's driver, on this thread's event loop, over
 * a stand-in for the caller's queue ({@link ThreadQueue}). Notifications arrive in batches of bytes
 * (wire.ts); what becomes of each goes back by its handle. A re-send stays here, at the front of this
 * thread's queue, so a binary backtrack keeps its order ahead of newer work; the caller's thread is told
 * of it for its counters and events.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { ConnectionError } from '../errors.js';
import { unshiftBatch, unshiftRing, type Cursor, type DriverQueue, type FailureDetail, type InFlight, type ResendReason } from '../queue.js';
import { ResolvedProxy } from '../proxy.js';
import { ApnsIds } from '../receipt.js';
import { releaseSpareChunks, Ring, spareChunks } from '../ring.js';
import type { BackendEvents, DisconnectReason, DriverSetup } from './backend.js';
import { kernelThreadId } from './busy.js';
import { BatchLedger, BatchReader, DeliveredRanges, handleOf, type WireBatch } from './wire.js';

/** What a worker is started with. */
export interface WorkerInit {
	/** The setup, its proxy taken out: it crosses as `proxy` (see `ResolvedProxy.toWire`). */
	readonly setup: DriverSetup;
	readonly proxy: ReturnType<ResolvedProxy['toWire']> | undefined;
	readonly maxAttempts: number;
	readonly apnsIdPrefix: string | undefined;
	readonly jwt: string | undefined;
}

/** An error as it crosses: its class by name, its message, and its cause's. */
export interface WireError {
	readonly kind: string;
	readonly message: string;
	readonly cause?: { readonly name: string; readonly message: string; readonly code?: string | undefined } | undefined;
}

/** Messages to a worker. */
export type ToWorker =
	| { readonly type: 'batch'; readonly batch: WireBatch; readonly unsent: number; readonly rateLimited: boolean }
	| { readonly type: 'hint'; readonly unsent: number; readonly rateLimited: boolean; readonly confirm: boolean }
	| { readonly type: 'token'; readonly jwt: string }
	| { readonly type: 'close' }
	| { readonly type: 'crash'; readonly how: 'throw' | 'exit' }
	| { readonly type: 'spin'; readonly until: SharedArrayBuffer }
	| { readonly type: 'spareChunks' };

/** A connection-level happening, as it crosses. */
export type WireEvent =
	| readonly ['connected', number]
	| readonly ['disconnected', number, DisconnectReason, WireError | undefined]
	| readonly ['connectError', WireError, number, number]
	| readonly ['identNotFound', number, number, number]
	| readonly ['probeAnswered'];

/** Outcomes and connection happenings since the last report. */
export interface Report {
	readonly type: 'report';
	/** Handles settled delivered, as ranges: pairs of first handle and count (handles count mod 2^32). */
	readonly delivered: Uint32Array;
	readonly failed: Array<{ handle: number; status: number; detail: FailureDetail | undefined }>;
	readonly resent: Array<[count: number, reason: ResendReason]>;
	/** Re-sends written again (the caller's queue counted the first write). */
	readonly rewritten: number;
	readonly events: WireEvent[];
	readonly connectAttempts: number;
	/** Buffers of batches whose notifications are all settled, given back for reuse (transferred). */
	readonly buffers: ArrayBuffer[];
}

/** Messages from a worker. */
export type FromWorker = Report | { readonly type: 'ready'; readonly tid: number | undefined } | { readonly type: 'tokenExpired' } | { readonly type: 'closed' } | { readonly type: 'spareChunks'; readonly count: number };

/** The caller's queue as this thread's driver sees it. */
class ThreadQueue implements DriverQueue {
	readonly maxAttempts: number;
	/** Re-sends, taken before the batches: a backtrack keeps its order ahead of newer work. */
	readonly #front = new Ring();
	/** Batches as they came, read in place. */
	readonly #batches: BatchReader[] = [];
	/** Notifications not yet read from {@link #batches}. */
	#inBatches = 0;
	/** Notifications handed to this thread and not yet settled. */
	#outstanding = 0;
	/** Hints from the caller's thread: what waits there, and whether only the rate limit holds it. */
	mainUnsent = 0;
	mainRateLimited = false;
	/** Handles settled delivered since the last report. */
	readonly #delivered = new DeliveredRanges();
	#failed: Report['failed'] = [];
	#resent: Report['resent'] = [];
	#rewritten = 0;
	readonly #report: () => void;
	readonly #scratch = { tries: 0 } as Cursor;

	/** Batches to give back once settled; none over HTTP/2 (see {@link BatchLedger}). */
	readonly #ledger: BatchLedger | undefined;

	constructor(maxAttempts: number, report: () => void, giveBack: boolean) {
		this.maxAttempts = maxAttempts;
		this.#report = report;
		this.#ledger = giveBack ? new BatchLedger() : undefined;
	}

	get canTake(): boolean {
		return this.#front.size > 0 || this.#inBatches > 0;
	}
	get unsent(): number {
		return this.#front.size + this.#inBatches + this.mainUnsent;
	}
	get rateLimited(): boolean {
		return this.mainRateLimited && !this.canTake;
	}

	add(batch: BatchReader): void {
		this.#ledger?.add(batch);
		this.#batches.push(batch);
		this.#inBatches += batch.remaining;
		this.#outstanding += batch.remaining;
	}

	take(cursor: Cursor): boolean {
		return this.takeRun(cursor, 1) === 1;
	}

	takeRun(cursor: Cursor, max: number): number {
		if (max < 1) return 0;
		const front = this.#front;
		if (front.size > 0) {
			front.read(0, cursor);
			front.dropFront(1);
			this.#rewritten++;
			this.#report();
			return 1;
		}
		if (this.#inBatches === 0) return 0;
		let batch = this.#batches[0]!;
		if (batch.remaining === 0) {
			this.#batches.shift();
			batch = this.#batches[0]!;
		}
		const n = batch.nextRun(cursor, max);
		this.#inBatches -= n;
		return n;
	}

	takeOne(): InFlight | undefined {
		const cursor = this.#scratch;
		return this.take(cursor) ? { message: cursor.message, index: cursor.index, ident: cursor.ident, tries: cursor.tries } : undefined;
	}

	exhausted(n: { readonly tries: number }): boolean {
		return n.tries >= this.maxAttempts;
	}

	settleDelivered(n: InFlight): void {
		this.#settled(handleOf(n.message, n.index));
		this.#afterSettle(1);
	}

	settleDeliveredRing(ring: Ring, count: number): void {
		// By runs: a message's consecutive tokens have consecutive handles.
		for (let i = 0; i < count; ) {
			const m = ring.message(i);
			const index = ring.index(i);
			let j = i + 1;
			while (j < count && ring.message(j) === m && ring.index(j) === index + (j - i)) j++;
			this.#settled(handleOf(m, index), j - i);
			i = j;
		}
		ring.dropFront(count);
		this.#afterSettle(count);
	}

	#settled(h: number, count = 1): void {
		this.#delivered.add(h, count);
		this.#ledger?.settled(h, count);
	}

	settleFailed(n: InFlight, status: number, detail?: FailureDetail): void {
		const h = handleOf(n.message, n.index);
		this.#failed.push({ handle: h, status, detail });
		this.#ledger?.settled(h);
		this.#afterSettle(1);
	}

	#afterSettle(count: number): void {
		this.#outstanding -= count;
		// Nothing held here: the spare ring chunks are a stream's memory, not an idle thread's.
		if (this.#outstanding === 0) releaseSpareChunks();
		this.#report();
	}

	settleFailedRing(ring: Ring, status: number, detail?: FailureDetail): void {
		// Out of the ring before it is settled: the last settlement lets the spare chunks go, this ring's too.
		const n = ring.entry(0);
		ring.dropFront(1);
		this.settleFailed(n, status, detail);
	}

	requeue(batch: readonly InFlight[], reason: ResendReason): void {
		if (batch.length > 0) this.#resentHere(unshiftBatch(this.#front, batch, reason), reason);
	}

	requeueRing(ring: Ring, reason: ResendReason, from = 0): number {
		const count = unshiftRing(this.#front, ring, reason, from);
		if (count > 0) this.#resentHere(count, reason);
		return count;
	}

	#resentHere(count: number, reason: ResendReason): void {
		const last = this.#resent[this.#resent.length - 1];
		if (last !== undefined && last[1] === reason) last[0] += count;
		else this.#resent.push([count, reason]);
		this.#report();
		driver.wake();
	}

	recordElsewhere(): void {
		// Nothing is done elsewhere on what a thread holds.
	}

	/** Take what was settled since the last report. */
	drain(): Pick<Report, 'delivered' | 'failed' | 'resent' | 'rewritten' | 'buffers'> {
		const out = { delivered: this.#delivered.take(), failed: this.#failed, resent: this.#resent, rewritten: this.#rewritten, buffers: this.#ledger?.take() ?? [] };
		this.#failed = [];
		this.#resent = [];
		this.#rewritten = 0;
		return out;
	}
}

function wireError(error: Error | undefined): WireError | undefined {
	if (error === undefined) return undefined;
	const cause = (error as { cause?: unknown }).cause;
	return {
		kind: error.name,
		message: error.message,
		cause: cause instanceof Error ? { name: cause.name, message: cause.message, code: (cause as NodeJS.ErrnoException).code } : undefined,
	};
}

const port = parentPort!;
const init = workerData as WorkerInit;
let events: WireEvent[] = [];
let scheduled = false;
/** Report on the next turn: one message per turn, however much was settled in it. */
function report(): void {
	if (scheduled) return;
	scheduled = true;
	setImmediate(() => {
		scheduled = false;
		postReport();
	});
}

/** Post what was settled and what happened since the last report. */
function postReport(): void {
	const message: Report = { type: 'report', ...queue.drain(), events, connectAttempts: driver.connectAttempts };
	events = [];
	port.postMessage(message, [message.delivered.buffer as ArrayBuffer, ...message.buffers]);
}

// Binary frames are encoded into the driver's own slabs, so a settled batch's bytes are not read again.
const queue = new ThreadQueue(init.maxAttempts, report, init.setup.protocol === 'binary');
let jwt = init.jwt;
let confirm = false;
const backendEvents: BackendEvents = {
	connected: ({ connection }) => (events.push(['connected', connection]), report()),
	disconnected: ({ connection, reason, error }) => (events.push(['disconnected', connection, reason, wireError(error)]), report()),
	connectError: (error: ConnectionError, { attempt, retryInMs }) => (events.push(['connectError', wireError(error)!, attempt, retryInMs]), report()),
	identNotFound: ({ ident, status, resent }) => (events.push(['identNotFound', ident, status, resent]), report()),
	probeAnswered: () => (events.push(['probeAnswered']), report()),
	// Threads are the caller's thread's business.
	threadReady: () => {},
	threadExit: () => {},
	threadsInUse: () => {},
};
// Only this protocol's driver is loaded: a thread's start-up is paid before its first write.
const createDriver = init.setup.protocol === 'http2' ? (await import('../drivers/http2.js')).createHttp2Driver : (await import('../drivers/binary.js')).createBinaryDriver;
const driver = createDriver({
	queue,
	setup: { ...init.setup, tls: { ...init.setup.tls, proxy: init.proxy === undefined ? undefined : ResolvedProxy.fromWire(init.proxy) } },
	events: backendEvents,
	token: jwt === undefined ? undefined : { current: () => jwt!, expired: () => port.postMessage({ type: 'tokenExpired' } satisfies FromWorker) },
	apnsIds: init.apnsIdPrefix === undefined ? undefined : new ApnsIds(init.apnsIdPrefix),
	wantsConfirmation: () => confirm,
});

// Its kernel thread id lets the caller's thread measure how busy it is (busy.ts).
port.postMessage({ type: 'ready', tid: kernelThreadId() } satisfies FromWorker);

port.on('message', (message: ToWorker) => {
	switch (message.type) {
		case 'batch':
			queue.add(new BatchReader(message.batch));
			queue.mainUnsent = message.unsent;
			queue.mainRateLimited = message.rateLimited;
			driver.wake();
			break;
		case 'hint':
			queue.mainUnsent = message.unsent;
			queue.mainRateLimited = message.rateLimited;
			confirm = message.confirm;
			driver.wake();
			break;
		case 'token':
			jwt = message.jwt;
			break;
		case 'close':
			void driver.close().then(() => {
				// Settled before the close (the caller flushed first); report anything left, then say so.
				postReport();
				port.postMessage({ type: 'closed' } satisfies FromWorker);
			});
			break;
		case 'spareChunks':
			// For tests: what this thread's spare list holds.
			port.postMessage({ type: 'spareChunks', count: spareChunks() } satisfies FromWorker);
			break;
		case 'spin': {
			// For tests of a compute-bound thread: busy on a CPU, reading nothing, until the caller sets the flag.
			const flag = new Int32Array(message.until);
			while (Atomics.load(flag, 0) === 0);
			break;
		}
		case 'crash':
			// For tests of a worker that dies: an uncaught error, or process.exit() in it.
			if (message.how === 'exit') process.exit(3);
			setImmediate(() => {
				throw new Error('apns-worker: a worker thread crashed on purpose (test)');
			});
			break;
	}
});
