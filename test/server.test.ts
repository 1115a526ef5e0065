/**
 * `apns-worker serve` as users run it: the real daemon in a child process, its SQLite file in a
 * temporary directory, an HTTP/2 mock APNs on 127.0.0.1. Every test counts what the mock received.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { certs, makeTokens } from './support/helpers.js';
import { API_KEY, appBody, dataDir, mockApns, P8, request, SECRET, startDaemon, tally, until, verifySignature, WEBHOOK_SECRET } from './support/daemon.js';

/** Send a POST's headers announcing `bytes` of JSON, no body; the answer the daemon gives from them alone. */
async function announceBody(url: string, path: string, bytes: number): Promise<{ status: number; body: string }> {
	const { request: httpRequest } = await import('node:http');
	return new Promise((resolve, reject) => {
		const req = httpRequest(url + path, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json', 'content-length': bytes } }, (res) => {
			let text = '';
			res.on('data', (c: Buffer) => (text += c.toString()));
			res.on('end', () => {
				resolve({ status: res.statusCode ?? 0, body: text });
				req.destroy();
			});
		});
		req.on('error', reject);
		req.flushHeaders();
	});
}

/** Wait until notification `id` of `app` has nothing pending; its status. */
async function settled(d: Awaited<ReturnType<typeof startDaemon>>, app: string, id: string): Promise<{ pending: number; sent: number; failed: Array<{ token: string; status: number; reason: string }> }> {
	return until(async () => {
		const r = await d.api('GET', `/v1/apps/${app}/notifications/${id}`);
		assert.equal(r.status, 200, JSON.stringify(r.body));
		return r.body.pending === 0 ? r.body : undefined;
	}, `notification ${id} to settle`);
}

test('serve: provisioning survives a restart (the pyapns scenario); the app view never holds a secret; the credentials are encrypted on disk', async (t) => {
	const mock = await mockApns(t);
	const dir = dataDir(t);
	let d = await startDaemon(t, dir, { env: { LOG_LEVEL: 'debug' } });
	const put = await d.api('PUT', '/v1/apps/shop', appBody(mock));
	assert.equal(put.status, 200, JSON.stringify(put.body));
	assert.deepEqual([put.body.id, put.body.environment, put.body.topic, put.body.auth, put.body.keyId, put.body.teamId], ['shop', 'production', 'com.example.daemon', 'token', P8.keyId, P8.teamId]);
	assert.equal(statSync(join(dir, 'apns-worker.db')).mode & 0o777, 0o600, 'the database is for the daemon\'s user only');
	const again = await d.api('PUT', '/v1/apps/shop', appBody(mock));
	assert.equal(again.status, 200, 'idempotent: an update');
	for (const view of [put.body, again.body, (await d.api('GET', '/v1/apps/shop')).body, (await d.api('GET', '/v1/apps')).body]) {
		const text = JSON.stringify(view);
		assert.ok(!text.includes('PRIVATE KEY') && !text.includes(P8.key.split('\n')[1]!), 'no secret in the API');
	}
	d.child.kill('SIGTERM');
	assert.deepEqual(await d.exited, { code: 0, signal: null });
	assert.ok(d.output().includes('app provisioned'), 'the debug log was written');
	assert.ok(!d.output().includes(P8.key.split('\n')[1]!) && !d.output().includes(SECRET) && !d.output().includes(API_KEY), 'no secret in the log');
	const db = readFileSync(join(dir, 'apns-worker.db'));
	const wal = (() => {
		try {
			return readFileSync(join(dir, 'apns-worker.db-wal'));
		} catch {
			return Buffer.alloc(0);
		}
	})();
	for (const bytes of [db, wal]) assert.equal(bytes.indexOf(P8.key.split('\n')[1]!), -1, 'the key is not stored in the clear');

	d = await startDaemon(t, dir);
	const list = await d.api('GET', '/v1/apps');
	assert.deepEqual(list.body.apps.map((a: { id: string; state: string }) => [a.id, a.state]), [['shop', 'sending']]);
	const tokens = makeTokens(3, 0x51);
	const post = await d.api('POST', '/v1/apps/shop/notifications', { notifications: [{ tokens, aps: { alert: 'after restart' } }] });
	assert.equal(post.status, 202, JSON.stringify(post.body));
	assert.equal(post.body.accepted, 3);
	const s = await settled(d, 'shop', post.body.ids[0]);
	assert.deepEqual([s.sent, s.failed], [3, []]);
	assert.deepEqual(tokens.map((tk) => mock.counts.get(tk)), [1, 1, 1], 'sent with the credentials restored from the store');
});

