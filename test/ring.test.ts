/**
 * The ring every sent-log, re-send list and held set is built on, against a plain array of entries:
 * random operations across chunk boundaries (a chunk is 4,096 slots), and its chunks going back to the
 * spare list and coming out again — and the owners that let the spare list go once idle.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { Message } from '../src/message.js';
import { releaseSpareChunks, Ring, spareChunks } from '../src/ring.js';
import { startMockApnsHttp2 } from '../src/testing.js';
import { certs, gateway, makeTokens, manager } from './support/helpers.js';

interface Entry {
	message: Message | undefined;
	index: number;
	ident: number;
	tries: number;
}

const messages = [0, 1, 2].map((i) => new Message([i.toString(16).padStart(64, '0')], { aps: { alert: `m${i}` } }));

/** A small deterministic generator (xorshift32), so a failure replays. */
function random(seed: number): (n: number) => number {
	let x = seed >>> 0 || 1;
	return (n) => {
		x ^= x << 13;
		x >>>= 0;
		x ^= x >>> 17;
		x ^= x << 5;
		x >>>= 0;
		return x % n;
	};
}

function assertSame(ring: Ring, model: Entry[], step: string): void {
	assert.equal(ring.size, model.length, `${step}: size`);
	// Every entry at the chunk edges, and a sample elsewhere (all of them would make the test quadratic).
	const positions = new Set<number>([0, model.length - 1]);
	for (let i = 4095; i < model.length; i += 4096) for (const d of [-1, 0, 1]) positions.add(i + d);
	for (let i = 0; i < model.length; i += 97) positions.add(i);
	for (const i of positions) {
		if (i < 0 || i >= model.length) continue;
		const e = model[i]!;
		assert.equal(ring.isHole(i), e.message === undefined, `${step}: hole ${i}`);
		if (e.message === undefined) continue;
		assert.deepEqual(ring.entry(i), { message: e.message, index: e.index, ident: e.ident, tries: e.tries }, `${step}: entry ${i}`);
	}
}

test('Ring: random pushes, runs, unshifts, drops, holes and attempt counts agree with an array, across chunk edges', () => {
	for (const seed of [1, 7, 42, 2024]) {
		const r = random(seed);
		const ring = new Ring();
		const model: Entry[] = [];
		let ident = 1;
		for (let step = 0; step < 600; step++) {
			const op = r(100);
			const message = messages[r(3)]!;
			const label = `seed ${seed} step ${step}`;
			if (op < 30) {
				// A run, sometimes longer than a chunk.
				const count = r(10) === 0 ? 1 + r(9000) : 1 + r(700);
				const index = r(1000);
				const tries = 1 + r(3);
				ring.pushRun(message, index, ident, tries, count);
				for (let k = 0; k < count; k++) model.push({ message, index: index + k, ident: ident + k, tries });
				ident += count;
			} else if (op < 45) {
				ring.push(message, r(1000), ident, 1);
				model.push({ message, index: ring.index(ring.size - 1), ident, tries: 1 });
				ident++;
			} else if (op < 55) {
				const n = 1 + r(5);
				for (let k = 0; k < n; k++) {
					const index = r(1000);
					ring.unshift(message, index, ident, 2);
					model.unshift({ message, index, ident, tries: 2 });
					ident++;
				}
			} else if (op < 70 && model.length > 0) {
				const n = r(10) === 0 ? model.length : r(Math.min(model.length, 6000) + 1);
				ring.dropFront(n);
				model.splice(0, n);
			} else if (op < 78 && model.length > 0) {
				const n = r(Math.min(model.length, 5000) + 1);
				ring.dropBack(n);
				model.splice(model.length - n, n);
			} else if (op < 88 && model.length > 0) {
				const i = r(model.length);
				ring.clear(i);
				model[i]!.message = undefined;
			} else if (op < 95 && model.length > 0) {
				const i = r(model.length);
				ring.bumpTries(i);
				model[i]!.tries = Math.min(255, model[i]!.tries + 1);
			} else if (model.length > 0) {
				const i = r(model.length);
				if (model[i]!.message !== undefined) assert.equal(ring.lastIndexOfIdent(model[i]!.ident), i, `${label}: lastIndexOfIdent`);
				assert.equal(ring.lastIndexOfIdent(0), -1, `${label}: an ident never pushed`);
			}
			assertSame(ring, model, label);
		}
		ring.dropFront(ring.size);
	}
});

