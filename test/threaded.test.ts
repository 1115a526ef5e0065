/**
 * What only the 'threaded' backend has: notifications crossing as bytes, worker threads that die, and
 * threads that must neither outlive `destroy()` nor keep an idle process alive. (Everything the other
 * backends do, it does too: test/conformance.test.ts runs the whole matrix on it.)
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { generateKeyPairSync } from 'node:crypto';
import { once as onceNode } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, test, type TestContext } from 'node:test';
import { Message, type ApnsManager, type ApnsManagerOptions } from '../src/index.js';
import { BusyMeter, kernelThreadId } from '../src/backends/busy.js';
import { Held, SPREAD_WINDOW_MS, threadShare, ThreadedBackend } from '../src/backends/threaded.js';
import { DEFAULT_OPTIONS } from '../src/options.js';
import type { Cursor, DriverQueue } from '../src/queue.js';
import { Ring } from '../src/ring.js';
import { BatchLedger, BatchReader, BatchWriter, DeliveredRanges, handleOf, type WireBatch, type WireMessage } from '../src/backends/wire.js';
import { startMockApnsHttp2 } from '../src/testing.js';
import { account, certs, gateway, makeTokens, manager, once } from './support/helpers.js';

/** Every notification of `batch`, in order, as a worker reads it. */
function readBatch(batch: WireBatch, each: (message: WireMessage, index: number, ident: number, tries: number) => void): void {
	const reader = new BatchReader(batch);
	const n = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	while (reader.next(n)) each(n.message as WireMessage, n.index, n.ident, n.tries);
}

test('wire: a batch crosses as one buffer; each run reads back as a Message with the same bytes, options and apns-id sequence; handles follow the first, mod 2^32; the writer starts afresh', () => {
	const tokens = makeTokens(6, 40);
	const broadcast = new Message(tokens.slice(0, 4), { aps: { alert: 'b' } }, { expiration: 1_900_000_000, priority: 5, collapseId: 'c1' });
	const single = new Message(tokens[4]!, { aps: { alert: 'x'.repeat(300) } }, { id: '123e4567-e89b-12d3-a456-4266554400a0', pushType: 'voip' });
	const last = new Message(tokens[5]!, { aps: { badge: 2 } });
	broadcast.ordinal = 100;
	single.ordinal = 104;
	last.ordinal = 105;
	const writer = new BatchWriter(2); // smaller than the batch: it grows
	// Tokens 0, 1, 3 of the broadcast (2 was settled elsewhere): two runs of it, then the others.
	const picks: Array<[Message, number]> = [[broadcast, 0], [broadcast, 1], [broadcast, 3], [single, 0], [last, 0]];
	picks.forEach(([m, i], k) => writer.add(m, i, 1000 + k, k + 1));
	const batch = writer.finish(0xffff_fffe); // the handles wrap around within the batch
	assert.equal(writer.size, 0, 'finish() starts afresh');
	assert.ok(batch.buffer instanceof ArrayBuffer);
	const read: Array<{ m: WireMessage; index: number; ident: number; tries: number }> = [];
	readBatch(structuredClone(batch, { transfer: [batch.buffer] }), (m, index, ident, tries) => read.push({ m, index, ident, tries }));
	assert.equal(read.length, 5);
	read.forEach(({ m, index, ident, tries }, k) => {
		const [orig, i] = picks[k]!;
		assert.ok(m instanceof Message);
		assert.equal(m.token(index), orig.token(i), `token ${k}`);
		assert.deepEqual(m.encodedPayload, orig.encodedPayload);
		assert.deepEqual([m.priority, m.pushType, m.expiry, m.collapseId, m.id, m.topic], [orig.priority, orig.pushType, orig.expiry, orig.collapseId, orig.id, orig.topic]);
		assert.equal(m.ordinal + index, orig.ordinal + i, 'the apns-id sequence number survives');
		assert.deepEqual([ident, tries, handleOf(m, index)], [1000 + k, k + 1, (0xffff_fffe + k) % 2 ** 32]);
	});
	assert.deepEqual(new Set(read.map((r) => r.m)).size, 4, 'runs: [0,1], [3], single, last');
	// The next batch owes nothing to the last: token 2 of the broadcast alone (not a continuation of 1).
	writer.add(broadcast, 2, 9, 1);
	const next: Array<[string, number, number]> = [];
	readBatch(writer.finish(3), (m, index, ident) => next.push([m.token(index), ident, handleOf(m, index)]));
	assert.deepEqual(next, [[broadcast.token(2), 9, 3]]);
});

