/**
 * The daemon retries until it is too late, not for a fixed count: "not now" answers (429, 500, 503, no
 * answer) keep a notification pending, round after round, until its `expiration` or `--retry-for`; then it
 * is recorded failed with APNs' last answer. A notification past its expiration is not sent; a stopped
 * app's work waits the same way. The real daemon (child process) on SQLite and on Redis.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { makeTokens } from './support/helpers.js';
import { appBody, dataDir, mockApns, type RunningDaemon, startDaemon, until } from './support/daemon.js';
import { Redis } from 'ioredis';
import { REDIS_MISSING, startRedis } from './support/redis.js';
import { SqliteStore } from '../src/server/stores/sqlite.js';

type StoreName = 'sqlite' | 'redis';

/** A daemon on `store` (a Redis of the test's own, or a fresh data directory), with `args`. */
async function daemon(t: TestContext, store: StoreName, args: string[] = []): Promise<RunningDaemon> {
	if (store === 'sqlite') return startDaemon(t, dataDir(t), { args });
	const r = await startRedis({});
	t.after(() => r.close());
	return startDaemon(t, undefined, { args: ['--redis', r.url, ...args] });
}

/** Damage sealed credentials (another secret's, a bad restore): they no longer open. */
function damaged(sealed: string): string {
	return `${sealed.slice(0, -8)}AAAAAAA=`;
}

/**
 * A daemon on `store` with app `broken`, whose stored credentials no longer open (so it is stopped), and
 * `args`. SQLite: damaged while no daemon runs; Redis: damaged in place, the daemon told of the change.
 */
async function stoppedApp(t: TestContext, store: StoreName, mock: { host: string; port: number }, args: string[]): Promise<RunningDaemon> {
	if (store === 'sqlite') {
		const dir = dataDir(t);
		const first = await startDaemon(t, dir);
		assert.equal((await first.api('PUT', '/v1/apps/broken', appBody(mock))).status, 200);
		first.child.kill('SIGTERM');
		assert.equal((await first.exited).code, 0);
		const db = new SqliteStore(dir);
		const app = (await db.getApp('broken'))!;
		await db.putApp('broken', app.settings, damaged(app.sealed!), Date.now());
		await db.close();
		const d = await startDaemon(t, dir, { args });
		await until(async () => ((await d.api('GET', '/v1/apps/broken')).body.state === 'stopped' ? true : undefined), 'the app to be stopped');
		return d;
	}
	const r = await startRedis({});
	t.after(() => r.close());
	const d = await startDaemon(t, undefined, { args: ['--redis', r.url, ...args] });
	assert.equal((await d.api('PUT', '/v1/apps/broken', appBody(mock))).status, 200);
	const c = new Redis(r.url);
	t.after(() => c.disconnect());
	const stored = JSON.parse((await c.hget('aw:apps', 'broken'))!) as { sealed: string; updatedAt: string };
	await c.hset('aw:apps', 'broken', JSON.stringify({ ...stored, sealed: damaged(stored.sealed), updatedAt: String(Number(stored.updatedAt) + 1) }));
	await c.publish('aw:apps:changed', 'broken');
	await until(async () => ((await d.api('GET', '/v1/apps/broken')).body.state === 'stopped' ? true : undefined), 'the app to be stopped');
	return d;
}

/** Failures in token order. */
function byToken<T extends { token: string }>(list: readonly T[]): T[] {
	return [...list].sort((a, b) => a.token.localeCompare(b.token));
}

/** Notification `id` of `app` once nothing of it is pending. */
function settled(d: RunningDaemon, app: string, id: string, tries = 600): Promise<{ pending: number; sent: number; failed: Array<{ token: string; status: number; reason: string }> }> {
	return until(async () => {
		const r = await d.api('GET', `/v1/apps/${app}/notifications/${id}`);
		assert.equal(r.status, 200, JSON.stringify(r.body));
		return r.body.pending === 0 ? r.body : undefined;
	}, `notification ${id} to settle`, tries, 50);
}

