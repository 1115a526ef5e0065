/**
 * How the SQLite store hands out its work (what only it does; what every store does is in
 * store-conformance.test.ts): units counted in tokens with a share per app, a refused read retried backed
 * off, a delay cut short when an app can send again, and only what reached a manager counted in doubt.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { StoredBody } from '../src/server/service.js';
import type { WorkHandler, WorkResult, WorkUnit } from '../src/server/store.js';
import { UNIT_TOKENS } from '../src/server/store.js';
import { APP_TOKENS, SqliteStore } from '../src/server/stores/sqlite.js';
import { wakeable } from './support/stores.js';

const BODY: StoredBody = { payload: { aps: { alert: 'x' } }, options: {} };
const HOUR = 3_600_000;

function place(t: TestContext): string {
	const dir = mkdtempSync(join(tmpdir(), 'apns-sqlite-work-'));
	t.after(() => rmSync(dir, { recursive: true, force: true }));
	return dir;
}

function open(t: TestContext, dir: string): SqliteStore {
	const store = new SqliteStore(dir);
	let closed = false;
	t.after(async () => {
		if (!closed) await store.close();
	});
	const close = store.close.bind(store);
	store.close = async () => {
		closed = true;
		await close();
	};
	return store;
}

/** Count the work source's reads of the apps (one per look for work): a source that spins reads every few ms. */
function countReads(store: SqliteStore): { count: number } {
	const reads = { count: 0 };
	const appNums = store.appNums.bind(store);
	store.appNums = () => {
		reads.count++;
		return appNums();
	};
	return reads;
}

/** `n` one-token notifications, the k-th token with `seed` and k in it. */
function oneEach(n: number, seed: number) {
	return Array.from({ length: n }, (_, k) => {
		const token = Buffer.alloc(32, seed);
		token.writeUInt32BE(k, 28);
		return { body: BODY, tokens: token };
	});
}

/** Work `store` with `handler`; `until` waits for a condition, woken by each unit handed out or finished. */
function working(t: TestContext, store: SqliteStore, handler: WorkHandler, concurrency = 16) {
	const units: WorkUnit[] = [];
	let finished = 0;
	const { wake, until } = wakeable(() => `${units.length} units handed out, ${finished} finished`);
	const source = store.work(
		(unit) => {
			units.push(unit);
			wake();
			return handler(unit).finally(() => {
				finished++;
				wake();
			});
		},
		{ concurrency, error: () => wake() },
	);
	t.after(() => source.stop(performance.now()));
	return { source, units, until, finished: () => finished };
}

test('sqlite work: one-token notifications go out thousands at a time, at most APP_TOKENS of one app; a slow app holds its share and another app is still handed its work', async (t) => {
	const store = open(t, place(t));
	const slow = (await store.putApp('slow', '{}', undefined, 0)).app;
	const other = (await store.putApp('other', '{}', undefined, 0)).app;
	await store.accept(slow, oneEach(APP_TOKENS + 2000, 1), Date.now(), undefined);
	await store.accept(other, oneEach(3, 2), Date.now(), undefined);
	const held: Array<() => void> = [];
	const w = working(t, store, async (unit): Promise<WorkResult> => {
		if (unit.app === 'slow') await new Promise<void>((resolve) => held.push(resolve)); // never answered while the test looks
		else await store.settle(unit, new Uint8Array([1]), [], Date.now());
		return 'done';
	});
	await w.until(() => w.finished() === 3 && held.length === APP_TOKENS);
	// Let a few more turns pass: nothing more of the slow app goes out while its share is out.
	for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
	assert.equal(held.length, APP_TOKENS, `the slow app has ${APP_TOKENS} tokens out, no more (16 units of one token was the old limit)`);
	assert.deepEqual(await store.pending([other]), [0]);
	// Its units answered: the rest of it goes out.
	for (const release of held.splice(0)) release();
	await w.until(() => w.units.filter((u) => u.app === 'slow').length === APP_TOKENS + 2000);
	for (const release of held.splice(0)) release();
});