test('wire: a worker reports deliveries as ranges of consecutive handles, across the wrap at 2^32; out of order starts a new range; take() starts afresh', () => {
	const ranges = new DeliveredRanges();
	for (const h of [0xffff_fffe, 0xffff_ffff, 0, 1, 5, 4, 6, 7, 7]) ranges.add(h);
	assert.deepEqual([...ranges.take()], [0xffff_fffe, 4, 5, 1, 4, 1, 6, 2, 7, 1]);
	assert.deepEqual([...ranges.take()], []);
	// Past its first buffer (512 ranges): it grows.
	for (let h = 0; h < 3000; h += 2) ranges.add(h);
	const pairs = ranges.take();
	assert.equal(pairs.length, 3000);
	assert.deepEqual([pairs[0], pairs[1], pairs[2998], pairs[2999]], [0, 1, 2998, 1]);
});

test("wire: a worker gives a batch's buffer back only once every notification of it is settled, in any order, across the wrap at 2^32; the caller reuses one that is large enough", () => {
	const message = new Message(makeTokens(8, 48), { aps: { alert: 'x' } });
	const writer = new BatchWriter(4);
	const batch = (first: number, indexes: number[], pool?: ArrayBuffer[]): BatchReader => {
		for (const i of indexes) writer.add(message, i, i + 1, 0);
		return new BatchReader(writer.finish(first, pool));
	};
	const ledger = new BatchLedger();
	const a = batch(0xffff_fffe, [0, 1, 2]); // handles fffffffe, ffffffff, 0
	const b = batch(1, [3, 4]); // handles 1, 2
	ledger.add(a);
	ledger.add(b);
	for (const h of [2, 0xffff_fffe, 0]) ledger.settled(h); // b's second, then two of a's
	assert.deepEqual(ledger.take(), [], 'nothing yet: each has one unsettled');
	ledger.settled(1);
	assert.deepEqual(ledger.take(), [b.buffer], 'b, the later batch, first: all of it settled');
	ledger.settled(0xffff_ffff);
	ledger.settled(77); // not a handle of any batch: ignored
	assert.deepEqual(ledger.take(), [a.buffer]);
	assert.deepEqual(ledger.take(), []);
	// The caller's next batch reuses a buffer large enough, and reads back right.
	const pool = [a.buffer];
	const c = batch(3, [5, 6], pool);
	assert.equal(c.buffer, a.buffer);
	assert.equal(pool.length, 0);
	const read: Array<[string, number]> = [];
	const n = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	while (c.next(n)) read.push([n.message.token(n.index), handleOf(n.message, n.index)]);
	assert.deepEqual(read, [[message.token(5), 3], [message.token(6), 4]]);
	// One too small is not used.
	const small = [new ArrayBuffer(8)];
	assert.notEqual(batch(5, [7], small).buffer, small[0]);
});

test('wire: runs go in and come out whole — the writer takes a run at once, the reader hands back runs (one message, consecutive idents, one attempt count; never past max); ranges and the ledger take counts, across batches and the wrap', () => {
	const a = new Message(makeTokens(10, 60), { aps: { alert: 'a' } });
	const b = new Message(makeTokens(3, 70), { aps: { alert: 'b' } });
	const writer = new BatchWriter(4);
	writer.add(a, 0, 100, 1, 5); // a 0-4, idents 100-104
	writer.add(a, 5, 200, 1, 2); // a 5-6: the same run of the batch, but idents jump
	writer.add(a, 7, 202, 3); // a 7: another attempt count
	writer.add(a, 8, 203, 1, 2);
	writer.add(b, 0, 205, 1, 3);
	const reader = new BatchReader(writer.finish(0xffff_fffd));
	const runs: Array<[string, number, number, number, number]> = [];
	const n = { message: undefined as unknown as Message, index: 0, ident: 0, tries: 0 };
	for (let k = reader.nextRun(n, 4); k > 0; k = reader.nextRun(n, 4)) runs.push([n.message.token(n.index), n.ident, n.tries, k, handleOf(n.message, n.index)]);
	assert.deepEqual(runs, [
		[a.token(0), 100, 1, 4, 0xffff_fffd], // max 4
		[a.token(4), 104, 1, 1, 1],
		[a.token(5), 200, 1, 2, 2],
		[a.token(7), 202, 3, 1, 4],
		[a.token(8), 203, 1, 2, 5],
		[b.token(0), 205, 1, 3, 7],
	]);
	assert.equal(reader.remaining, 0);
	const ranges = new DeliveredRanges();
	ranges.add(0xffff_fffe, 2);
	ranges.add(0, 3); // follows across the wrap
	ranges.add(9, 1);
	ranges.add(10, 4);
	assert.deepEqual([...ranges.take()], [0xffff_fffe, 5, 9, 5]);
	// The ledger: a range that spans two batches settles both; one past the last of ours is dropped.
	const ledger = new BatchLedger();
	const batch = (first: number, count: number): BatchReader => {
		writer.add(a, 0, 1, 1, count);
		const r = new BatchReader(writer.finish(first));
		ledger.add(r);
		return r;
	};
	const x = batch(0xffff_fffe, 4); // fffffffe … 1
	const y = batch(2, 3); // 2 … 4
	ledger.settled(0xffff_ffff, 4); // ffffffff … 2
	assert.deepEqual(ledger.take(), []);
	ledger.settled(0xffff_fffe);
	assert.deepEqual(ledger.take(), [x.buffer]);
	ledger.settled(3, 5); // 3, 4 of y, then 5 … 7: not ours
	assert.deepEqual(ledger.take(), [y.buffer]);
});