test('Ring: attempt counts stop at 255; read fills a cursor in place', () => {
	const ring = new Ring();
	ring.push(messages[0]!, 3, 9, 254);
	ring.bumpTries(0);
	ring.bumpTries(0);
	assert.equal(ring.tries(0), 255);
	const cursor = { message: messages[1]!, index: 0, ident: 0, tries: 0 };
	ring.read(0, cursor);
	assert.deepEqual(cursor, { message: messages[0], index: 3, ident: 9, tries: 255 });
});

test('Ring: emptied chunks go to the spare list and the next rings take them; dropped slots keep no message; releaseSpareChunks lets them go', () => {
	releaseSpareChunks();
	const a = new Ring();
	a.pushRun(messages[0]!, 0, 1, 1, 3 * 4096 + 10);
	assert.equal(spareChunks(), 0);
	a.dropFront(2 * 4096);
	assert.equal(spareChunks(), 2, 'the two chunks the front left');
	a.dropBack(10);
	assert.equal(spareChunks(), 3, 'the chunk past the last entry');
	const b = new Ring();
	b.pushRun(messages[1]!, 0, 1, 1, 4096);
	assert.equal(spareChunks(), 2, 'b took a spare chunk');
	// A reused chunk reads as b wrote it, and a slot past its entries is empty, not a's old message.
	assert.equal(b.message(4095), messages[1]);
	b.dropBack(1);
	assert.equal(b.isHole(4095 - 1), false);
	b.push(messages[2]!, 0, 1, 1);
	assert.equal(b.message(4095), messages[2]);
	a.dropFront(a.size);
	assert.equal(spareChunks(), 3, 'emptied: its last chunk went back too');
	releaseSpareChunks();
	assert.equal(spareChunks(), 0);
});

test('Ring: an emptied ring holds no chunk (an idle manager\'s rings keep no memory); its next push takes back the one it gave, so a long-lived ring does not walk through memory', () => {
	releaseSpareChunks();
	const ring = new Ring();
	for (let round = 0; round < 50; round++) {
		ring.pushRun(messages[0]!, 0, 1, 1, 1000);
		assert.equal(spareChunks(), 0, 'the chunk given back, taken again');
		ring.dropFront(1000);
		assert.equal(spareChunks(), 1, 'emptied from the front: its chunk went back');
	}
	ring.pushRun(messages[0]!, 0, 1, 1, 5000);
	ring.dropFront(5000);
	assert.equal(spareChunks(), 2, 'both chunks went back');
	ring.pushRun(messages[0]!, 0, 1, 1, 10);
	ring.dropFront(3);
	ring.dropBack(7);
	assert.equal(spareChunks(), 2, 'emptied from the back, its front moved on: the same');
	ring.push(messages[1]!, 5, 6, 7);
	assert.deepEqual([ring.size, ring.message(0), ring.index(0), ring.ident(0), ring.tries(0)], [1, messages[1], 5, 6, 7]);
	ring.dropBack(1);
	ring.unshift(messages[0]!, 0, 1, 1);
	assert.equal(spareChunks(), 1);
	assert.equal(ring.message(0), messages[0]);
	ring.dropFront(1);
	assert.equal(spareChunks(), 2);
	releaseSpareChunks();
});

