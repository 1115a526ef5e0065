/**
 * What every store of `apns-worker serve` does (src/server/store.ts), run against each of them as
 * `serve` opens it: a SQLite file, a real `redis-server` (test/support/stores.ts; a third store is one more
 * line there). Every test counts tokens: accepted, handed out, settled, pending.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import type { StoredBody } from '../src/server/service.js';
import type { PushStore, StoredApp, WorkResult, WorkUnit } from '../src/server/store.js';
import { UNIT_TOKENS } from '../src/server/store.js';
import { defer, holder, openStore, STORES, wakeable } from './support/stores.js';

const BODY: StoredBody = { payload: { aps: { alert: 'x' } }, options: {} };
const HOUR = 3_600_000;

/** `n` distinct tokens (32 bytes each, concatenated), the k-th with `seed` and k in it. */
function tokens(n: number, seed: number): Buffer {
	const b = Buffer.alloc(n * 32, seed);
	for (let k = 0; k < n; k++) b.writeUInt32BE(k, k * 32 + 28);
	return b;
}

const hexes = (b: Buffer): string[] => Array.from({ length: b.length / 32 }, (_, k) => b.toString('hex', k * 32, k * 32 + 32));

/**
 * Work `store`: `decide` says what becomes of each unit; `until` waits for a condition on what was handed
 * out. A unit still held when the test ends is handed back (as the engine's close does), then the source stops.
 */
function working(t: TestContext, store: PushStore, decide: (unit: WorkUnit) => WorkResult | Promise<WorkResult>, concurrency = 16) {
	const units: WorkUnit[] = [];
	/** Units whose handler returned (after `decide` settled what it settles). */
	const finished: WorkUnit[] = [];
	const { wake, until } = wakeable(() => `${units.length} units handed out, ${finished.length} finished`);
	const held = new Set<(result: WorkResult) => void>();
	const source = store.work(
		(unit) => {
			units.push(unit);
			wake();
			return new Promise<WorkResult>((resolve, reject) => {
				held.add(resolve);
				Promise.resolve(decide(unit))
					.then(resolve, reject)
					.finally(() => {
						held.delete(resolve);
						finished.push(unit);
						wake();
					});
			});
		},
		{ concurrency, error: () => {} },
	);
	defer(t, async () => {
		const stopped = source.stop(performance.now() + 5000);
		for (const release of held) release('handedBack');
		await stopped;
	});
	return { units, finished, until, source, handed: () => units.reduce((sum, u) => sum + u.tokens.length / 32, 0) };
}

/** Settle every token of `unit` delivered (those not settled already). */
function allSent(unit: WorkUnit): Uint8Array {
	const n = unit.tokens.length / 32;
	const sent = new Uint8Array(Math.ceil(n / 8));
	for (let i = 0; i < n; i++) sent[i >> 3]! |= 1 << (i & 7);
	return sent;
}