/** As the caller's report does: each range, then what went through `scratch`, settled once. */
function deliver(held: Held, first: number, count: number, queue: DriverQueue, scratch: Ring): void {
	held.delivered(first, count, queue, scratch);
	queue.settleDeliveredRing(scratch, scratch.size);
}

/** A stand-in queue that records what is settled delivered, by the ident each entry was put with. */
function recorder(): { queue: DriverQueue; delivered: number[] } {
	const delivered: number[] = [];
	const queue = {
		settleDeliveredRing(ring: Ring, count: number): void {
			for (let i = 0; i < count; i++) {
				assert.ok(ring.message(i) !== undefined, 'a hole was settled');
				delivered.push(ring.ident(i));
			}
			ring.dropFront(count);
		},
	} as unknown as DriverQueue;
	return { queue, delivered };
}

const message = Message.fromAps([Buffer.alloc(32, 1).toString('hex')], { alert: 'x' });
const cursor = (ident: number): Cursor => ({ message, index: 0, ident, tries: 1 });

/** Model-based: random puts (runs of 1 to 4), delivered ranges (before the front, overlapping, past the end, repeated), failures and takeAll, from a first handle near 2^32. */
for (const [start, limit] of [[0, 1 << 20], [0xffff_fff0, 1 << 20], [0xffff_ffff, 1 << 20], [0, 16], [0xffff_fff8, 16]] as const) {
	test(`Held settles each handle at most once, whatever the order (first handle ${start}, ring limit ${limit})`, () => {
		let seed = start + 7;
		const rnd = (n: number): number => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) % n);
		for (let round = 0; round < 200; round++) {
			const held = new Held(limit, start);
			const scratch = new Ring();
			const { queue, delivered } = recorder();
			const live = new Map<number, number>(); // handle -> ident
			const handedOver: number[] = []; // handles, in order
			let ident = 0;
			let settledCount = 0;
			for (let step = 0; step < 300; step++) {
				const op = rnd(10);
				if (op < 4) {
					// Runs of 1 to 4, as the caller takes them (idents in step with handles).
					for (let k = rnd(20); k > 0; ) {
						const n = Math.min(k, 1 + rnd(4));
						const h = held.put(cursor(ident + 1), n);
						assert.equal(h, (start + ident) >>> 0);
						for (let j = 0; j < n; j++) {
							live.set((h + j) >>> 0, ident + 1 + j);
							handedOver.push((h + j) >>> 0);
						}
						ident += n;
						k -= n;
					}
				} else if (op < 8 && handedOver.length > 0) {
					// A range from anywhere around what was handed over (before the front, past the end too).
					const from = Math.max(0, rnd(handedOver.length + 4) - 2);
					const first = (start + from) >>> 0;
					const count = 1 + rnd(12);
					const before = delivered.length;
					deliver(held, first, count, queue, scratch);
					const expect: number[] = [];
					for (let k = 0; k < count; k++) {
						const h = (first + k) >>> 0;
						const id = live.get(h);
						if (id !== undefined) {
							expect.push(id);
							live.delete(h);
						}
					}
					assert.deepEqual(delivered.slice(before).sort((a, b) => a - b), expect.sort((a, b) => a - b));
					settledCount += expect.length;
					assert.equal(scratch.size, 0);
				} else if (op < 9 && handedOver.length > 0) {
					const h = handedOver[rnd(handedOver.length)]!;
					const into = cursor(0);
					const was = live.get(h);
					assert.equal(held.take(h, into), was !== undefined);
					if (was !== undefined) {
						assert.equal(into.ident, was);
						live.delete(h);
						settledCount++;
					}
				} else if (rnd(10) === 0) {
					const all = held.takeAll().map((n) => n.ident);
					assert.deepEqual(all, [...live.values()].sort((a, b) => a - b), 'takeAll: what is held, in hand-over order');
					settledCount += all.length;
					live.clear();
				}
				assert.equal(held.size, live.size, 'size is what is held');
			}
			assert.equal(new Set(delivered).size, delivered.length, 'nothing delivered twice');
			assert.equal(settledCount + live.size, ident);
		}
	});
}

