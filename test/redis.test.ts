/**
 * `apns-worker serve --redis`: several daemons (child processes) on one real `redis-server`, an HTTP/2
 * mock APNs on 127.0.0.1. Every test counts what the mock received. Skipped, with the reason, where
 * `redis-server` is not installed.
 */
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { Redis } from 'ioredis';
import { RedisData as RedisStore } from '../src/server/stores/redis.js';
import { makeTokens } from './support/helpers.js';
import { API_KEY, appBody, dataDir, mockApns, P8, request, type RunningDaemon, SECRET, startDaemon, tally, until, verifySignature, WEBHOOK_SECRET, without } from './support/daemon.js';
import { REDIS_MISSING, startRedis, startRelay } from './support/redis.js';

const skip = REDIS_MISSING;

async function redis(t: TestContext, options: { persist?: boolean } = {}): Promise<Awaited<ReturnType<typeof startRedis>>> {
	const r = await startRedis(options);
	t.after(() => r.close());
	return r;
}

function serve(t: TestContext, url: string, args: string[] = [], env: Record<string, string | undefined> = {}): Promise<RunningDaemon> {
	return startDaemon(t, undefined, { args: ['--redis', url, ...args], env });
}

/** Wait until every app has nothing pending (as `d` sees it). */
async function drained(d: RunningDaemon, apps: readonly string[], tries = 1200): Promise<void> {
	await until(async () => {
		const views = await Promise.all(apps.map((app) => d.api('GET', `/v1/apps/${app}`)));
		return views.every((v) => v.status === 200 && v.body.pending === 0) ? true : undefined;
	}, `${apps.join(', ')} to have nothing pending`, tries, 50);
}

/** The daemon's log lines (pino JSON) with message `msg`. */
function logged(d: RunningDaemon, msg: string): Array<Record<string, unknown>> {
	return d.output().split('\n').flatMap((line) => {
		try {
			const entry = JSON.parse(line) as Record<string, unknown>;
			return entry['msg'] === msg ? [entry] : [];
		} catch {
			return [];
		}
	});
}

function metric(text: string, name: string, app: string): number {
	return Number(new RegExp(`${name}\\{app="${app}"\\} (\\d+)`).exec(text)?.[1] ?? 0);
}