for (const store of ['sqlite', 'redis'] as const) {
	const skip = store === 'redis' ? REDIS_MISSING : false;

	test(`${store}: an outage longer than a round of attempts fails nothing: the notifications stay pending (the app view says why), and the next round delivers each once`, { skip }, async (t) => {
		const tokens = makeTokens(40, 0xa1);
		// Each token answered 503 four times: a round is 3 attempts, so the first round ends with all of them "not now".
		const mock = await mockApns(t, { transient: { tokens, status: 503, times: 4 } });
		const d = await daemon(t, store);
		assert.equal((await d.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
		const post = await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] });
		assert.equal(post.status, 202, JSON.stringify(post.body));
		await until(async () => (mock.answers.length >= tokens.length * 3 ? true : undefined), 'a round of 3 attempts each');
		const between = await d.api('GET', `/v1/apps/shop/notifications/${post.body.ids[0]}`);
		assert.deepEqual([between.body.pending, between.body.failed], [40, []], 'after a round of 503s: pending, none failed');
		const view = await until(async () => {
			const v = await d.api('GET', '/v1/apps/shop');
			return v.body.lastError === null ? undefined : v.body;
		}, 'the app view to show the last error');
		assert.deepEqual([view.lastError.status, view.lastError.reason, view.pending], [503, 'ServiceUnavailable', 40], 'the app view says why');
		const done = await settled(d, 'shop', post.body.ids[0]);
		assert.deepEqual([done.sent, done.failed], [40, []]);
		assert.deepEqual(tokens.filter((tk) => mock.counts.get(tk) !== 1), [], 'each accepted once');
		const answers = new Map<string, number>();
		for (const a of mock.answers) answers.set(a.token, (answers.get(a.token) ?? 0) + 1);
		assert.deepEqual([...new Set(tokens.map((tk) => answers.get(tk)))], [5], 'four 503s, then 200: five requests each');
	});

	test(`${store}: an outage that outlasts --retry-for records each notification failed with APNs' last answer, after at least one full round; never "Expired" when APNs answered`, { skip }, async (t) => {
		const tokens = makeTokens(20, 0xa2);
		const mock = await mockApns(t, { transient: { tokens, status: 503, times: 1_000_000 } });
		const d = await daemon(t, store, ['--retry-for', '6s']);
		assert.equal((await d.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
		const post = await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] });
		assert.equal(post.status, 202, JSON.stringify(post.body));
		const done = await settled(d, 'shop', post.body.ids[0]);
		assert.equal(done.sent, 0);
		assert.deepEqual(new Set(done.failed.map((f) => `${f.status} ${f.reason}`)), new Set(['503 ServiceUnavailable']));
		assert.deepEqual(new Set(done.failed.map((f) => f.token)), new Set(tokens));
		const answers = new Map<string, number>();
		for (const a of mock.answers) answers.set(a.token, (answers.get(a.token) ?? 0) + 1);
		// Rounds start at least 5 s × 0.8 apart: in a 6 s window, one or two rounds of 3.
		for (const tk of tokens) assert.ok([3, 6].includes(answers.get(tk) ?? 0), `${answers.get(tk)} requests for one token`);
	});

	test(`${store}: a notification whose expiration has passed is not sent: recorded failed, status 0, "Expired"; the rest is delivered`, { skip }, async (t) => {
		const mock = await mockApns(t);
		const d = await daemon(t, store);
		assert.equal((await d.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
		const [late, fine] = [makeTokens(5, 0xa3), makeTokens(5, 0xa4)];
		const past = Math.floor(Date.now() / 1000) - 60;
		const post = await d.api('POST', '/v1/apps/shop/notifications', {
			notifications: [
				{ tokens: late, aps: { alert: 'too late' }, expiration: past },
				{ tokens: fine, aps: { alert: 'in time' }, expiration: past + 3600 },
			],
		});
		assert.equal(post.status, 202, JSON.stringify(post.body));
		const [a, b] = [await settled(d, 'shop', post.body.ids[0]), await settled(d, 'shop', post.body.ids[1])];
		assert.deepEqual([a.sent, byToken(a.failed)], [0, byToken(late.map((token) => ({ token, status: 0, reason: 'Expired' })))]);
		assert.deepEqual([b.sent, b.failed], [5, []]);
		assert.deepEqual(late.filter((tk) => mock.counts.has(tk)), [], 'nothing past its expiration reached APNs');
	});

	test(`${store}: a stopped app's notifications wait (pending, not sent) until --retry-for runs out, then are recorded failed, "Expired"`, { skip }, async (t) => {
		const mock = await mockApns(t);
		const d = await stoppedApp(t, store, mock, ['--retry-for', '3s']);
		const tokens = makeTokens(30, 0xa5);
		const post = await d.api('POST', '/v1/apps/broken/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] });
		assert.equal(post.status, 202, JSON.stringify(post.body));
		assert.equal((await d.api('GET', '/v1/apps/broken')).body.pending, 30, 'kept while it may still be sent');
		const done = await settled(d, 'broken', post.body.ids[0]);
		assert.deepEqual([done.sent, byToken(done.failed)], [0, byToken(tokens.map((token) => ({ token, status: 0, reason: 'Expired' })))]);
		assert.equal(mock.counts.size, 0, 'nothing reached APNs');
	});
}