test('serve: every /v1 route refuses a missing or wrong API key (401); /healthz, /metrics and /openapi.json are open; an API key is generated once, mode 0600', async (t) => {
	const dir = dataDir(t);
	const d = await startDaemon(t, dir, { env: { APNS_WORKER_API_KEY: undefined } });
	const keyFile = join(dir, 'api-key');
	const key = readFileSync(keyFile, 'utf8').trim();
	assert.equal(statSync(keyFile).mode & 0o777, 0o600);
	assert.ok(d.output().includes(key), 'printed once at first start');
	const routes: Array<[string, string]> = [['GET', '/v1/apps'], ['PUT', '/v1/apps/a'], ['GET', '/v1/apps/a'], ['DELETE', '/v1/apps/a'], ['POST', '/v1/apps/a/notifications'], ['GET', '/v1/apps/a/notifications/00000000-0000-4000-8000-000000000000'], ['GET', '/v1/apps/a/feedback'], ['POST', '/v1/apps/a/feedback/ack']];
	for (const [method, path] of routes) {
		for (const headers of [{}, { authorization: 'Bearer wrong-key-0123456789' }, { authorization: key }] as Array<Record<string, string>>) {
			const r = await request(d.url, method, path, method === 'PUT' || method === 'POST' ? {} : undefined, headers);
			assert.equal(r.status, 401, `${method} ${path} ${JSON.stringify(headers)}`);
		}
	}
	assert.equal((await request(d.url, 'GET', '/v1/apps', undefined, { authorization: `Bearer ${key}` })).status, 200);
	// The router decodes paths: an encoded /v1 is the same route, and needs the key just the same.
	for (const path of ['/%761/apps', '/v%31/apps', '/%76%31/apps/a', '/v1/%61pps']) {
		assert.equal((await request(d.url, 'GET', path)).status, 401, path);
		assert.equal((await request(d.url, 'GET', path, undefined, { authorization: `Bearer ${key}` })).status, path.endsWith('/a') ? 404 : 200, path);
	}
	assert.equal((await request(d.url, 'PUT', '/%761/apps/evil', {})).status, 401);
	assert.equal((await request(d.url, 'GET', '/healthz')).status, 200);
	assert.equal((await request(d.url, 'GET', '/metrics')).status, 200);
	const openapi = await request(d.url, 'GET', '/openapi.json');
	assert.equal(openapi.status, 200);
	assert.ok(Object.keys(openapi.body.paths).includes('/v1/apps/{appId}/notifications'));
	d.child.kill('SIGTERM');
	await d.exited;
	const second = await startDaemon(t, dir, { env: { APNS_WORKER_API_KEY: undefined } });
	assert.ok(!second.output().includes(key), 'not printed again');
	assert.equal((await request(second.url, 'GET', '/v1/apps', undefined, { authorization: `Bearer ${key}` })).status, 200, 'the same key after a restart');
});