test('redis: an app provisioned through one daemon is served by another at once; outcomes, feedback and Idempotency-Key answers are the same from either; no secret in Redis', { skip }, async (t) => {
	const tokens = makeTokens(300, 0x71);
	const gone = [tokens[10]!, tokens[200]!];
	const bad = tokens[20]!;
	const mock = await mockApns(t, { unregistered: gone, badTokens: [bad] });
	const r = await redis(t);
	const a = await serve(t, r.url);
	const b = await serve(t, r.url);
	assert.equal((await a.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
	const seen = await b.api('GET', '/v1/apps/shop');
	assert.equal(seen.status, 200, 'the other daemon knows the app without a restart');
	assert.deepEqual([seen.body.state, seen.body.keyId], ['sending', P8.keyId]);

	const body = { notifications: [{ tokens: tokens.slice(0, 150), aps: { alert: 'one' } }, { tokens: tokens.slice(150), aps: { alert: 'two' } }] };
	const first = await b.api('POST', '/v1/apps/shop/notifications', body, { 'idempotency-key': 'order-1' });
	assert.equal(first.status, 202, JSON.stringify(first.body));
	assert.equal(first.body.accepted, 300);
	const retry = await a.api('POST', '/v1/apps/shop/notifications', body, { 'idempotency-key': 'order-1' });
	assert.deepEqual(retry, first, 'a retry through another daemon gets the first answer and stores nothing');
	await drained(a, ['shop']);
	const [s1, s2] = await Promise.all(first.body.ids.map((id: string) => a.api('GET', `/v1/apps/shop/notifications/${id}`)));
	assert.deepEqual([s1!.body.pending, s1!.body.sent, s1!.body.failed.map((f: { reason: string }) => f.reason).sort()], [0, 148, ['BadDeviceToken', 'Unregistered']]);
	assert.deepEqual([s2!.body.pending, s2!.body.sent, s2!.body.failed.map((f: { token: string; status: number }) => [f.token, f.status])], [0, 149, [[gone[1], 410]]]);
	for (const token of tokens) assert.equal(mock.counts.get(token) ?? 0, gone.includes(token) || token === bad ? 0 : 1, `${token} delivered once (or refused by APNs)`);

	const feedback = await b.api('GET', '/v1/apps/shop/feedback?after=0');
	assert.deepEqual(feedback.body.feedback.map((f: { token: string; reason: string }) => [f.token, f.reason]).sort(), gone.map((g) => [g, 'Unregistered']).sort());
	const next = await a.api('GET', `/v1/apps/shop/feedback?after=${feedback.body.next}`);
	assert.deepEqual(next.body, { feedback: [], next: feedback.body.next }, 'read past: gone from every daemon');

	const metrics = ((await request(a.url, 'GET', '/metrics')).body as string) + ((await request(b.url, 'GET', '/metrics')).body as string);
	const delivered = [...metrics.matchAll(/apns_worker_delivered_total\{app="shop"\} (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
	assert.equal(delivered, 297, 'the two daemons together delivered each once');

	// Secrets: sealed in Redis, never in the clear.
	const c = new Redis(r.url);
	t.after(() => c.disconnect());
	const stored = JSON.stringify(await c.hgetall('aw:apps'));
	assert.ok(!stored.includes(P8.key.split('\n')[1]!), 'the key is not stored in the clear');

	const deleted = await b.api('DELETE', '/v1/apps/shop');
	assert.deepEqual(deleted.body, { dropped: 0 });
	assert.equal((await a.api('GET', '/v1/apps/shop')).status, 404, 'deleted for every daemon');
	assert.equal((await a.api('POST', '/v1/apps/shop/notifications', body)).status, 404);

	// Made again through one daemon and used at once through the other: the new app takes the work.
	assert.equal((await b.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
	const fresh = makeTokens(20, 0x72);
	const again = await a.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: fresh, aps: { alert: 'again' } }] });
	assert.equal(again.status, 202, JSON.stringify(again.body));
	await drained(a, ['shop']);
	assert.deepEqual(fresh.map((tk) => mock.counts.get(tk)), fresh.map(() => 1));
});

test('redis: an app whose credentials no longer load keeps its jobs waiting (delayed, backed off, no failed attempt piling up) until a PUT fixes it; then each is sent once', { skip }, async (t) => {
	const mock = await mockApns(t, {}, false);
	const r = await redis(t);
	const d = await serve(t, r.url);
	assert.equal((await d.api('PUT', '/v1/apps/broken', appBody(mock))).status, 200);
	// Its sealed credentials damaged in Redis (another secret's, a bad restore): they no longer open.
	const c = new Redis(r.url);
	t.after(() => c.disconnect());
	const stored = JSON.parse((await c.hget('aw:apps', 'broken'))!) as { sealed: string; updatedAt: string };
	await c.hset('aw:apps', 'broken', JSON.stringify({ ...JSON.parse((await c.hget('aw:apps', 'broken'))!), sealed: `${stored.sealed.slice(0, -8)}AAAAAAA=`, updatedAt: String(Number(stored.updatedAt) + 1) }));
	await c.publish('aw:apps:changed', 'broken');
	await until(async () => ((await d.api('GET', '/v1/apps/broken')).body.state === 'stopped' ? true : undefined), 'the app to be stopped', 200, 25);
	const tokens = makeTokens(300, 0x95);
	assert.equal((await d.api('POST', '/v1/apps/broken/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] })).status, 202);
	const jobId = await until(async () => (await c.zrange('bull:aw-send:delayed', '0', '-1'))[0], 'the job to wait, delayed', 200, 25);
	const [data, attempts, stacktrace] = await c.hmget(`bull:aw-send:${jobId}`, 'data', 'atm', 'stacktrace');
	assert.ok(data !== null, 'the delayed job is stored');
	assert.ok((attempts === null || attempts === '0') && (stacktrace === null || stacktrace === '[]'), `no failed attempt (${attempts}), no stack trace stored (${stacktrace})`);
	assert.equal((await d.api('GET', '/v1/apps/broken')).body.pending, 300, 'kept');
	assert.equal(mock.counts.size, 0);
	// Let it wait out a few delays (1 s, 2 s, 4 s…, BullMQ's score is the due time × 4096): once one has more
	// than 3 s to run, a PUT that starts the app hands the job out at once, not when the delay ends.
	const due = await until(async () => {
		const score = await c.zscore('bull:aw-send:delayed', jobId);
		const at = score === null ? undefined : Math.floor(Number(score) / 4096);
		return at !== undefined && at - Date.now() > 3000 ? at : undefined;
	}, 'a delay of more than 3 s', 800, 25);
	assert.deepEqual(await c.smembers('aw:wait:broken'), [jobId], 'listed as waiting for its app');
	assert.equal((await d.api('PUT', '/v1/apps/broken', appBody(mock))).status, 200, 'fixed');
	await drained(d, ['broken'], 2400);
	assert.ok(Date.now() < due, `sent ${due - Date.now()} ms before its delay ran out: the PUT promoted it`);
	assert.deepEqual([...new Set(tokens.map((tk) => mock.counts.get(tk)))], [1]);
});

test('redis: an update through one daemon reaches the others without a restart (pub/sub), and feedback reaches the app\'s webhook', { skip }, async (t) => {
	const tokens = makeTokens(50, 0x75);
	const gone = [tokens[3]!, tokens[30]!];
	const mock = await mockApns(t, { unregistered: gone });
	const { createServer } = await import('node:http');
	const received: string[] = [];
	const hook = createServer((req, res) => {
		let body = '';
		req.on('data', (c: Buffer) => (body += c.toString()));
		req.on('end', () => {
			// Signed by whichever daemon delivers, with the app's secret: the other daemon opened it too.
			if (!verifySignature(WEBHOOK_SECRET, req.headers['apns-worker-signature'] as string | undefined, body)) return void res.writeHead(400).end();
			received.push(...(JSON.parse(body) as { feedback: Array<{ token: string }> }).feedback.map((f) => f.token));
			res.writeHead(200).end();
		});
	});
	await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
	t.after(() => new Promise<void>((resolve) => hook.close(() => resolve())));
	const webhook = { url: `http://127.0.0.1:${(hook.address() as { port: number }).port}/feedback`, secret: WEBHOOK_SECRET };
	const r = await redis(t);
	const a = await serve(t, r.url, ['--shutdown-timeout', '1']);
	const b = await serve(t, r.url, ['--shutdown-timeout', '1'], { LOG_LEVEL: 'info' });
	// A gateway where nothing listens: what is posted waits.
	assert.equal((await a.api('PUT', '/v1/apps/moved', appBody({ host: '127.0.0.1', port: 9 }, { webhook }))).status, 200);
	assert.equal((await b.api('GET', '/v1/apps/moved')).status, 200, 'the other daemon has loaded it');
	assert.equal((await b.api('POST', '/v1/apps/moved/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] })).status, 202);
	// Fixed through A; then A stops, so only B can send: it must have taken the update without a restart.
	const reloads = logged(b, 'app reloaded').length;
	assert.equal((await a.api('PUT', '/v1/apps/moved', appBody(mock, { webhook }))).status, 200);
	// B is asked nothing meanwhile, and its jobs wait on the dead gateway: only the message makes it reload
	// now (its periodic check runs every 30 s).
	await until(async () => (logged(b, 'app reloaded').length > reloads ? true : undefined), 'B to reload the app on the message', 100, 50);
	a.child.kill('SIGTERM');
	assert.deepEqual(await a.exited, { code: 0, signal: null });
	await drained(b, ['moved']);
	assert.deepEqual(tokens.map((tk) => mock.counts.get(tk) ?? 0), tokens.map((tk) => (gone.includes(tk) ? 0 : 1)), 'each delivered once, through the updated gateway');
	// Up to 40 s: A may have stopped while it held the app's delivery turn (aw:whl, 30 s), which B then waits out.
	await until(async () => (received.length >= gone.length ? true : undefined), 'the webhook to get the feedback', 800, 50);
	assert.deepEqual([...received].sort(), [...gone].sort());
});

test('redis: kill -9 one of two daemons halfway through 20,000 notifications: the other takes its jobs over and sends only what was not settled — 0 lost, duplicates <= in doubt', { skip }, async (t) => {
	// Killed from the mock's own count: at the 10,000th delivery, whatever the machine's speed.
	let kill: () => void = () => {};
	let killedAt = 0;
	const mock = await mockApns(t, { responseDelayMs: 2 }, false, () => {
		if (killedAt === 0 && mock.counts.size >= 10_000) {
			killedAt = mock.counts.size;
			kill();
		}
	});
	const r = await redis(t);
	const args = ['--lock-timeout', '2', '--concurrency', '4'];
	const a = await serve(t, r.url, args);
	const b = await serve(t, r.url, args);
	kill = () => a.child.kill('SIGKILL');
	const apps = ['north', 'south'];
	for (const app of apps) assert.equal((await a.api('PUT', `/v1/apps/${app}`, appBody(mock))).status, 200);
	// 40 requests of 500 tokens, half through each daemon; every token distinct. A request cut off by the
	// kill is sent again through the other daemon (a client's retry).
	const requests = Array.from({ length: 40 }, (_, i) => ({ app: apps[i % 2]!, tokens: makeTokens(500, 0x2000 + i) }));
	await Promise.all(requests.map(async (req, i) => {
		const body = { notifications: [{ tokens: req.tokens, aps: { alert: `batch ${i}` } }] };
		const key = { 'idempotency-key': `batch-${i}` };
		const res = await (i % 2 === 0 ? a : b).api('POST', `/v1/apps/${req.app}/notifications`, body, key).catch(() => undefined);
		if (res?.status !== 202) assert.equal((await b.api('POST', `/v1/apps/${req.app}/notifications`, body, key)).status, 202);
	}));
	await a.exited;
	assert.ok(killedAt > 0 && killedAt < 20_000, `killed before the end (the mock had ${killedAt})`);
	await drained(b, apps);
	const metrics = (await request(b.url, 'GET', '/metrics')).body as string;
	const inDoubt = apps.reduce((sum, app) => sum + metric(metrics, 'apns_worker_in_doubt', app), 0);
	const { lost, duplicates } = tally(mock, requests.flatMap((r) => r.tokens));
	t.diagnostic(`killed with ${killedAt} of 20,000 delivered; taken over in doubt ${inDoubt}; duplicates ${duplicates}; lost ${lost}`);
	assert.equal(lost, 0);
	assert.ok(duplicates <= inDoubt, `duplicates ${duplicates} <= in doubt ${inDoubt}`);
	assert.equal(mock.counts.size, 20_000, 'nothing else was sent');
	assert.ok(inDoubt > 0 && b.output().includes('taking over a job'), 'the takeover happened, counted and logged');
	const c = new Redis(r.url);
	t.after(() => c.disconnect());
	assert.deepEqual(Object.values(await c.hgetall('aw:pending')), ['0', '0'], 'pending counts settle at exactly 0 (each token counted once)');
});

test('redis: Redis goes away and comes back — 503 while it is gone (nothing accepted), then everything is delivered: 0 lost', { skip }, async (t) => {
	// Redis is stopped from the mock's own count, at its 500th request, whose answers take 2 s: the
	// outcomes of what is in flight then come back while Redis is gone.
	let stopped: Promise<void> | undefined;
	let atStop = 0;
	const mock = await mockApns(t, { responseDelayMs: 2000 }, false, () => {
		if (stopped === undefined && mock.counts.size >= 500) {
			atStop = mock.counts.size;
			stopped = r.stop();
		}
	});
	const r = await redis(t, { persist: true });
	const d = await serve(t, r.url, ['--lock-timeout', '2']);
	assert.equal((await d.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
	const before = makeTokens(5000, 0x81);
	assert.equal((await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: before, aps: { alert: 'before' } }] })).status, 202);
	await until(async () => (stopped === undefined ? undefined : true), 'the mock to stop Redis', 400, 25);
	await stopped;
	const refused = await until(async () => {
		const res = await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: makeTokens(1, 0x82), aps: { alert: 'during' } }] });
		return res.status === 503 ? res : undefined;
	}, 'a 503 while Redis is gone', 100, 50);
	assert.equal(refused.body.error, 'storage_unavailable');
	// The first refusals may come from a command that failed before the connection's loss was noticed.
	await until(async () => ((await request(d.url, 'GET', '/healthz')).status === 503 ? true : undefined), '/healthz to answer 503', 100, 50);
	await new Promise((resolve) => setTimeout(resolve, 1500));
	await r.restart();
	await until(async () => ((await request(d.url, 'GET', '/healthz')).status === 200 ? true : undefined), 'the daemon to see Redis again', 400, 50);
	const after = makeTokens(1000, 0x83);
	const res = await until(async () => {
		const p = await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: after, aps: { alert: 'after' } }] });
		return p.status === 202 ? p : undefined;
	}, 'a 202 once Redis is back', 100, 100);
	assert.equal(res.body.accepted, 1000);
	await drained(d, ['shop']).catch(async (error: unknown) => {
		const c = new Redis(r.url);
		const state = await c.pipeline().llen('bull:aw-send:wait').llen('bull:aw-send:active').zcard('bull:aw-send:delayed').zcard('bull:aw-send:failed').zcard('bull:aw-send:prioritized').hgetall('aw:pending').exec();
		c.disconnect();
		const lost = [...before, ...after].filter((tk) => (mock.counts.get(tk) ?? 0) === 0).length;
		t.diagnostic(`queue wait/active/delayed/failed/prioritized/pending: ${JSON.stringify(state?.map((x) => x[1]))}; mock ${mock.counts.size}, unsent ${lost}\n${d.output().slice(-4000)}`);
		throw error;
	});
	const { lost, duplicates } = tally(mock, [...before, ...after]);
	const retried = logged(d, 'cannot record outcomes in Redis yet: retrying').length;
	t.diagnostic(`Redis stopped with ${atStop} of 5,000 at the mock; flushes retried ${retried}; after: lost ${lost}, duplicates ${duplicates}`);
	const inDoubt = metric((await request(d.url, 'GET', '/metrics')).body as string, 'apns_worker_in_doubt', 'shop');
	t.diagnostic(`in doubt ${inDoubt}`);
	assert.ok(retried > 0, 'outcomes came back while Redis was gone, and were recorded once it was back');
	assert.equal(lost, 0);
	assert.ok(duplicates <= inDoubt, `duplicates ${duplicates} <= in doubt ${inDoubt}`);
	assert.equal(mock.counts.get(makeTokens(1, 0x82)[0]!) ?? 0, 0, 'what was refused with 503 was not sent');
	assert.ok(d.output().includes('Redis connection lost'), 'the outage is logged');
});