test('Held: ranges across the wrap at 2^32, straight from the ring and out of order', () => {
	const held = new Held(1 << 20, 0xffff_fffe);
	const scratch = new Ring();
	const { queue, delivered } = recorder();
	for (let i = 1; i <= 6; i++) held.put(cursor(i)); // handles fffffffe, ffffffff, 0, 1, 2, 3
	deliver(held, 0, 2, queue, scratch); // 0, 1: out of order, through the scratch ring
	assert.deepEqual(delivered, [3, 4]);
	deliver(held, 0xffff_fffe, 5, queue, scratch); // fffffffe … 2: 0 and 1 already settled
	assert.deepEqual(delivered, [3, 4, 1, 2, 5]);
	assert.equal(held.size, 1);
	deliver(held, 3, 1, queue, scratch); // the front now, no hole: straight from the ring
	assert.deepEqual(delivered, [3, 4, 1, 2, 5, 6]);
	assert.equal(held.size, 0);
	assert.equal(held.put(cursor(7)), 4);
});

test('Held: one notification held a long time (an HTTP/2 retry waiting 60 s) does not keep the ring spanning everything handed over since; it is settled when its outcome comes', () => {
	const limit = 4096;
	const held = new Held(limit);
	const scratch = new Ring();
	const { queue, delivered } = recorder();
	held.put(cursor(0)); // handle 0 stays held
	let next = 1;
	let widest = 0;
	for (let round = 0; round < 1000; round++) {
		const first = next;
		for (let k = 0; k < 1000; k++, next++) held.put(cursor(next));
		deliver(held, first, 1000, queue, scratch);
		widest = Math.max(widest, held.span);
		assert.equal(held.size, 1);
	}
	assert.ok(widest <= limit + 1000, `the ring spanned ${widest} entries, limit ${limit}`);
	assert.equal(held.span, 0, 'every hole behind it was dropped');
	assert.equal(delivered.length, 1_000_000);
	deliver(held, 0, 1, queue, scratch); // its outcome, at last
	assert.deepEqual([held.size, delivered.length, delivered.at(-1)], [0, 1_000_001, 0]);
});

const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const TOKEN_AUTH = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'KEY1234567', teamId: 'TEAM765432' };

/** A threaded manager whose backend the test can reach (to make a thread die). */
function threaded(t: TestContext, mock: { host: string; port: number }, protocol: 'binary' | 'http2', options: Partial<ApnsManagerOptions> = {}): { m: ApnsManager; backend: () => ThreadedBackend } {
	let backend: ThreadedBackend | undefined;
	const factory = (ctx: ConstructorParameters<typeof ThreadedBackend>[0]) => (backend = new ThreadedBackend(ctx));
	const auth = protocol === 'http2' ? { cert: undefined, key: undefined, token: TOKEN_AUTH, topic: 'com.example.app' } : {};
	const m = manager(t, mock, { protocol, backend: factory, ...auth, ...options });
	return { m, backend: () => backend! };
}

async function startMock(t: TestContext, protocol: 'binary' | 'http2'): Promise<{ host: string; port: number; counts: ReadonlyMap<string, number> }> {
	if (protocol === 'binary') return gateway(t);
	const c = certs();
	const mock = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, keys: [{ keyId: TOKEN_AUTH.keyId, teamId: TOKEN_AUTH.teamId, publicKey: p8.publicKey }], topics: ['com.example.app'], record: false });
	t.after(() => mock.close());
	return mock;
}