test('serve: outcomes per notification — delivered, rejected, 410 as feedback (reading deletes nothing; acknowledged, then gone; a cursor never handed out is 409); the mock received exactly the set', async (t) => {
	const tokens = makeTokens(6, 0x52);
	const gone = tokens[4]!;
	const mock = await mockApns(t, { unregistered: new Map([[gone, new Date(1_700_000_000_000)]]) });
	const d = await startDaemon(t, dataDir(t));
	assert.equal((await d.api('PUT', '/v1/apps/news', appBody(mock))).status, 200);
	const post = await d.api('POST', '/v1/apps/news/notifications', {
		notifications: [
			{ tokens: tokens.slice(0, 3), aps: { alert: 'one' }, collapseId: 'c1', priority: 5 },
			{ tokens: tokens.slice(3), payload: { custom: 1, aps: { badge: 2 } }, pushType: 'alert' },
		],
	});
	assert.equal(post.status, 202, JSON.stringify(post.body));
	assert.deepEqual(post.body.accepted, 6);
	const [a, b] = [await settled(d, 'news', post.body.ids[0]), await settled(d, 'news', post.body.ids[1])];
	assert.deepEqual([a.sent, a.failed], [3, []]);
	assert.deepEqual([b.sent, b.failed], [2, [{ token: gone, status: 410, reason: 'Unregistered' }]]);
	assert.deepEqual(tokens.map((tk) => mock.counts.get(tk) ?? 0), [1, 1, 1, 1, 0, 1]);
	const first = mock.received.find((r) => r.token === tokens[0]);
	assert.deepEqual([first?.collapseId, first?.priority, JSON.parse(first!.payload)], ['c1', '5', { aps: { alert: 'one' } }]);
	const fb = await d.api('GET', '/v1/apps/news/feedback');
	assert.deepEqual(fb.body.feedback, [{ token: gone, when: new Date(1_700_000_000_000).toISOString(), reason: 'Unregistered' }]);
	const past = await d.api('GET', `/v1/apps/news/feedback?after=${fb.body.next}`);
	assert.deepEqual([past.body.feedback, past.body.next], [[], fb.body.next]);
	assert.equal((await d.api('GET', '/v1/apps/news/feedback?after=999999999999999')).body.feedback.length, 0);
	// HEAD would run the GET's handler: there is none (and it must not mark anything handed out).
	assert.equal((await request(d.url, 'HEAD', '/v1/apps/news/feedback', undefined, { authorization: `Bearer ${API_KEY}` })).status, 404);
	assert.equal((await d.api('GET', '/v1/apps/news/feedback')).body.feedback.length, 1, 'read past (even far past): nothing deleted');
	const ahead = await d.api('POST', '/v1/apps/news/feedback/ack', { upTo: 999_999_999_999_999 });
	assert.deepEqual([ahead.status, ahead.body.error, ahead.body.field], [409, 'not_handed_out', 'body/upTo']);
	assert.equal((await d.api('GET', '/v1/apps/news/feedback')).body.feedback.length, 1, 'a cursor never handed out deletes nothing');
	assert.deepEqual((await d.api('POST', '/v1/apps/news/feedback/ack', { upTo: fb.body.next })).body, { acknowledged: fb.body.next });
	assert.deepEqual((await d.api('GET', '/v1/apps/news/feedback')).body.feedback, [], 'acknowledged: gone');
	const metrics = (await request(d.url, 'GET', '/metrics')).body as string;
	assert.match(metrics, /apns_worker_accepted_total\{app="news"\} 6/);
	assert.match(metrics, /apns_worker_delivered_total\{app="news"\} 5/);
	assert.match(metrics, /apns_worker_failed_total\{app="news",reason="Unregistered"\} 1/);
	assert.match(metrics, /apns_worker_pending\{app="news"\} 0/);
});

test('serve: an Idempotency-Key makes a retried POST return the first answer, and nothing is sent twice', async (t) => {
	const mock = await mockApns(t);
	const d = await startDaemon(t, dataDir(t));
	await d.api('PUT', '/v1/apps/a1', appBody(mock));
	const tokens = makeTokens(4, 0x53);
	const body = { notifications: [{ tokens, aps: { alert: 'once' } }] };
	const first = await d.api('POST', '/v1/apps/a1/notifications', body, { 'idempotency-key': 'order-17' });
	const second = await d.api('POST', '/v1/apps/a1/notifications', body, { 'idempotency-key': 'order-17' });
	assert.deepEqual([first.status, second.status], [202, 202]);
	assert.deepEqual(second.body, first.body);
	await settled(d, 'a1', first.body.ids[0]);
	const other = await d.api('POST', '/v1/apps/a1/notifications', body, { 'idempotency-key': 'order-18' });
	await settled(d, 'a1', other.body.ids[0]);
	assert.deepEqual(tokens.map((tk) => mock.counts.get(tk)), [2, 2, 2, 2], 'once per key');
});