test('redis: SIGTERM answers 503 at once, exits 0 within the shutdown timeout, and hands its unfinished jobs back to the queue: another daemon sends them, none in doubt', { skip }, async (t) => {
	const mock = await mockApns(t, {}, false);
	const r = await redis(t);
	const a = await serve(t, r.url, ['--shutdown-timeout', '1']);
	// APNs unreachable: the jobs this daemon takes cannot finish.
	assert.equal((await a.api('PUT', '/v1/apps/later', appBody({ host: '127.0.0.1', port: 9 }))).status, 200);
	const tokens = makeTokens(3000, 0x91);
	const post = await a.api('POST', '/v1/apps/later/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] });
	assert.equal(post.status, 202);
	await until(async () => (a.output().includes('cannot reach APNs') ? true : undefined), 'the daemon to try APNs', 400, 25);
	a.child.kill('SIGTERM');
	await until(async () => ((await request(a.url, 'GET', '/healthz').catch(() => undefined))?.status === 503 ? true : undefined), '503 from /healthz', 100, 10);
	const refused = await a.api('POST', '/v1/apps/later/notifications', { notifications: [{ tokens: makeTokens(1, 0x92), aps: {} }] }).catch(() => undefined);
	if (refused !== undefined) assert.deepEqual([refused.status, refused.body.error], [503, 'shutting_down'], 'nothing accepted while shutting down');
	assert.deepEqual(await a.exited, { code: 0, signal: null });
	const b = await serve(t, r.url);
	assert.equal((await b.api('GET', '/v1/apps/later')).body.pending, 3000, 'nothing settled, nothing lost');
	assert.equal((await b.api('PUT', '/v1/apps/later', appBody(mock))).status, 200, 'APNs reachable again');
	await drained(b, ['later']);
	assert.deepEqual([...new Set(tokens.map((tk) => mock.counts.get(tk)))], [1], 'each sent once');
	assert.equal(metric((await request(b.url, 'GET', '/metrics')).body as string, 'apns_worker_in_doubt', 'later'), 0, 'handed back, not taken over from a dead daemon');
});

test('redis: SIGTERM with requests in flight at a slow APNs: what was written and not answered is handed back, sent by the other daemon, and counted in doubt — duplicates <= in doubt, 0 lost', { skip }, async (t) => {
	const mock = await mockApns(t, { responseDelayMs: 3000 }, false);
	const r = await redis(t);
	const a = await serve(t, r.url, ['--shutdown-timeout', '1']);
	assert.equal((await a.api('PUT', '/v1/apps/slow', appBody(mock))).status, 200);
	const tokens = makeTokens(2000, 0x93);
	assert.equal((await a.api('POST', '/v1/apps/slow/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] })).status, 202);
	await until(async () => (mock.counts.size >= 1000 ? true : undefined), 'requests in flight at APNs', 400, 10);
	a.child.kill('SIGTERM');
	assert.deepEqual(await a.exited, { code: 0, signal: null });
	const inDoubt = logged(a, 'job handed back unfinished (its manager closed): the rest is sent by the next run').reduce((sum, entry) => sum + Number(entry['inDoubt']), 0);
	const b = await serve(t, r.url);
	await drained(b, ['slow'], 2400);
	const { lost, duplicates } = tally(mock, tokens);
	t.diagnostic(`handed back in doubt ${inDoubt}; duplicates ${duplicates}; lost ${lost}`);
	assert.equal(lost, 0);
	assert.ok(inDoubt > 0, 'requests were in flight at the handback');
	assert.ok(duplicates <= inDoubt, `duplicates ${duplicates} <= in doubt ${inDoubt}`);
});

test('redis: a half-open link to Redis (nothing answers, nothing closes) is noticed and cut by the daemon itself, idle or not: /healthz and the API answer 503; a DELETE answered 503 is not carried out later; then everything is delivered — 0 lost', { skip }, async (t) => {
	const mock = await mockApns(t, { responseDelayMs: 5 }, false);
	const r = await redis(t);
	const relay = await startRelay(r.port);
	t.after(() => relay.close());
	const d = await serve(t, relay.url, ['--lock-timeout', '5']);
	assert.equal((await d.api('PUT', '/v1/apps/shop', appBody(mock))).status, 200);
	const first = makeTokens(4000, 0xa1);
	assert.equal((await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: first, aps: { alert: 'x' } }] })).status, 202);
	await drained(d, ['shop']);
	// Idle, nothing asked of it: its heartbeat finds the dead link.
	relay.hold();
	await until(async () => ((await request(d.url, 'GET', '/healthz')).status === 503 ? true : undefined), '/healthz to answer 503 while idle (heartbeat 5 s + socket timeout 10 s; the 30 s resync is not needed)', 400, 50);
	const refused = await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: makeTokens(1, 0xa2), aps: {} }] });
	assert.deepEqual([refused.status, refused.body.error], [503, 'storage_unavailable'], 'nothing accepted while the link is dead');
	// The old connections stay open and silent: the daemon must cut each one itself.
	relay.release({ cut: false });
	await until(async () => ((await request(d.url, 'GET', '/healthz')).status === 200 ? true : undefined), 'the daemon to reconnect', 600, 50);

	// A DELETE written into a dead link times out (503). It never reached Redis, and must not reach it
	// later either (a client re-sending it after reconnecting would delete what the caller kept).
	relay.hold();
	const deleted = await d.api('DELETE', '/v1/apps/shop');
	assert.deepEqual([deleted.status, deleted.body.error], [503, 'storage_unavailable']);
	relay.release({ cut: false });
	await until(async () => ((await request(d.url, 'GET', '/healthz')).status === 200 ? true : undefined), 'the daemon to reconnect again', 600, 50);
	const second = makeTokens(1000, 0xa3);
	await until(async () => ((await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens: second, aps: { alert: 'y' } }] })).status === 202 ? true : undefined), 'a 202 once every link is made again', 200, 100);
	await drained(d, ['shop'], 2400);
	assert.equal((await d.api('GET', '/v1/apps/shop')).status, 200, 'the app the client was told was not deleted is still there');
	const inDoubt = metric((await request(d.url, 'GET', '/metrics')).body as string, 'apns_worker_in_doubt', 'shop');
	const { lost, duplicates } = tally(mock, [...first, ...second]);
	t.diagnostic(`in doubt ${inDoubt}; duplicates ${duplicates}; lost ${lost}`);
	assert.equal(lost, 0);
	assert.ok(duplicates <= inDoubt, `duplicates ${duplicates} <= in doubt ${inDoubt}`);
	assert.equal(mock.counts.get(makeTokens(1, 0xa2)[0]!) ?? 0, 0, 'what was refused was not sent');
});