test('Ring: a dropped entry keeps its message no longer (a sent-log of a million must not pin a broadcast)', async () => {
	setFlagsFromString('--expose-gc');
	const gc = runInNewContext('gc') as () => void;
	const ring = new Ring();
	const refs: Array<WeakRef<Message>> = [];
	const keep = new Message(['f'.repeat(64)], { aps: { alert: 'kept' } });
	ring.pushRun(keep, 0, 1, 1, 10);
	// Made in a function of their own, so that no variable of this one still points at the last.
	const pushDropped = (i: number): void => {
		const m = new Message([i.toString(16).padStart(64, '0')], { aps: { alert: `dropped ${i}` } });
		refs.push(new WeakRef(m));
		ring.pushRun(m, 0, 100 + i * 5000, 1, 5000);
	};
	// Across chunk edges: the front's drop, the back's drop and a hole each clear their slots.
	for (let i = 0; i < 3; i++) pushDropped(i);
	ring.dropBack(5000); // the third
	ring.clear(10); // the first one's first entry…
	ring.dropFront(10 + 5000); // …and all of it, with the kept message's
	ring.dropFront(5000); // the second
	assert.equal(ring.size, 0);
	ring.pushRun(keep, 0, 1, 1, 1);
	await new Promise((resolve) => setImmediate(resolve));
	gc();
	assert.deepEqual(
		refs.map((r) => r.deref() === undefined),
		[true, true, true],
	);
	assert.equal(ring.message(0), keep);
});

test('a binary manager: finished connections give their chunks to the next ones, and once idle the spare list is let go', async (t) => {
	releaseSpareChunks();
	const gw = await gateway(t);
	const m = manager(t, gw, { confirmEvery: 5000, minConfirmIntervalMs: 0 });
	let peak = 0;
	m.on('disconnected', () => (peak = Math.max(peak, spareChunks())));
	m.sendAps(makeTokens(40_000, 60), { alert: 'x' });
	await m.flushMessages();
	await m.close();
	assert.equal(gw.acceptedCount, 40_000);
	assert.ok(peak > 0, 'a finished connection gave its chunks back while the stream went on');
	assert.equal(spareChunks(), 0, 'idle: nothing kept');
});

test('a threaded manager: once no thread holds anything, the caller lets its spare chunks go (what it held spanned ten chunks)', async (t) => {
	releaseSpareChunks();
	const gw = await gateway(t);
	const m = manager(t, gw, { backend: 'threaded' });
	m.sendAps(makeTokens(40_000, 61), { alert: 'x' });
	await m.flushMessages();
	assert.equal(gw.acceptedCount, 40_000);
	assert.equal(spareChunks(), 0);
});

test('an HTTP/2 manager: its queue\'s re-sends (every third request answered 503) give their chunk back each time they run out, and once idle the spare list is let go', async (t) => {
	releaseSpareChunks();
	const c = certs();
	const server = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, topics: ['com.example.app'], faults: { statusEvery: { every: 3, status: 503, retryAfterSeconds: 0 } } });
	t.after(() => server.close());
	const m = manager(t, server, { protocol: 'http2', maxAttempts: 30, retry: { initialDelayMs: 5, maxDelayMs: 20 } });
	let resent = 0;
	let peak = 0;
	m.on('resent', ({ count }) => (resent += count));
	m.on('delivered', () => (peak = Math.max(peak, spareChunks())));
	const tokens = makeTokens(6000, 62);
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages();
	assert.ok(tokens.every((tk) => server.counts.get(tk) === 1), 'each delivered once');
	assert.ok(resent >= 2000, `re-sent ${resent}`);
	assert.ok(peak > 0, 'the re-send ring, emptied, gave its chunk back while the stream went on');
	assert.equal(spareChunks(), 0, 'idle: nothing kept');
});

test('destroy() with re-sends waiting lets the spare chunks go too (a gateway that answers garbage: what each connection wrote goes back to the queue\'s re-sends)', async (t) => {
	releaseSpareChunks();
	const gw = await gateway(t, { garbage: true });
	const m = manager(t, gw, { protocol: 'binary' });
	const receipt = m.sendAps(makeTokens(20_000, 63), { alert: 'x' });
	while (m.stats.resent === 0) await new Promise((resolve) => setImmediate(resolve));
	m.destroy();
	const { dropped } = await receipt.settled;
	assert.equal(dropped.length, 20_000);
	assert.equal(spareChunks(), 0);
});