for (const protocol of ['binary', 'http2'] as const) {
	describe(`a worker thread that dies (${protocol})`, () => {
		for (const how of ['throw', 'exit'] as const) {
			test(`${how === 'throw' ? 'an uncaught error' : 'process.exit()'} mid-send: replaced, what it held re-sent in doubt, 0 lost`, async (t) => {
				const mock = await startMock(t, protocol);
				const { m, backend } = threaded(t, mock, protocol);
				const tokens = makeTokens(20_000, protocol === 'binary' ? 41 : 42);
				const exits: Array<{ thread: number; resent: number; error: Error }> = [];
				m.on('threadExit', (info) => exits.push(info));
				const ready: number[] = [];
				m.on('threadReady', ({ thread, startMs }) => {
					assert.ok(Number.isInteger(startMs) && startMs >= 0, `startMs ${startMs}`);
					ready.push(thread);
				});
				let workerLost = 0;
				m.on('resent', ({ count, reason }) => reason === 'workerLost' && (workerLost += count));
				const killed = once(m, 'delivered').then(() => backend().crash(1, how)); // dies while it holds the rest
				const receipt = m.sendAps(tokens, { alert: 'crash' });
				await killed;
				await m.flushMessages();
				const result = await receipt.settled;
				assert.equal(exits.length, 1, 'one thread died');
				assert.equal(exits[0]!.thread, 1);
				assert.ok(exits[0]!.resent > 0, 'it held notifications');
				assert.match(exits[0]!.error.message, how === 'throw' ? /crashed on purpose/ : /code 3/);
				assert.equal(workerLost, exits[0]!.resent, "what it held went back, as 'workerLost'");
				assert.equal(backend().threads, 1, 'a new thread took its place');
				assert.deepEqual(ready, [1, 1], 'threadReady: the first thread, then its replacement');
				const counts = mock.counts;
				let lost = 0;
				let duplicated = 0;
				for (const token of tokens) {
					const n = counts.get(token) ?? 0;
					if (n === 0) lost++;
					else duplicated += n - 1;
				}
				assert.equal(lost, 0);
				assert.ok(duplicated <= m.stats.inDoubt, `${duplicated} duplicated, ${m.stats.inDoubt} in doubt`);
				assert.deepEqual([result.sent.length, result.failed.length, result.dropped.length], [tokens.length, 0, 0]);
				assert.deepEqual([m.stats.delivered, m.pending], [tokens.length, 0]);
			});
		}
	});
}

test('threads that keep dying before anything is settled are replaced after a backoff; one that settles something resets it', async (t) => {
	// Answers (probe answers included) come 1 s late, so a thread told to die on connecting has settled nothing.
	const gw = await gateway(t, { errorDelayMs: 1000 });
	const { m, backend } = threaded(t, gw, 'binary', { reconnect: { initialDelayMs: 40, maxDelayMs: 80, jitter: 0 } });
	const exits: Array<{ resent: number; retryInMs: number }> = [];
	m.on('threadExit', ({ resent, retryInMs }) => exits.push({ resent, retryInMs }));
	let crashes = 0;
	m.on('connected', () => {
		if (crashes < 3) {
			crashes++;
			backend().crash(1, 'exit');
		}
	});
	const receipt = m.sendAps(makeTokens(10, 43), { alert: 'x' });
	const result = await receipt.settled; // the fourth thread lives and delivers
	assert.deepEqual(exits.map((e) => e.retryInMs), [40, 80, 80], 'backed off: initialDelayMs, then doubling up to maxDelayMs');
	assert.deepEqual([result.sent.length, result.dropped.length], [10, 0]);
	assert.equal(gw.counts.size, 10);
	// It settled something: the next death is replaced at once.
	const second = m.sendAps(makeTokens(10, 45), { alert: 'y' });
	await once(m, 'connected');
	backend().crash(1, 'exit');
	await second.settled;
	assert.equal(exits.at(-1)!.retryInMs, 0);
});

test('threadReady: each thread says so once it is up (threads: 2), logged at info; work sent before then waits and goes through', async (t) => {
	const gw = await gateway(t);
	const logged: Array<{ event?: string; thread?: number; startMs?: number }> = [];
	const logger = { debug: () => {}, info: (fields: object) => void logged.push(fields), warn: () => {}, error: () => {} };
	const m = manager(t, gw, { protocol: 'binary', backend: 'threaded', threads: 2, logger });
	const tokens = makeTokens(100, 46);
	const receipt = m.sendAps(tokens, { alert: 'early' }); // before any thread is up
	const ready: Array<{ thread: number; startMs: number }> = [];
	await new Promise<void>((resolve) => m.on('threadReady', (info) => void (ready.push(info) === 2 && resolve())));
	assert.deepEqual(ready.map((r) => r.thread).sort(), [1, 2]);
	assert.ok(ready.every((r) => Number.isInteger(r.startMs) && r.startMs >= 0));
	assert.deepEqual(logged.filter((f) => f.event === 'threadReady').map((f) => [f.thread, f.startMs]).sort(), ready.map((r) => [r.thread, r.startMs]).sort());
	const result = await receipt.settled;
	assert.deepEqual([result.sent.length, result.dropped.length], [100, 0]);
	assert.equal(gw.counts.size, 100);
});

test('busy meter: on Linux a thread knows its kernel id (its CPU time is then the kernel\'s count, /proc/self/task/TID/schedstat)', { skip: !existsSync('/proc/thread-self') && 'no /proc/thread-self' }, () => {
	const tid = kernelThreadId();
	assert.ok(Number.isInteger(tid) && tid! > 0, String(tid));
	assert.equal(tid, process.pid, 'the main thread\'s id is the process id');
});