test('serve: bad input of every kind is a 4xx naming the field; what was accepted before is still delivered and the daemon keeps serving', async (t) => {
	const mock = await mockApns(t);
	const d = await startDaemon(t, dataDir(t));
	await d.api('PUT', '/v1/apps/ok', appBody(mock));
	const good = makeTokens(2, 0x54);
	const accepted = await d.api('POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: good, aps: { alert: 'kept' } }] });
	assert.equal(accepted.status, 202);
	const token = makeTokens(1, 0x55)[0]!;
	const cases: Array<[string, string, string, unknown, number, string]> = [
		['malformed JSON', 'POST', '/v1/apps/ok/notifications', '{"notifications": [', 400, 'body'],
		['wrong type', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [token], aps: { alert: 'x' }, priority: '10' }] }, 400, 'body/notifications/0/priority'],
		['unknown field', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [token], aps: {}, sound: 'x' }] }, 400, 'body/notifications/0/sound'],
		['bad token', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [token, 'xyz'], aps: {} }] }, 400, 'body/notifications/0/tokens/1'],
		['no tokens', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [], aps: {} }] }, 400, 'body/notifications/0/tokens'],
		['missing notifications', 'POST', '/v1/apps/ok/notifications', {}, 400, 'body/notifications'],
		['no aps nor payload', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [token] }] }, 400, 'body/notifications/0'],
		['oversize payload', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [token], aps: { alert: 'x'.repeat(5000) } }] }, 400, 'body/notifications/0/payload'],
		['bad push type', 'POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: [token], aps: {}, pushType: 'loud' }] }, 400, 'body/notifications/0/pushType'],
		['unknown app', 'POST', '/v1/apps/nope/notifications', { notifications: [{ tokens: [token], aps: {} }] }, 404, 'appId'],
		['bad app id', 'PUT', '/v1/apps/bad%20id!', appBody(mock), 400, 'params/appId'],
		['app id too long', 'GET', `/v1/apps/${'a'.repeat(65)}`, undefined, 400, 'params/appId'],
		['app without credentials', 'PUT', '/v1/apps/x', { environment: 'production', topic: 'a.b' }, 400, 'body'],
		['app with two kinds of credentials', 'PUT', '/v1/apps/x', { ...appBody(mock), cert: certs().client.cert, key: certs().client.key }, 400, 'body'],
		['bad environment', 'PUT', '/v1/apps/x', appBody(mock, { environment: 'staging' }), 400, 'body/environment'],
		['bad key id', 'PUT', '/v1/apps/x', appBody(mock, { token: { ...P8, keyId: 'short' } }), 400, 'body/token/keyId'],
		['a key that is a path', 'PUT', '/v1/apps/x', appBody(mock, { token: { ...P8, key: '/dev/zero' } }), 400, 'body/token/key'],
		['a certificate that is a path', 'PUT', '/v1/apps/x', { environment: 'production', cert: '/etc/passwd', key: certs().client.key }, 400, 'body/cert'],
		['a key that is not a key', 'PUT', '/v1/apps/x', appBody(mock, { token: { ...P8, key: '-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n' } }), 400, 'body/token/key'],
		['unknown app field', 'PUT', '/v1/apps/x', appBody(mock, { colour: 'red' }), 400, 'body/colour'],
		['webhook URL with credentials', 'PUT', '/v1/apps/x', appBody(mock, { webhook: { url: 'https://user:hunter2@example.com/hook', secret: WEBHOOK_SECRET } }), 400, 'body/webhook/url'],
		['webhook without a secret', 'PUT', '/v1/apps/x', appBody(mock, { webhook: { url: 'https://example.com/hook' } }), 400, 'body/webhook/secret'],
		['webhook secret too short', 'PUT', '/v1/apps/x', appBody(mock, { webhook: { url: 'https://example.com/hook', secret: 'short' } }), 400, 'body/webhook/secret'],
		['feedback limit', 'GET', '/v1/apps/ok/feedback?limit=5000', undefined, 400, 'querystring/limit'],
		['unknown notification', 'GET', '/v1/apps/ok/notifications/00000000-0000-4000-8000-000000000000', undefined, 404, 'notificationId'],
	];
	for (const [what, method, path, body, status, field] of cases) {
		const r = await d.api(method, path, body);
		assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
		assert.equal(r.body.field, field, `${what}: ${JSON.stringify(r.body)}`);
		assert.ok(typeof r.body.message === 'string' && r.body.message.length > 0, what);
		assert.ok(!JSON.stringify(r.body).includes('hunter2'), `${what}: a password is never echoed`);
	}
	assert.ok(!d.output().includes('hunter2'), 'nor logged');
	// A body over the limit is answered 413 from its content-length, before it is read (and the connection
	// closed, so a client still uploading may see a reset first): announce it and wait for the answer.
	const big = await announceBody(d.url, '/v1/apps/ok/notifications', 9 * 1024 * 1024);
	assert.equal(big.status, 413, big.body);
	assert.equal(JSON.parse(big.body).field, 'body');
	assert.equal((await d.api('GET', '/v1/apps/x')).status, 404, 'no bad app was stored');
	const s = await settled(d, 'ok', accepted.body.ids[0]);
	assert.equal(s.sent, 2);
	assert.deepEqual(good.map((tk) => mock.counts.get(tk)), [1, 1]);
	assert.equal(mock.counts.get(token), undefined, 'nothing of a refused request was sent');
});