test('redis: DELETE while an app\'s jobs are in flight and queued: the rest is dropped, not sent; its jobs, progress and outcomes leave Redis', { skip }, async (t) => {
	const mock = await mockApns(t, { responseDelayMs: 3000 }, false);
	const r = await redis(t);
	const d = await serve(t, r.url, ['--concurrency', '2']);
	assert.equal((await d.api('PUT', '/v1/apps/gone', appBody(mock))).status, 200);
	// 4 jobs of 5,000: 2 in flight at APNs (answers take 3 s), 2 queued.
	const tokens = makeTokens(20_000, 0xb1);
	const post = await d.api('POST', '/v1/apps/gone/notifications', { notifications: [{ tokens: tokens.slice(0, 10_000), aps: { alert: 'x' } }, { tokens: tokens.slice(10_000), aps: { alert: 'y' } }] });
	assert.equal(post.status, 202);
	await until(async () => (mock.counts.size >= 1000 ? true : undefined), 'requests in flight at APNs', 400, 10);
	const deleted = await d.api('DELETE', '/v1/apps/gone');
	assert.equal(deleted.status, 200);
	assert.equal(deleted.body.dropped, 20_000, 'nothing had settled: every token dropped');
	const c = new Redis(r.url);
	t.after(() => c.disconnect());
	await until(async () => {
		const [wait, active, delayed] = (await c.pipeline().llen('bull:aw-send:wait').llen('bull:aw-send:active').zcard('bull:aw-send:delayed').exec())!.map((x) => x[1] as number);
		return wait! + active! + delayed! === 0 ? true : undefined;
	}, 'the queue to be empty', 400, 50);
	const sent = mock.counts.size;
	assert.ok(sent <= 10_000, `at most the two jobs in flight reached APNs (${sent})`);
	const left = (await c.keys('aw:*')).filter((k) => k.startsWith('aw:p:') || k.startsWith('aw:n:') || k.startsWith('aw:nf:') || k.startsWith('aw:fb:'));
	assert.deepEqual(left, [], 'no progress or outcome of the deleted app is left');
	assert.equal((await c.hlen('aw:pending')), 0);
	assert.equal((await d.api('GET', `/v1/apps/gone/notifications/${post.body.ids[0]}`)).status, 404);
	assert.equal((await d.api('PUT', '/v1/apps/gone', appBody(mock))).status, 200, 'made again');
	assert.equal((await d.api('GET', `/v1/apps/gone/notifications/${post.body.ids[1]}`)).status, 404, 'the new app has none of the old one\'s notifications');
});