test('sqlite work: at most concurrency × UNIT_TOKENS tokens out across apps; the apps take turns', async (t) => {
	const store = open(t, place(t));
	for (const id of ['a', 'b', 'c']) await store.accept((await store.putApp(id, '{}', undefined, 0)).app, oneEach(2000, id.charCodeAt(0)), Date.now(), undefined);
	const held: Array<() => void> = [];
	const w = working(t, store, async () => {
		await new Promise<void>((resolve) => held.push(resolve));
		return 'done';
	}, 1);
	await w.until(() => held.length === UNIT_TOKENS);
	for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
	assert.equal(held.length, UNIT_TOKENS, 'concurrency 1: one full unit of tokens out');
	const per = (id: string): number => w.units.filter((u) => u.app === id).length;
	assert.deepEqual([per('a'), per('b'), per('c')], [2000, 2000, 1000], 'a chunk of each app in turn');
	for (const release of held.splice(0)) release();
	await w.until(() => w.units.length === 6000);
	for (const release of held.splice(0)) release();
});

test('sqlite work: a read the database refused is reported and tried again, backed off, until it succeeds', async (t) => {
	const store = open(t, place(t));
	const { app } = await store.putApp('a', '{}', undefined, 0);
	await store.accept(app, oneEach(1, 3), Date.now(), undefined);
	const appNums = store.appNums.bind(store);
	let refusals = 2;
	store.appNums = () => {
		if (refusals-- > 0) throw Object.assign(new Error('disk I/O error'), { code: 'SQLITE_IOERR' });
		return appNums();
	};
	const errors: string[] = [];
	const units: WorkUnit[] = [];
	const { wake, until } = wakeable(() => `errors ${JSON.stringify(errors)}, nothing handed out`);
	const source = store.work(
		async (unit) => {
			units.push(unit);
			wake();
			await store.settle(unit, new Uint8Array([1]), [], Date.now());
			return 'done';
		},
		{ concurrency: 16, error: (e) => errors.push(e.message) },
	);
	t.after(() => source.stop(performance.now()));
	await until(() => units.length > 0);
	assert.deepEqual(errors, ['disk I/O error', 'disk I/O error']);
	assert.equal(units.length, 1);
});

test('sqlite work: an app deleted while its work waits out a delay leaves no timer behind (the work source goes quiet)', async (t) => {
	const store = open(t, place(t));
	const { app } = await store.putApp('a', '{}', undefined, 0);
	await store.accept(app, oneEach(1, 4), Date.now(), undefined);
	const reads = countReads(store);
	const w = working(t, store, async () => {
		await store.deleteApp('a');
		return { retryInMs: 0 }; // due at once: the delay is over before anything looks at it
	});
	await w.until(() => w.units.length === 1);
	// A window of 50 ms, measured in reads: a source that spins on an expired delay reads every few ms.
	await new Promise((resolve) => setTimeout(resolve, 20));
	const before = reads.count;
	await new Promise((resolve) => setTimeout(resolve, 50));
	assert.ok(reads.count - before <= 1, `${reads.count - before} reads in 50 ms with nothing to do`);
});

test('sqlite work: units of an app that cannot send come back untouched and are not counted in doubt at the next start; units that reached a manager are', async (t) => {
	const dir = place(t);
	let store = open(t, dir);
	const stopped = (await store.putApp('stopped', '{}', undefined, 0)).app;
	const sending = (await store.putApp('sending', '{}', undefined, 0)).app;
	await store.accept(stopped, oneEach(5, 5), Date.now(), undefined);
	await store.accept(sending, oneEach(3, 6), Date.now(), undefined);
	const w = working(t, store, async (unit): Promise<WorkResult> => (unit.app === 'stopped' ? { retryInMs: HOUR, untouched: true } : { retryInMs: HOUR }));
	await w.until(() => w.finished() === 8);
	await w.source.stop(performance.now());
	await store.close();
	store = open(t, dir);
	assert.equal(await store.inDoubt(stopped), 0, 'never sent: not in doubt');
	assert.equal(await store.inDoubt(sending), 3, 'handed to a manager and not settled: in doubt');
});

test('sqlite work: resume(app) hands out at once the units an app that could not send was waiting out a delay for', async (t) => {
	const store = open(t, place(t));
	const { app } = await store.putApp('a', '{}', undefined, 0);
	await store.accept(app, oneEach(2, 7), Date.now(), undefined);
	let canSend = false;
	const w = working(t, store, async (unit): Promise<WorkResult> => {
		if (!canSend) return { retryInMs: HOUR, untouched: true };
		await store.settle(unit, new Uint8Array([1]), [], Date.now());
		return 'done';
	});
	await w.until(() => w.units.length === 2);
	canSend = true;
	w.source.resume!('a');
	await w.until(() => w.finished() === 4);
	assert.deepEqual(await store.pending([app]), [0]);
});