test('serve: without APNS_WORKER_SECRET no credentials are stored (403) unless --insecure-plaintext-secrets; a wrong secret refuses to start', async (t) => {
	const mock = await mockApns(t);
	const dir = dataDir(t);
	let d = await startDaemon(t, dir, { env: { APNS_WORKER_SECRET: undefined } });
	const refused = await d.api('PUT', '/v1/apps/a', appBody(mock));
	assert.equal(refused.status, 403, JSON.stringify(refused.body));
	assert.match(refused.body.message, /APNS_WORKER_SECRET/);
	d.child.kill('SIGTERM');
	await d.exited;
	d = await startDaemon(t, dir);
	assert.equal((await d.api('PUT', '/v1/apps/a', appBody(mock))).status, 200);
	d.child.kill('SIGTERM');
	await d.exited;
	for (const env of [{ APNS_WORKER_SECRET: 'another-secret-0123456789' }, { APNS_WORKER_SECRET: undefined }]) {
		await assert.rejects(startDaemon(t, dir, { env, args: ['--insecure-plaintext-secrets'] }), (error: Error) => {
			assert.match(error.message, /exited \(code 2\)/);
			assert.match(error.message, /APNS_WORKER_SECRET/);
			assert.ok(!error.message.includes(SECRET), 'the secret is never printed');
			return true;
		});
	}
	const plainDir = dataDir(t);
	d = await startDaemon(t, plainDir, { env: { APNS_WORKER_SECRET: undefined }, args: ['--insecure-plaintext-secrets'] });
	assert.equal((await d.api('PUT', '/v1/apps/a', appBody(mock))).status, 200);
	assert.match(d.output(), /unencrypted/);
});