test('redis: a daemon refuses to start without APNS_WORKER_SECRET or APNS_WORKER_API_KEY, with another secret than the deployment\'s, or without a Redis to reach (exit 2, no secret printed)', { skip }, async (t) => {
	const r = await redis(t);
	const first = await serve(t, r.url);
	assert.equal((await first.api('GET', '/v1/apps')).status, 200);
	for (const [env, expected] of [
		[{ APNS_WORKER_SECRET: undefined }, /APNS_WORKER_SECRET is required with --redis/],
		[{ APNS_WORKER_API_KEY: undefined }, /APNS_WORKER_API_KEY .* is required with --redis/],
		[{ APNS_WORKER_SECRET: 'another-secret-0123456789' }, /not the secret the credentials in Redis/],
	] as const) {
		const started = serve(t, r.url, [], env);
		const error = await started.then(() => undefined, (e: Error) => e);
		assert.ok(error !== undefined && expected.test(error.message) && error.message.includes("exited (code 2)"), `refused with exit 2: ${error?.message}`);
		assert.ok(!error.message.includes(SECRET) && !error.message.includes('another-secret'), 'the secret is not printed');
	}
	const unreachable = await serve(t, 'redis://127.0.0.1:9').then(() => undefined, (e: Error) => e);
	assert.match(unreachable?.message ?? '', /cannot reach Redis at redis:\/\/127\.0\.0\.1:9/);
	const withData = await startDaemon(t, '/tmp', { args: ['--redis', r.url] }).then(() => undefined, (e: Error) => e);
	assert.match(withData?.message ?? '', /--data is the embedded store/);
	assert.ok(API_KEY.length >= 16);
});