for (const kind of STORES) {
	describe(`store: ${kind.name}`, { skip: kind.skip }, () => {
		async function fresh(t: TestContext, options?: { lockMs?: number; retentionMs?: number }) {
			const spec = await kind.place(t, options);
			const store = await openStore(t, spec);
			return { spec, store };
		}

		test('apps: an update keeps the incarnation; deleted and created again under the same id, a new one; ids listed', async (t) => {
			const { store } = await fresh(t);
			const { app, created } = await store.putApp('a', '{"v":1}', 'sealed-1', 1000);
			assert.equal(created, true);
			const updated = await store.putApp('a', '{"v":2}', undefined, 2000);
			assert.deepEqual([updated.created, updated.app.gen, updated.app.settings, updated.app.sealed, updated.app.createdAt, updated.app.updatedAt], [false, app.gen, '{"v":2}', undefined, 1000, 2000]);
			await store.putApp('b', '{}', undefined, 0);
			assert.deepEqual((await store.appIds()).sort(), ['a', 'b']);
			assert.equal(await store.deleteApp('a'), 0);
			assert.equal(await store.getApp('a'), undefined);
			assert.equal(await store.deleteApp('a'), undefined, 'no such app');
			const again = (await store.putApp('a', '{}', undefined, 3000)).app;
			assert.notEqual(again.gen, app.gen);
		});

		test('reseal: apps\' sealed credentials and the settings change together, or (an app changed meanwhile) not at all', async (t) => {
			const { store } = await fresh(t);
			await store.putApp('a', '{}', 'sealed-a1', 1);
			await store.putApp('b', '{}', 'sealed-b1', 1);
			await store.metaOnce('secret-salt', () => 'salt-1');
			assert.equal(await store.reseal([{ id: 'a', before: 'sealed-a1', after: 'sealed-a2' }, { id: 'b', before: 'not-what-b-holds', after: 'sealed-b2' }], { 'secret-salt': 'salt-2' }, 5), false);
			assert.deepEqual([(await store.getApp('a'))?.sealed, (await store.getApp('b'))?.sealed, await store.meta('secret-salt')], ['sealed-a1', 'sealed-b1', 'salt-1'], 'nothing changed');
			assert.equal(await store.reseal([{ id: 'a', before: 'sealed-a1', after: 'sealed-a2' }, { id: 'b', before: 'sealed-b1', after: 'sealed-b2' }], { 'secret-salt': 'salt-2' }, 5), true);
			const a = await store.getApp('a');
			assert.deepEqual([a?.sealed, a?.updatedAt, (await store.getApp('b'))?.sealed, await store.meta('secret-salt')], ['sealed-a2', 5, 'sealed-b2', 'salt-2']);
		});

		test('meta: the first value set wins', async (t) => {
			const { store } = await fresh(t);
			assert.equal(await store.meta('k'), undefined);
			assert.equal(await store.metaOnce('k', () => 'first'), 'first');
			assert.equal(await store.metaOnce('k', () => 'second'), 'first');
			assert.equal(await store.meta('k'), 'first');
		});

		test('accept: ids per notification and the tokens counted; pending and status count them; an Idempotency-Key answers the first answer and stores nothing more; an old incarnation accepts nothing', async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			const first = await store.accept(app, [{ body: BODY, tokens: tokens(3, 1) }, { body: BODY, tokens: tokens(2, 2) }], Date.now(), { key: 'key-1', fingerprint: 'f1' });
			assert.equal(first?.fresh, true);
			assert.deepEqual([first?.ids.length, first?.accepted, new Set(first?.ids).size], [2, 5, 2]);
			const again = await store.accept(app, [{ body: BODY, tokens: tokens(7, 3) }], Date.now(), { key: 'key-1', fingerprint: 'f2' });
			assert.deepEqual(again, { ids: first!.ids, accepted: 5, fingerprint: 'f1', fresh: false }, 'the first answer, with what it answered for');
			assert.deepEqual(await store.idempotent(app, 'key-1'), { ids: first!.ids, accepted: 5, fingerprint: 'f1' });
			assert.equal(await store.idempotent(app, 'key-2'), undefined);
			assert.deepEqual(await store.pending([app]), [5]);
			assert.deepEqual(await store.status(app, first!.ids[0]!), { total: 3, sent: 0, failed: 0, failures: [] });
			await store.deleteApp('a');
			const made = (await store.putApp('a', '{}', undefined, 0)).app;
			assert.equal(await store.accept(app, [{ body: BODY, tokens: tokens(1, 4) }], Date.now(), undefined), undefined, 'the deleted incarnation');
			assert.deepEqual(await store.pending([made]), [0]);
			assert.equal(await store.status(made, first!.ids[0]!), undefined);
		});

		test(`work: every accepted token is handed out once, in units of one notification (at most ${UNIT_TOKENS}); settled, nothing is pending; status counts sent and failed`, async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			const small = tokens(7, 1);
			const large = tokens(UNIT_TOKENS + 3, 2);
			// Accepted a minute ago (as a request's clock said): the units carry that time, where retry windows start.
			const acceptedAt = Date.now() - 60_000;
			const { ids } = (await store.accept(app, [{ body: BODY, tokens: small }, { body: BODY, tokens: large }], acceptedAt, undefined))!;
			const w = working(t, store, async (unit): Promise<WorkResult> => {
				// Token 0 of the small notification fails; everything else is delivered.
				const sent = allSent(unit);
				const failures = [];
				if (unit.notification === ids[0] && unit.tokens.equals(small)) {
					sent[0]! &= ~1;
					failures.push({ index: 0, token: unit.tokens.toString('hex', 0, 32), status: 400, reason: 'BadDeviceToken', feedbackAt: undefined });
				}
				await store.settle(unit, sent, failures, Date.now());
				return 'done';
			});
			await w.until(() => w.handed() >= 7 + UNIT_TOKENS + 3);
			await w.source.stop(performance.now() + 5000);
			const seen = w.units.flatMap((u) => hexes(u.tokens));
			assert.deepEqual(seen.sort(), [...hexes(small), ...hexes(large)].sort(), 'each token once');
			for (const u of w.units) {
				assert.ok(u.tokens.length / 32 <= UNIT_TOKENS && u.app === 'a' && u.gen === app.gen && ids.includes(u.notification), 'a unit is some tokens of one notification');
				assert.deepEqual([u.again, u.attempts, u.acceptedAt], [false, 0, acceptedAt]);
			}
			assert.deepEqual(await store.pending([app]), [0]);
			assert.deepEqual(await store.status(app, ids[0]!), { total: 7, sent: 6, failed: 1, failures: [{ token: hexes(small)[0], status: 400, reason: 'BadDeviceToken' }] });
			assert.deepEqual((await store.status(app, ids[1]!))?.sent, UNIT_TOKENS + 3);
		});

		test('settle: exactly once per token; a 410 becomes one numbered feedback record; pages follow cursors; what is read past goes, but with a webhook only what the webhook has', async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			const list = tokens(7, 5);
			const { ids } = (await store.accept(app, [{ body: BODY, tokens: list }], Date.now(), undefined))!;
			const w = working(t, store, () => new Promise<WorkResult>(() => {}));
			await w.until(() => w.handed() >= 7);
			const unit = w.units[0]!;
			const h = hexes(unit.tokens);
			const gone = (index: number, when: number) => ({ index, token: h[index]!, status: 410, reason: 'Unregistered', feedbackAt: when });
			const sent = new Uint8Array(1);
			sent[0] = 0b0000_0011;
			assert.deepEqual(await store.settle(unit, sent, [gone(2, 1000), gone(3, 2000)], Date.now()), { sent: 2, failed: [gone(2, 1000), gone(3, 2000)], feedback: 2 });
			// The same again (a unit run twice), and two more.
			sent[0] = 0b0010_0011;
			assert.deepEqual(await store.settle(unit, sent, [gone(2, 1000), gone(3, 2000), gone(4, 3000)], Date.now()), { sent: 1, failed: [gone(4, 3000)], feedback: 1 });
			assert.deepEqual(await store.status(app, ids[0]!), { total: 7, sent: 3, failed: 3, failures: [2, 3, 4].map((i) => ({ token: h[i], status: 410, reason: 'Unregistered' })) });
			assert.deepEqual(await store.pending([app]), [1]);
			const all = await store.feedback(app, 0, 10);
			assert.deepEqual(all.map((f) => [f.token, f.when, f.reason]), [[h[2], 1000, 'Unregistered'], [h[3], 2000, 'Unregistered'], [h[4], 3000, 'Unregistered']]);
			assert.ok(all[0]!.seq < all[1]!.seq && all[1]!.seq < all[2]!.seq, 'numbered in order');
			assert.deepEqual((await store.feedback(app, all[0]!.seq, 1)).map((f) => f.token), [h[3]], 'a page after a cursor');
			// Reading deletes nothing, and only what was handed out can be acknowledged.
			assert.equal(await store.feedbackAck(app, all[0]!.seq, false), false, 'nothing handed out yet');
			assert.equal((await store.feedback(app, 0, 10)).length, 3, 'still all three');
			await store.feedbackServed(app, 0, all[1]!.seq);
			await store.feedbackServed(app, 0, all[0]!.seq); // the mark never moves back
			await store.feedbackServed(app, all[1]!.seq + 1, all[2]!.seq); // a page that skipped ahead hands out nothing before it
			assert.equal(await store.feedbackAck(app, all[2]!.seq, false), false, 'past what was handed out: refused');
			assert.equal((await store.feedback(app, 0, 10)).length, 3, 'and nothing deleted');
			// A webhook has the first record only: an acknowledgement of two removes only that one.
			await store.webhookDelivered(app, all[0]!.seq);
			assert.deepEqual((await store.webhookBatch(app, 10)).map((f) => f.token), [h[3], h[4]]);
			assert.equal(await store.feedbackAck(app, all[1]!.seq, true), true);
			assert.deepEqual((await store.feedback(app, 0, 10)).map((f) => f.token), [h[3], h[4]]);
			assert.equal(await store.feedbackAck(app, all[1]!.seq, false), true);
			assert.deepEqual((await store.feedback(app, 0, 10)).map((f) => f.token), [h[4]]);
			// Numbers are never reused: a cursor stays valid after the records before it are gone.
			await store.settle(unit, new Uint8Array(1), [gone(6, 4000)], Date.now());
			assert.deepEqual((await store.feedback(app, all[2]!.seq, 10)).map((f) => f.token), [h[6]]);
			assert.ok((await store.feedback(app, all[2]!.seq, 10))[0]!.seq > all[2]!.seq);
		});

		test('work: a unit handed back comes out again with what was settled marked; one to be tried later comes back with its attempts counted', async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			await store.accept(app, [{ body: BODY, tokens: tokens(4, 6) }], Date.now(), undefined);
			let finished!: () => void;
			const done = new Promise<void>((resolve) => (finished = resolve));
			const w = working(t, store, async (unit): Promise<WorkResult> => {
				const round = w.units.length;
				if (round === 1) {
					const sent = new Uint8Array(1);
					sent[0] = 0b0001;
					await store.settle(unit, sent, [], Date.now());
					return 'handedBack';
				}
				if (round === 2) return { retryInMs: 50 };
				await store.settle(unit, allSent(unit), [], Date.now());
				finished();
				return 'done';
			});
			await done;
			assert.deepEqual(await store.pending([app]), [0]);
			const [first, second, third] = w.units;
			assert.deepEqual([first!.settled[0], second!.settled[0], third!.settled[0]], [0, 0b0001, 0b0001], 'what was settled is marked');
			assert.ok(third!.attempts > second!.attempts && second!.attempts > first!.attempts, `attempts ${first!.attempts}, ${second!.attempts}, ${third!.attempts}`);
			assert.deepEqual(w.units.map((u) => u.tokens.length / 32), [4, 4, 4]);
		});

		test('lease: a holder killed with SIGKILL loses its units; another takes every one of their tokens, counted in doubt', async (t) => {
			const spec = await kind.place(t, { lockMs: 1000 });
			const store = await openStore(t, spec);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			const list = tokens(10, 7);
			await store.accept(app, [{ body: BODY, tokens: list }], Date.now(), undefined);
			if (spec.kind === 'sqlite') await store.close(); // one daemon per SQLite file
			const held = await holder(t, spec, 10);
			assert.equal(held.held, 10);
			await held.kill();
			const next = spec.kind === 'sqlite' ? await openStore(t, spec) : store;
			const counted = (await next.inDoubt?.(app)) ?? 0;
			const w = working(t, next, async (unit): Promise<WorkResult> => {
				await next.settle(unit, allSent(unit), [], Date.now());
				return 'done';
			});
			await w.until(() => w.handed() >= 10);
			assert.deepEqual(w.units.flatMap((u) => hexes(u.tokens)).sort(), hexes(list).sort());
			const again = w.units.filter((u) => u.again).reduce((sum, u) => sum + u.tokens.length / 32, 0);
			assert.equal(counted + again, 10, `in doubt: ${counted} counted at open, ${again} taken over`);
		});

		test('retention: feedback no one read is pruned by when it was stored, not by when APNs says the token went; with a webhook, only what the webhook has', async (t) => {
			const { store } = await fresh(t);
			const plain = (await store.putApp('plain', '{}', undefined, 0)).app;
			const hooked = (await store.putApp('hooked', '{}', undefined, 0)).app;
			const record = async (app: StoredApp, seed: number, storedAt: number): Promise<void> => {
				await store.accept(app, [{ body: BODY, tokens: tokens(1, seed) }], storedAt, undefined);
				const w = working(t, store, async (unit): Promise<WorkResult> => {
					await store.settle(unit, new Uint8Array(1), [{ index: 0, token: unit.tokens.toString('hex'), status: 410, reason: 'Unregistered', feedbackAt: 0 }], storedAt);
					return 'done';
				});
				await w.until(() => w.handed() >= 1);
				await w.source.stop(performance.now() + 5000);
			};
			const now = Date.now();
			await record(plain, 1, now - 2 * HOUR);
			await record(plain, 2, now);
			await record(hooked, 3, now - 2 * HOUR);
			await record(hooked, 4, now - 2 * HOUR);
			const [firstHooked] = await store.webhookBatch(hooked, 1);
			await store.webhookDelivered(hooked, firstHooked!.seq);
			await store.prune(now - HOUR, [{ app: plain, webhook: false }, { app: hooked, webhook: true }]);
			assert.deepEqual((await store.feedback(plain, 0, 10)).length, 1, 'the old one went; the new one stays, though APNs dates both to 1970');
			assert.deepEqual((await store.feedback(hooked, 0, 10)).map((f) => f.seq), (await store.webhookBatch(hooked, 10)).map((f) => f.seq), 'what the webhook has went; what it has not stays');
			assert.equal((await store.webhookBatch(hooked, 10)).length, 1);
		});

		test('delete: an app deleted with work pending drops it (and says how much); its work is never handed out as its successor\'s', async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			await store.accept(app, [{ body: BODY, tokens: tokens(5, 8) }], Date.now(), undefined);
			assert.equal(await store.deleteApp('a'), 5);
			const made = (await store.putApp('a', '{}', undefined, 0)).app;
			assert.deepEqual(await store.pending([made]), [0]);
			await store.accept(made, [{ body: BODY, tokens: tokens(2, 9) }], Date.now(), undefined);
			// Whatever of the old incarnation is still handed out (a store that cannot drop it at once) says
			// so by its gen, and is forgotten; SQLite drops the rows with the app, so none is.
			const w = working(t, store, async (unit): Promise<WorkResult> => {
				if (unit.gen !== made.gen) return 'gone';
				await store.settle(unit, allSent(unit), [], Date.now());
				return 'done';
			});
			await w.until(() => w.finished.filter((u) => u.gen === made.gen).reduce((sum, u) => sum + u.tokens.length / 32, 0) >= 2);
			assert.deepEqual(await store.pending([made]), [0]);
			const successor = new Set(hexes(tokens(2, 9)));
			for (const u of w.units) {
				if (u.gen === made.gen) assert.ok(hexes(u.tokens).every((h) => successor.has(h)), 'the successor is handed only its own tokens');
				else assert.equal(u.gen, app.gen);
			}
		});

		test('delete under a unit: the unit out when its app is deleted comes back \'gone\' and is forgotten; nothing of it is handed out again', async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			await store.accept(app, [{ body: BODY, tokens: tokens(3, 10) }], Date.now(), undefined);
			const w = working(t, store, async (unit): Promise<WorkResult> => {
				if (unit.gen !== app.gen) {
					await store.settle(unit, allSent(unit), [], Date.now());
					return 'done';
				}
				assert.equal(await store.deleteApp('a'), 3);
				const made = (await store.putApp('a', '{}', undefined, 0)).app;
				assert.notEqual(made.gen, unit.gen);
				await store.accept(made, [{ body: BODY, tokens: tokens(1, 11) }], Date.now(), undefined);
				return 'gone';
			});
			await w.until(() => w.finished.length >= 1);
			const made = (await store.getApp('a'))!;
			// The successor's one notification is handed out and settled; the old unit never again.
			await w.until(() => w.finished.some((u) => u.gen === made.gen));
			assert.deepEqual(await store.pending([made]), [0]);
			assert.equal(w.units.filter((u) => u.gen === app.gen).length, 1, 'the old unit was handed out once');
		});

		test('accept, side by side: the same Idempotency-Key twice at once stores one request (both answered its ids, one of them fresh)', async (t) => {
			const { store } = await fresh(t);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			const key = { key: 'k', fingerprint: 'f' };
			const [one, two] = await Promise.all([store.accept(app, [{ body: BODY, tokens: tokens(4, 12) }], Date.now(), key), store.accept(app, [{ body: BODY, tokens: tokens(4, 12) }], Date.now(), key)]);
			assert.deepEqual([one?.fresh, two?.fresh].sort(), [false, true]);
			assert.deepEqual(one?.ids, two?.ids);
			assert.deepEqual(await store.pending([app]), [4]);
		});

		test('durable: accepted, then the store is closed at once (a crash before anything was handed out): opened again, the work is there', async (t) => {
			const spec = await kind.place(t);
			const store = await openStore(t, spec);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			const list = tokens(3, 10);
			await store.accept(app, [{ body: BODY, tokens: list }], Date.now(), undefined);
			await store.close();
			const next = await openStore(t, spec);
			const w = working(t, next, async (unit): Promise<WorkResult> => {
				await next.settle(unit, allSent(unit), [], Date.now());
				return 'done';
			});
			await w.until(() => w.handed() >= 3);
			assert.deepEqual(w.units.flatMap((u) => hexes(u.tokens)).sort(), hexes(list).sort());
		});

		test('away and back: while the store cannot be reached its calls fail and `unavailable` says why; once it is back, what was accepted before is there and work goes on', { skip: kind.name === 'sqlite' ? 'an embedded store is never away' : false }, async (t) => {
			const spec = await kind.place(t);
			const store = await openStore(t, spec);
			const { app } = await store.putApp('a', '{}', undefined, 0);
			await store.accept(app, [{ body: BODY, tokens: tokens(2, 11) }], Date.now(), undefined);
			await spec.stop!();
			await assert.rejects(store.pending([app]));
			// The call may fail (a command timeout) before the connection's loss is seen: wait for that, bounded.
			for (let i = 0; i < 200 && store.unavailable === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 25));
			assert.match(store.unavailable ?? '', /unreachable/);
			await spec.restart!();
			let pending: number[] | undefined;
			for (let i = 0; i < 200 && pending === undefined; i++) {
				pending = await store.pending([app]).catch(() => undefined);
				if (pending === undefined) await new Promise((resolve) => setTimeout(resolve, 50));
			}
			assert.deepEqual(pending, [2]);
			const w = working(t, store, async (unit): Promise<WorkResult> => {
				await store.settle(unit, allSent(unit), [], Date.now());
				return 'done';
			});
			await w.until(() => w.handed() >= 2);
		});
	});
}