test('sqlite work: a unit due again while the budget is full waits for room without spinning (the source reads nothing until a unit comes back)', async (t) => {
	const store = open(t, place(t));
	const busy = (await store.putApp('busy', '{}', undefined, 0)).app;
	const waiting = (await store.putApp('waiting', '{}', undefined, 0)).app;
	await store.accept(waiting, oneEach(1, 8), Date.now(), undefined);
	const held: Array<() => void> = [];
	const reads = countReads(store);
	let canSend = false;
	const w = working(t, store, async (unit): Promise<WorkResult> => {
		if (unit.app === 'waiting') return canSend ? 'done' : { retryInMs: HOUR, untouched: true };
		await new Promise<void>((resolve) => held.push(resolve));
		return 'done';
	}, 1);
	await w.until(() => w.finished() === 1);
	// The budget (concurrency 1: UNIT_TOKENS tokens) filled by another app; then the waiting unit made due.
	await store.accept(busy, oneEach(UNIT_TOKENS, 9), Date.now(), undefined);
	await w.until(() => held.length === UNIT_TOKENS);
	canSend = true;
	w.source.resume!('waiting');
	await new Promise((resolve) => setImmediate(resolve));
	// A window of 50 ms, measured in reads: a source that re-arms a 0 ms timer for a due unit reads every few ms.
	const before = reads.count;
	await new Promise((resolve) => setTimeout(resolve, 50));
	assert.ok(reads.count - before <= 1, `${reads.count - before} reads in 50 ms while nothing could go out`);
	assert.equal(w.units.filter((u) => u.app === 'waiting').length, 1, 'not handed out while the budget is full');
	for (const release of held.splice(0)) release();
	await w.until(() => w.units.filter((u) => u.app === 'waiting').length === 2);
});

test('sqlite work: a unit whose in-doubt mark cannot be raised (a refused write) is kept and handed out on a retry, not dropped', async (t) => {
	const store = open(t, place(t));
	const { app } = await store.putApp('a', '{}', undefined, 0);
	await store.accept(app, oneEach(1, 10), Date.now(), undefined);
	let canSend = false;
	const w = working(t, store, async (unit): Promise<WorkResult> => {
		if (!canSend) return { retryInMs: HOUR, untouched: true }; // lowers the mark
		await store.settle(unit, new Uint8Array([1]), [], Date.now());
		return 'done';
	});
	await w.until(() => w.finished() === 1);
	const mark = store.markDispatched.bind(store);
	let refusals = 1;
	store.markDispatched = (num: number, seq: number) => {
		if (refusals-- > 0) throw Object.assign(new Error('disk full'), { code: 'SQLITE_FULL' });
		mark(num, seq);
	};
	canSend = true;
	w.source.resume!('a');
	await w.until(() => w.finished() === 2);
	assert.equal(refusals, -1, 'the raise was refused once, then done');
	assert.deepEqual(await store.pending([app]), [0]);
});

test('sqlite work: rows in doubt at a start stay in doubt through untouched runs until they are settled (a second crash still counts them)', async (t) => {
	const dir = place(t);
	let store = open(t, dir);
	const { app } = await store.putApp('a', '{}', undefined, 0);
	await store.accept(app, oneEach(3, 11), Date.now(), undefined);
	// First life: handed to a manager, then the daemon dies.
	let w = working(t, store, async (): Promise<WorkResult> => ({ retryInMs: HOUR }));
	await w.until(() => w.finished() === 3);
	await w.source.stop(performance.now());
	await store.close();
	store = open(t, dir);
	assert.equal(await store.inDoubt(app), 3);
	// Second life: the app cannot send (untouched), then the daemon dies again.
	w = working(t, store, async (): Promise<WorkResult> => ({ retryInMs: HOUR, untouched: true }));
	await w.until(() => w.finished() === 3);
	await w.source.stop(performance.now());
	await store.close();
	store = open(t, dir);
	assert.equal(await store.inDoubt(app), 3, 'still in doubt: they may have reached APNs in the first life');
});