test('redis: serve --redis never loads better-sqlite3 (unresolvable here): it starts, provisions and delivers; the embedded store, on the same machine, says what to install', { skip }, async (t) => {
	const r = await redis(t);
	const mock = await mockApns(t);
	const d = await startDaemon(t, undefined, { args: ['--redis', r.url], nodeArgs: without('better-sqlite3') });
	assert.equal((await d.api('PUT', '/v1/apps/nosqlite', appBody(mock))).status, 200);
	const tokens = makeTokens(50, 120);
	assert.equal((await d.api('POST', '/v1/apps/nosqlite/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] })).status, 202);
	await drained(d, ['nosqlite']);
	assert.deepEqual(tally(mock, tokens), { lost: 0, duplicates: 0 });
	// The hook works: the embedded store cannot start without the package, and says which to install.
	const embedded = await startDaemon(t, dataDir(t), { nodeArgs: without('better-sqlite3') }).then(() => undefined, (e: Error) => e);
	assert.match(embedded?.message ?? '', /npm install better-sqlite3@/);
});

test('redis: outcomes recorded twice for one job (a daemon taken for dead that was not) count each token once', { skip }, async (t) => {
	const r = await redis(t);
	const client = new Redis(r.url);
	t.after(() => client.disconnect());
	const store = new RedisStore(client, 60_000);
	const { app } = await store.putApp('a1', '{}', undefined, Date.now());
	const g1 = app.gen;
	const job = { id: 'job-1', app: 'a1', gen: g1, notification: 'n1', count: 10, keyed: false };
	assert.equal(await store.accepted('a1', 'another-gen', [{ id: 'n1', total: 10 }]), false, 'nothing recorded for an app deleted and made again meanwhile');
	assert.equal(await store.accepted('a1', g1, [{ id: 'n1', total: 10 }]), true);
	const sent = new Uint8Array(2);
	for (const i of [0, 1, 2, 3]) sent[i >> 3]! |= 1 << (i & 7);
	const failure = { index: 4, token: 'aa'.repeat(32), status: 410, reason: 'Unregistered', feedbackAt: 1_700_000_000_000 };
	assert.deepEqual(await store.settle(job, sent, [failure], Date.now()), { sent: 4, failed: [failure], feedback: 1 });
	// The zombie run records the same tokens, and two more.
	const again = new Uint8Array(2);
	for (const i of [0, 1, 2, 3, 5, 9]) again[i >> 3]! |= 1 << (i & 7);
	const bad = { ...failure, index: 6, feedbackAt: undefined, status: 400, reason: 'BadDeviceToken' };
	assert.deepEqual(await store.settle(job, again, [failure, bad], Date.now()), { sent: 2, failed: [bad], feedback: 0 });
	const status = await store.status(g1, 'n1');
	assert.deepEqual([status?.total, status?.sent, status?.failed, status?.failures.map((f) => f.reason)], [10, 6, 2, ['Unregistered', 'BadDeviceToken']]);
	assert.deepEqual(await store.pending([g1]), [2]);
	for (const key of [`aw:n:${g1}:n1`, `aw:nf:${g1}:n1`, 'aw:p:job-1']) assert.ok((await client.ttl(key)) > 29 * 86_400, `unsettled: ${key} kept 30 days from its last news, not the 60 s retention`);
	const progress = await store.progress('job-1');
	assert.deepEqual([...progress!], [0b0111_1111, 0b10]);
	assert.deepEqual((await store.readFeedback(g1, 0, 10)).map((f) => [f.seq, f.reason, f.when]), [[1, 'Unregistered', 1_700_000_000_000]]);

	// Jobs are added before their acceptance is recorded: outcomes that come first are not counted twice,
	// and recording an acceptance again (a retry with the same Idempotency-Key) changes nothing.
	const quick = { id: 'job-2', app: 'a1', gen: g1, notification: 'n2', count: 5, keyed: false };
	assert.deepEqual(await store.settle(quick, Uint8Array.of(0b111), [], Date.now()), { sent: 3, failed: [], feedback: 0 });
	assert.deepEqual(await store.pending([g1]), [2], 'not pending before it is recorded');
	await store.accepted('a1', g1, [{ id: 'n2', total: 5 }]);
	await store.accepted('a1', g1, [{ id: 'n2', total: 5 }]);
	assert.deepEqual(await store.pending([g1]), [4], 'its 2 unsettled tokens, once');
	await store.settle(quick, Uint8Array.of(0b11111), [], Date.now());
	assert.deepEqual(await store.pending([g1]), [2]);
	assert.deepEqual((await store.status(g1, 'n2'))?.sent, 5);
	for (const key of [`aw:n:${g1}:n2`, 'aw:p:job-2']) {
		const ttl = await client.ttl(key);
		assert.ok(ttl > 0 && ttl <= 60, `settled: ${key} expires with the retention (${ttl} s)`);
	}
	// Outcomes recorded before the acceptance, and never accepted (the request failed after its jobs were
	// added): kept 30 days, then gone. Failures recorded first expire with the retention once it settles.
	const early = { id: 'job-4', app: 'a1', gen: g1, notification: 'n4', count: 2, keyed: false };
	await store.settle(early, Uint8Array.of(0b1), [{ index: 1, token: 'bb'.repeat(32), status: 400, reason: 'BadDeviceToken', feedbackAt: undefined }], Date.now());
	assert.ok((await client.ttl(`aw:n:${g1}:n4`)) > 29 * 86_400 && (await client.ttl(`aw:nf:${g1}:n4`)) > 29 * 86_400);
	await store.accepted('a1', g1, [{ id: 'n4', total: 2 }]);
	for (const key of [`aw:n:${g1}:n4`, `aw:nf:${g1}:n4`]) assert.ok((await client.ttl(key)) <= 60, `${key}: settled when accepted, kept for the retention`);
	// A keyed job (its id comes back when the request is retried) keeps its progress for the retention; the
	// others for an hour at most (here the 60 s retention is shorter).
	const keyed = { id: 'k.0.0', app: 'a1', gen: g1, notification: 'n5', count: 1, keyed: true };
	await store.settle(keyed, Uint8Array.of(1), [], Date.now());
	assert.ok((await client.ttl('aw:p:k.0.0')) <= 60);
	const long = new RedisStore(client, 7 * 86_400_000);
	await long.settle({ ...quick, id: 'job-6' }, Uint8Array.of(0b11111), [], Date.now());
	await long.settle({ ...keyed, id: 'k.0.1' }, Uint8Array.of(1), [], Date.now());
	assert.ok((await client.ttl('aw:p:job-6')) <= 3600 && (await client.ttl('aw:p:k.0.1')) > 6 * 86_400, 'unkeyed: an hour; keyed: the retention');
	// Outcomes that come back after the app's DELETE (a run that lost its lock, a flush retried while Redis
	// was away) record nothing: no count, no pending count brought back negative, no feedback re-created.
	await store.deleteApp('a1');
	assert.deepEqual(await store.settle(job, Uint8Array.of(0, 0b01), [{ ...failure, index: 7 }], Date.now()), { sent: 0, failed: [], feedback: 0 });
	assert.deepEqual([await client.hexists('aw:pending', g1), await client.exists(`aw:fb:${g1}`), await client.hexists('aw:fbseq', g1)], [0, 0, 0]);
	assert.equal((await store.status(g1, 'n1'))?.sent, 6, 'not counted');
	// A job dropped because its app is gone takes its progress and its notification's outcomes with it.
	await store.forgetJob(job);
	assert.deepEqual(await client.exists('aw:p:job-1', `aw:n:${g1}:n1`, `aw:nf:${g1}:n1`), 0);

	// Unread feedback stored before the retention's start is pruned; with a webhook, only what it has.
	const g2 = (await store.putApp('a2', '{}', undefined, Date.now())).app.gen;
	const old = { id: 'job-3', app: 'a2', gen: g2, notification: 'n3', count: 3, keyed: false };
	const dead = (index: number) => ({ index, token: String(index).repeat(64), status: 410, reason: 'Unregistered', feedbackAt: 1 });
	await store.settle(old, new Uint8Array(1), [dead(0), dead(1)], 1000);
	await store.settle(old, new Uint8Array(1), [dead(2)], 5000);
	assert.equal(await store.pruneFeedback(g2, 2000, true), 0, 'held for the webhook');
	await store.webhookDelivered(g2, 1);
	assert.equal(await store.pruneFeedback(g2, 2000, true), 1, 'what the webhook has');
	assert.equal(await store.pruneFeedback(g2, 2000, false), 1, 'without a webhook, every old one');
	assert.deepEqual((await store.readFeedback(g2, 0, 10)).map((f) => [f.seq, f.token]), [[3, '2'.repeat(64)]], 'the young one stays');

	// One daemon at a time delivers an app's webhook: a turn is taken, extended by its owner, given up.
	assert.equal(await store.webhookClaim(g2, 'daemon-a'), true);
	assert.equal(await store.webhookClaim(g2, 'daemon-b'), false, 'another daemon has the turn');
	assert.equal(await store.webhookClaim(g2, 'daemon-a'), true, 'extended by its owner');
	await store.webhookRelease(g2, 'daemon-b');
	assert.equal(await store.webhookClaim(g2, 'daemon-b'), false, 'only its owner gives it up');
	await store.webhookRelease(g2, 'daemon-a');
	assert.equal(await store.webhookClaim(g2, 'daemon-b'), true);
	const turn = await client.pttl(`aw:whl:${g2}`);
	assert.ok(turn > 0 && turn <= 30_000, 'a daemon that dies holding it gives it up within 30 s');
});