test('busy meter: without a kernel id, the event-loop utilization over each window; no reading before the thread is up or within a window', () => {
	let utilization = 0.25;
	// A snapshot without arguments; the utilization between two snapshots with them.
	const fake = { performance: { eventLoopUtilization: (a?: unknown, b?: unknown) => ({ idle: 0, active: 0, utilization: a === undefined || b === undefined ? 0.5 : utilization }) } };
	const meter = new BusyMeter(fake as never, 0);
	assert.equal(meter.read(), undefined, 'not up');
	meter.start(undefined);
	assert.equal(meter.read(), 0.25);
	utilization = 2;
	assert.equal(meter.read(), 1, 'at most a whole core');
	utilization = Number.NaN;
	assert.equal(meter.read(), undefined, 'NaN is no reading');
	const slow = new BusyMeter(fake as never, 1e9);
	slow.start(undefined);
	assert.equal(slow.read(), undefined, 'within its window');
});

/**
 * Every thread reads as busy as `level()` says, whatever this machine is doing meanwhile (a real thread
 * may read compute-bound for a window on a loaded machine; the spinning test reads real threads).
 */
function stubBusy(t: TestContext, level: () => number): void {
	const read = Object.getOwnPropertyDescriptor(BusyMeter.prototype, 'read')!;
	Object.defineProperty(BusyMeter.prototype, 'read', { ...read, value: level });
	t.after(() => Object.defineProperty(BusyMeter.prototype, 'read', read));
}

describe('threads: 2, minThreads 1 (the default): the second thread takes work only while the first is compute-bound', () => {
	test('the first keeps up: the second takes none of what waits (no connection, no threadsInUse)', async (t) => {
		stubBusy(t, () => 0.5);
		const mock = await startMock(t, 'http2');
		const m = manager(t, mock, { protocol: 'http2', cert: undefined, key: undefined, token: TOKEN_AUTH, topic: 'com.example.app', backend: (ctx) => new ThreadedBackend({ ...ctx, threads: 2 }) });
		const connections: number[] = [];
		m.on('connected', ({ connection }) => connections.push(connection));
		const changes: unknown[] = [];
		m.on('threadsInUse', (info) => changes.push(info));
		// More than a thread's credit (8,192 for HTTP/2 here): were the second taking work, it would get the rest.
		const tokens = makeTokens(10_000, 49);
		await m.sendAps(tokens, { alert: 'x' }).settled;
		assert.ok(tokens.every((k) => mock.counts.get(k) === 1), 'each delivered once');
		assert.ok(connections.length > 0);
		// Thread k of 2 numbers its connections k, k + 2, …: thread 2's are even.
		assert.deepEqual(connections.filter((c) => c % 2 === 0), [], `connections ${connections.join(', ')}`);
		assert.deepEqual(changes, []);
	});

	test('the first is compute-bound: the second is put to work (threadsInUse, logged), everything is delivered once; idle again, one thread takes work', { timeout: 120_000 }, async (t) => {
		const mock = await startMock(t, 'http2');
		let backend: ThreadedBackend | undefined;
		const logged: Array<{ event?: string; count?: number }> = [];
		const logger = { debug: () => {}, info: (fields: object) => void logged.push(fields), warn: () => {}, error: () => {} };
		const m = manager(t, mock, { protocol: 'http2', cert: undefined, key: undefined, token: TOKEN_AUTH, topic: 'com.example.app', logger, backend: (ctx) => (backend = new ThreadedBackend({ ...ctx, threads: 2 })) });
		await new Promise<void>((resolve) => {
			let ready = 0;
			m.on('threadReady', () => void (++ready === 2 && resolve()));
		});
		const changes: Array<{ inUse: number; busy: Array<number | undefined> }> = [];
		m.on('threadsInUse', (info) => changes.push(info));
		const release = backend!.spin(1);
		t.after(release);
		// More than a thread's credit (8,192 for HTTP/2 here): the rest waits for a thread that takes work.
		const tokens = makeTokens(10_000, 50);
		m.sendAps(tokens, { alert: 'x' });
		// Thread 1 reads nothing while it spins: what is delivered now went through thread 2.
		const first = await new Promise<number>((resolve) => m.once('delivered', ({ count }) => resolve(count)));
		assert.ok(first > 0);
		assert.equal(changes[0]?.inUse, 2);
		const idle = changes[0]!.busy[1];
		assert.ok(idle !== undefined && idle < 0.5, `thread 2, idle, read ${idle} busy`);
		assert.ok(logged.some((f) => f.event === 'threadsInUse' && f.count === 2));
		release();
		await m.flushMessages();
		const lost = tokens.filter((k) => (mock.counts.get(k) ?? 0) === 0).length;
		const duplicated = tokens.reduce((n, k) => n + Math.max(0, (mock.counts.get(k) ?? 0) - 1), 0);
		assert.deepEqual({ lost, duplicated }, { lost: 0, duplicated: 0 });
		// Idle for a window: one thread is enough again, by now or at the next hand-out. (Read as idle from
		// here: thread 1 may have read compute-bound again while it sent what it held, and stepped back up.)
		stubBusy(t, () => 0);
		await new Promise((resolve) => setTimeout(resolve, SPREAD_WINDOW_MS + 20));
		const more = makeTokens(1000, 51);
		await m.sendAps(more, { alert: 'y' }).settled;
		assert.equal(changes.at(-1)?.inUse, 1, JSON.stringify(changes));
		assert.ok(more.every((k) => mock.counts.get(k) === 1));
	});

	test('a thread that stops taking work settles what it holds at once, though the queue is still rate-limited (binary: it probes)', async (t) => {
		let level = 1; // every thread compute-bound: the second takes work after the first window
		stubBusy(t, () => level);
		const gw = await gateway(t);
		// No window probes (confirmEvery 0): a thread confirms only when it runs out of work and the rate
		// limit is not what holds the work back. 20,000 at 5,000 a second: the queue stays rate-limited ~4 s.
		const m = manager(t, gw, { protocol: 'binary', confirmEvery: 0, rateLimit: { limit: 500, intervalMs: 100 }, backend: (ctx) => new ThreadedBackend({ ...ctx, threads: 2 }) });
		const changes: number[] = [];
		m.on('threadsInUse', ({ inUse }) => changes.push(inUse));
		const tokens = makeTokens(20_000, 52);
		m.sendAps(tokens, { alert: 'x' });
		// Thread 2 numbers its connections 2, 4, …: it took work.
		await new Promise<void>((resolve) => m.on('connected', ({ connection }) => void (connection % 2 === 0 && resolve())));
		level = 0; // idle: the next window leaves one thread working
		const received = await new Promise<number>((resolve) => m.on('disconnected', ({ connection, reason }) => void (connection % 2 === 0 && reason === 'probeAnswered' && resolve(gw.counts.size))));
		assert.deepEqual(changes, [2, 1]);
		// Told "rate-limited" like a working thread, it would wait for a grant that never comes to it, and
		// confirm only once the queue is empty (all 20,000 received by then).
		assert.ok(received < 15_000, `thread 2 confirmed what it held with ${received} received`);
		await m.flushMessages();
		assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	});
});