test('serve: DELETE drops an app and what it had pending', async (t) => {
	const d = await startDaemon(t, dataDir(t));
	// A gateway that is not there: what is posted stays pending.
	await d.api('PUT', '/v1/apps/gone', appBody({ host: '127.0.0.1', port: 9 }));
	await d.api('POST', '/v1/apps/gone/notifications', { notifications: [{ tokens: makeTokens(3, 0x56), aps: { alert: 'x' } }] });
	const del = await d.api('DELETE', '/v1/apps/gone');
	assert.deepEqual([del.status, del.body], [200, { dropped: 3 }]);
	assert.equal((await d.api('GET', '/v1/apps/gone')).status, 404);
	assert.equal((await d.api('GET', '/v1/apps')).body.apps.length, 0);
});

test('serve: SIGTERM answers 503 while it flushes, exits 0 within the shutdown timeout, and keeps what it could not send for the next start', async (t) => {
	const dir = dataDir(t);
	let d = await startDaemon(t, dir, { args: ['--shutdown-timeout', '2'] });
	await d.api('PUT', '/v1/apps/later', appBody({ host: '127.0.0.1', port: 9 }));
	// More than the manager takes before it is full (the dispatcher then waits for room it never gets).
	const post = await d.api('POST', '/v1/apps/later/notifications', { notifications: [{ tokens: makeTokens(6000, 0x57), aps: { alert: 'x' } }] });
	assert.equal(post.status, 202);
	d.child.kill('SIGTERM');
	const health = await until(async () => {
		const r = await request(d.url, 'GET', '/healthz').catch(() => undefined);
		return r?.status === 503 ? r : undefined;
	}, '503 from /healthz', 100, 10);
	assert.equal(health.body.status, 'shutting_down');
	const refused = await d.api('POST', '/v1/apps/later/notifications', { notifications: [{ tokens: makeTokens(1, 0x58), aps: {} }] }).catch(() => undefined);
	if (refused !== undefined) assert.equal(refused.status, 503, 'nothing accepted while shutting down');
	assert.deepEqual(await d.exited, { code: 0, signal: null });
	d = await startDaemon(t, dir);
	const app = await d.api('GET', '/v1/apps/later');
	assert.equal(app.body.pending, 6000, 'kept for the next start');
	const s = await d.api('GET', `/v1/apps/later/notifications/${post.body.ids[0]}`);
	assert.deepEqual([s.body.pending, s.body.sent], [6000, 0]);
});

test('serve: kill -9 in the middle of 50,000 notifications across 3 apps, restart: 0 lost, duplicates <= the in-doubt count; a POST whose answer was lost is retried with its Idempotency-Key', async (t) => {
	const mock = await mockApns(t, {}, false);
	const dir = dataDir(t);
	let d = await startDaemon(t, dir);
	const apps = ['alpha', 'beta', 'gamma'];
	for (const app of apps) assert.equal((await d.api('PUT', `/v1/apps/${app}`, appBody(mock))).status, 200);
	// 100 requests of 500 tokens, the apps in turn; every token distinct.
	const requests = Array.from({ length: 100 }, (_, i) => ({ app: apps[i % 3]!, key: `batch-${i}`, tokens: makeTokens(500, 0x1000 + i) }));
	const confirmed = new Set<number>();
	let killedAt: number | undefined;
	for (let i = 0; i < requests.length; i++) {
		const r = requests[i]!;
		const res = await d.api('POST', `/v1/apps/${r.app}/notifications`, { notifications: [{ tokens: r.tokens, aps: { alert: `batch ${i}` } }] }, { 'idempotency-key': r.key }).catch(() => undefined);
		if (res?.status === 202) confirmed.add(i);
		if (killedAt === undefined && mock.counts.size >= 10_000) {
			killedAt = mock.counts.size;
			d.child.kill('SIGKILL');
			await d.exited;
			break;
		}
	}
	if (killedAt === undefined) {
		await until(async () => (mock.counts.size >= 10_000 ? true : undefined), '10,000 delivered before the kill', 2000, 5);
		killedAt = mock.counts.size;
		d.child.kill('SIGKILL');
		await d.exited;
	}
	assert.ok(killedAt < 50_000, `killed mid-way (the mock had ${killedAt})`);
	d = await startDaemon(t, dir);
	const metrics = (await request(d.url, 'GET', '/metrics')).body as string;
	const inDoubt = apps.reduce((sum, app) => sum + Number(new RegExp(`apns_worker_in_doubt\\{app="${app}"\\} (\\d+)`).exec(metrics)?.[1] ?? Number.NaN), 0);
	assert.ok(Number.isFinite(inDoubt), 'the in-doubt count of every app is published');
	// What was never confirmed (not sent yet, or its answer lost in the kill) is sent again with its key.
	for (let i = 0; i < requests.length; i++) {
		if (confirmed.has(i)) continue;
		const r = requests[i]!;
		const res = await d.api('POST', `/v1/apps/${r.app}/notifications`, { notifications: [{ tokens: r.tokens, aps: { alert: `batch ${i}` } }] }, { 'idempotency-key': r.key });
		assert.equal(res.status, 202);
	}
	await until(async () => {
		const views = await Promise.all(apps.map((app) => d.api('GET', `/v1/apps/${app}`)));
		return views.every((v) => v.body.pending === 0) ? true : undefined;
	}, 'every app to have nothing pending', 1200, 50);
	const { lost, duplicates } = tally(mock, requests.flatMap((r) => r.tokens));
	t.diagnostic(`killed with ${killedAt} of 50,000 delivered; in doubt at restart ${inDoubt}; duplicates ${duplicates}; lost ${lost}`);
	assert.equal(lost, 0);
	assert.ok(duplicates <= inDoubt, `duplicates ${duplicates} <= in doubt ${inDoubt}`);
	assert.equal(mock.counts.size, 50_000, 'nothing else was sent');
});