test('destroy() terminates every thread and drops what they held, each token once', async (t) => {
	const gw = await gateway(t, { readPauseMs: 50 });
	const { m, backend } = threaded(t, gw, 'binary');
	const receipt = m.sendAps(makeTokens(5000, 44), { alert: 'x'.repeat(1000) });
	await once(m, 'connected');
	const workers = backend().workers;
	assert.equal(workers.length, 1);
	const exited = onceNode(workers[0]!, 'exit');
	m.destroy();
	await exited;
	const result = await receipt.settled;
	assert.equal(result.sent.length + result.dropped.length, 5000);
	assert.ok(result.dropped.length > 0);
	assert.equal(new Set(result.dropped).size, result.dropped.length, 'each dropped once');
	assert.equal(backend().threads, 0);
});

test('destroy() with more held than a call can take as spread arguments (200,000 in one thread): each token dropped or sent once', async (t) => {
	const gw = await gateway(t, { readPauseMs: 50 });
	const m = manager(t, gw, { protocol: 'binary', backend: 'threaded' });
	const tokens = makeTokens(200_000, 47);
	const receipt = m.sendAps(tokens, { alert: 'x' });
	await once(m, 'connected'); // everything was handed to the thread at once (its credit is 262,144)
	m.destroy();
	const result = await receipt.settled;
	assert.equal(result.sent.length + result.dropped.length, tokens.length);
	assert.ok(result.dropped.length > 125_000, `${result.dropped.length} dropped`);
	assert.equal(new Set(result.dropped).size, result.dropped.length, 'each dropped once');
});

test('the connection ceilings are the manager\'s, not each thread\'s: threads share maxConnectsPerSecond and stretch minConfirmIntervalMs between them', async (t) => {
	assert.deepEqual(
		(({ maxConnectsPerSecond, minConfirmIntervalMs }) => ({ maxConnectsPerSecond, minConfirmIntervalMs }))(threadShare({ ...DEFAULT_OPTIONS, maxConnectsPerSecond: 20, minConfirmIntervalMs: 50 }, 4)),
		{ maxConnectsPerSecond: 5, minConfirmIntervalMs: 200 },
	);
	const off = threadShare({ ...DEFAULT_OPTIONS, maxConnectsPerSecond: 0, minConfirmIntervalMs: 0 }, 2);
	assert.deepEqual([off.maxConnectsPerSecond, off.minConfirmIntervalMs], [0, 0], 'off stays off');
	// Both threads busy (more than one thread's credit, 262,144, waits), each wanting a probe — a new
	// connection — every 10 notifications. The manager may open 2 a second, in bursts of 6, plus the first
	// active and spare connection of each thread; per thread, twice that would be allowed.
	const gw = await gateway(t);
	const tokens = makeTokens(300_000, 48);
	const rate = 2;
	const t0 = performance.now();
	const m = manager(t, gw, { protocol: 'binary', backend: 'threaded', threads: 2, minThreads: 2, confirmEvery: 10, minConfirmIntervalMs: 0, maxConnectsPerSecond: rate });
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages();
	const seconds = (performance.now() - t0) / 1000;
	assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	// A bound from the ceiling's own definition, over the time the buckets have existed (a slower run only raises it).
	const bound = 2 * 2 + 3 * rate + Math.ceil(rate * seconds);
	assert.ok(gw.connectionsAccepted <= bound, `${gw.connectionsAccepted} connections in ${seconds.toFixed(1)} s, at most ${bound}`);
	assert.ok(m.stats.probesAnswered >= 2, 'both threads probed');
	t.diagnostic(`${gw.connectionsAccepted} connections in ${seconds.toFixed(1)} s, at most ${bound}`);
});

test('a worker thread lets its spare ring chunks go once it holds nothing (binary: its finished connections gave it their sent-logs\' chunks)', async (t) => {
	const mock = await startMock(t, 'binary');
	const { m, backend } = threaded(t, mock, 'binary', { confirmEvery: 5000, minConfirmIntervalMs: 0 });
	let peak = 0;
	let asking = Promise.resolve();
	m.on('disconnected', () => {
		asking = asking.then(async () => void (peak = Math.max(peak, await backend().spareChunks(1)))).catch(() => {});
	});
	const tokens = makeTokens(40_000, 43);
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages();
	await asking;
	assert.ok(tokens.every((tk) => mock.counts.get(tk) === 1), 'each delivered once');
	assert.ok(peak > 0, 'finished connections gave their chunks to the spare list while the stream went on');
	assert.equal(await backend().spareChunks(1), 0, 'idle: nothing kept');
	// A thread that exits before it answers fails the question rather than leaving it hanging.
	backend().crash(1, 'exit');
	const asked = backend().spareChunks(1); // posted after the crash: the thread exits before it reads the question
	await assert.rejects(asked, /thread 1 exited/);
});

test('a worker thread lets its spare ring chunks go when the last to settle is a rejection (status 8 for the last token)', async (t) => {
	const tokens = makeTokens(20_000, 45);
	const gw = await gateway(t, { rejectTokens: { [tokens[tokens.length - 1]!]: 8 } });
	const { m, backend } = threaded(t, gw, 'binary');
	const failed: string[] = [];
	m.on('deliveryError', (e) => failed.push(e.token));
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages();
	assert.deepEqual(failed, [tokens[tokens.length - 1]]);
	assert.deepEqual(account(gw, tokens, new Set(failed)), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	assert.equal(await backend().spareChunks(1), 0, 'idle: nothing kept');
});

test('an idle threaded manager does not keep the process alive (its threads are unref’d while they hold nothing)', async () => {
	const index = fileURLToPath(new URL('../src/index.js', import.meta.url));
	const testing = fileURLToPath(new URL('../src/testing.js', import.meta.url));
	const script = `
		const { ApnsManager } = await import(${JSON.stringify(index)});
		const { makeTestCertificates } = await import(${JSON.stringify(testing)});
		const c = makeTestCertificates();
		new ApnsManager({ protocol: 'binary', backend: 'threaded', threads: 2, cert: c.client.cert, key: c.client.key, gateway: { host: '127.0.0.1', port: 9 } });
		console.log('made');`;
	const child = execFile(process.execPath, ['--input-type=module', '-e', script]);
	let out = '';
	child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
	const timer = setTimeout(() => child.kill(), 20_000); // a bound, not a measurement: a hang is killed and fails below
	const [code] = (await onceNode(child, 'exit')) as [number | null];
	clearTimeout(timer);
	assert.equal(out.trim(), 'made');
	assert.equal(code, 0, 'the process exited by itself');
});