test('serve: a feedback webhook that fails and recovers gets every record, in order, once (retried with backoff, never skipped), each delivery signed', async (t) => {
	const tokens = makeTokens(8, 0x59);
	const gone = [tokens[1]!, tokens[2]!, tokens[5]!, tokens[7]!];
	const mock = await mockApns(t, { unregistered: gone });
	const { createServer } = await import('node:http');
	const posts: Array<{ status: number; records: Array<{ seq: number; token: string; reason: string }> }> = [];
	let failFirst = 2;
	let unsigned = 0;
	const hook = createServer((req, res) => {
		let body = '';
		req.on('data', (c: Buffer) => (body += c.toString()));
		req.on('end', () => {
			if (!verifySignature(WEBHOOK_SECRET, req.headers['apns-worker-signature'] as string | undefined, body)) {
				unsigned++;
				return void res.writeHead(400).end();
			}
			const status = failFirst-- > 0 ? 500 : 200;
			posts.push({ status, records: (JSON.parse(body) as { feedback: Array<{ seq: number; token: string; reason: string }> }).feedback });
			res.writeHead(status).end();
		});
	});
	await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
	t.after(() => new Promise<void>((resolve) => hook.close(() => resolve())));
	const d = await startDaemon(t, dataDir(t));
	const url = `http://127.0.0.1:${(hook.address() as { port: number }).port}/feedback`;
	const put = await d.api('PUT', '/v1/apps/hooked', appBody(mock, { webhook: { url, secret: WEBHOOK_SECRET } }));
	assert.equal(put.status, 200);
	assert.deepEqual(put.body.webhook, { url, signed: true }, 'the secret is write-only');
	assert.ok(!JSON.stringify((await d.api('GET', '/v1/apps')).body).includes(WEBHOOK_SECRET));
	const post = await d.api('POST', '/v1/apps/hooked/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] });
	await settled(d, 'hooked', post.body.ids[0]);
	const delivered = await until(async () => {
		const ok = posts.filter((p) => p.status === 200).flatMap((p) => p.records);
		return ok.length >= gone.length ? ok : undefined;
	}, 'the webhook to accept every record', 400, 50);
	assert.deepEqual(delivered.map((r) => r.token).sort(), [...gone].sort());
	assert.deepEqual(delivered.map((r) => r.seq), [...delivered.map((r) => r.seq)].sort((a, b) => a - b), 'in order');
	assert.ok(posts.filter((p) => p.status === 500).length >= 2, 'the failures were retried');
	assert.ok(delivered.every((r) => r.reason === 'Unregistered'));
	assert.equal(unsigned, 0, 'every delivery carried a valid signature');
	assert.ok(!d.output().includes(WEBHOOK_SECRET), 'the secret is never logged');
	// The API's readers still see them (the webhook does not consume them).
	assert.equal((await d.api('GET', '/v1/apps/hooked/feedback')).body.feedback.length, gone.length);
});

test('serve: an update takes effect for new sends without losing queued ones (an app whose gateway was wrong, fixed by a PUT)', async (t) => {
	const mock = await mockApns(t);
	const d = await startDaemon(t, dataDir(t), { args: ['--shutdown-timeout', '1'] });
	// Provisioned with a gateway where nothing listens: what is posted stays queued.
	assert.equal((await d.api('PUT', '/v1/apps/fixme', appBody({ host: '127.0.0.1', port: 9 }))).status, 200);
	const queued = makeTokens(300, 0x5a);
	const before = await d.api('POST', '/v1/apps/fixme/notifications', { notifications: [{ tokens: queued, aps: { alert: 'queued' } }] });
	assert.equal(before.status, 202);
	const update = await d.api('PUT', '/v1/apps/fixme', appBody(mock));
	assert.equal(update.status, 200, JSON.stringify(update.body));
	assert.deepEqual(update.body.gateway, { host: mock.host, port: mock.port });
	const fresh = makeTokens(200, 0x5b);
	const after = await d.api('POST', '/v1/apps/fixme/notifications', { notifications: [{ tokens: fresh, aps: { alert: 'new' } }] });
	const [a, b] = [await settled(d, 'fixme', before.body.ids[0]), await settled(d, 'fixme', after.body.ids[0])];
	assert.deepEqual([a.sent, a.failed, b.sent, b.failed], [300, [], 200, []]);
	assert.deepEqual([...queued, ...fresh].filter((tk) => mock.counts.get(tk) !== 1), [], 'every one delivered once, through the new settings');
});

test('serve: one daemon per data directory (a second exits 2 and sends nothing); a daemon that cannot listen exits 2 before it sends', async (t) => {
	const mock = await mockApns(t);
	const dir = dataDir(t);
	const d = await startDaemon(t, dir);
	await d.api('PUT', '/v1/apps/one', appBody({ host: '127.0.0.1', port: 9 }));
	await d.api('POST', '/v1/apps/one/notifications', { notifications: [{ tokens: makeTokens(5, 0x5c), aps: { alert: 'x' } }] });
	await assert.rejects(startDaemon(t, dir), (error: Error) => {
		assert.match(error.message, /exited \(code 2\)/);
		assert.match(error.message, /in use by another apns-worker serve/);
		return true;
	});
	// Its port taken: a daemon on another directory, whose app points at the mock, must not send.
	const other = dataDir(t);
	const first = await startDaemon(t, other);
	await first.api('PUT', '/v1/apps/two', appBody(mock));
	first.child.kill('SIGTERM');
	await first.exited;
	const { Database } = { Database: (await import('better-sqlite3')).default };
	const db = new Database(join(other, 'apns-worker.db'));
	db.prepare("INSERT INTO notifications (id, app, body, total, created_at) VALUES ('00000000-0000-4000-8000-00000000000a', 1, '{\"payload\":{\"aps\":{}},\"options\":{}}', 1, 0)").run();
	db.prepare('INSERT INTO pending (app, notification, token) VALUES (1, last_insert_rowid(), ?)').run(Buffer.from(makeTokens(1, 0x5d)[0]!, 'hex'));
	db.close();
	const port = Number(new URL(d.url).port);
	await assert.rejects(startDaemon(t, other, { args: ['--port', String(port)] }), /exited \(code 2\)[\s\S]*cannot listen/);
	assert.equal(mock.counts.size, 0, 'nothing was sent by the daemon that could not listen');
});
