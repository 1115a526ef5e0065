/**
 * The daemon's API as a stranger and a careless client would try it (issue 27): the real daemon as a
 * child process. What a request without the key can make it do, bodies and their limits, and the small
 * protocol faults: the scheme's case, Idempotency-Key reused or given twice, app ids `.` and `..`, a body
 * that is not JSON, `__proto__`, headers too large — every refusal a 4xx of one shape naming the field —
 * TLS on the API (real certificates on 127.0.0.1), what an app's view says of its trouble, secrets that
 * change (rotated, or sealed once given), and scoped API keys.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import { makeTestCertificates } from '../src/mock/certs.js';
import { MAX_JSON_DEPTH } from '../src/server/api.js';
import { makeTokens } from './support/helpers.js';
import { API_KEY, appBody, dataDir, mockApns, request, SECRET, startDaemon, until, WEBHOOK_SECRET, type RunningDaemon } from './support/daemon.js';
import { REDIS_MISSING, startRedis } from './support/redis.js';

/**
 * One request with raw control: headers as a flat array (a name may repeat), the path sent as given. A
 * server that answers before it has read an upload may close the connection under it: the answer is what
 * counts, and the write error that follows it is not.
 */
function raw(url: string, method: string, path: string, headers: string[], body?: Buffer | string): Promise<{ status: number; body: string }> {
	const { hostname, port } = new URL(url);
	return new Promise((resolve, reject) => {
		let answer: { status: number; body: string } | undefined;
		let failure: Error | undefined;
		const req = httpRequest({ host: hostname, port, method, path, headers: ['host', `${hostname}:${port}`, ...headers] }, (res) => {
			answer = { status: res.statusCode!, body: '' };
			res.setEncoding('utf8');
			res.on('data', (c: string) => (answer!.body += c));
			res.on('end', () => resolve(answer!));
			res.on('error', () => resolve(answer!));
		});
		req.on('error', (error) => (failure = error));
		req.on('close', () => (answer === undefined ? reject(failure ?? new Error('closed without an answer')) : undefined));
		req.end(body);
	});
}

/** The largest event-loop delay the daemon saw since its last scrape (prom-client resets it per scrape), in s. */
async function loopDelayMax(d: RunningDaemon): Promise<number> {
	const text = await (await fetch(`${d.url}/metrics`)).text();
	const m = /^nodejs_eventloop_lag_max_seconds (\S+)$/m.exec(text);
	assert.ok(m !== null, 'the daemon publishes its event-loop delay');
	return Number(m[1]);
}

/** `n` opening brackets, then as many closing: nothing to parse but nesting. */
const nested = (n: number): Buffer => Buffer.concat([Buffer.alloc(n, '['), Buffer.alloc(n, ']')]);

function shape(what: string, r: { status: number; body: string }, status: number, field: string): Record<string, unknown> {
	assert.equal(r.status, status, `${what}: ${r.body}`);
	const body = JSON.parse(r.body) as Record<string, unknown>;
	assert.deepEqual(Object.keys(body).sort(), ['error', 'field', 'message'], `${what}: one error shape`);
	assert.equal(body['field'], field, `${what}: ${r.body}`);
	return body;
}

test('api: a stranger gets no work done — unknown routes (404) and routes without the key (401) are answered before an 8 MB body is read; /healthz meanwhile keeps its idle event-loop delay', async (t) => {
	const d = await startDaemon(t, dataDir(t));
	const body = nested(4 * 1024 * 1024); // 8 MB of nesting: 3.2 s of the event loop when it was parsed
	await loopDelayMax(d);
	// Idle: the same number of requests, no bodies.
	for (let i = 0; i < 4; i++) assert.equal((await fetch(`${d.url}/healthz`)).status, 200);
	const idle = await loopDelayMax(d);
	const strangers: Array<[string, string, number, string]> = [
		['POST', '/x', 404, 'url'],
		['POST', '/healthz', 404, 'url'],
		['POST', '/v1/apps/a/notifications', 401, 'headers/authorization'],
		['PUT', '/v1/apps/a', 401, 'headers/authorization'],
	];
	for (const [method, path, status, field] of strangers) {
		shape(`${method} ${path}`, await raw(d.url, method, path, ['content-type', 'application/json', 'content-length', String(body.length)], body), status, field);
		assert.equal((await fetch(`${d.url}/healthz`)).status, 200);
	}
	const attacked = await loopDelayMax(d);
	t.diagnostic(`event-loop delay, max: idle ${(idle * 1000).toFixed(1)} ms, with four unauthenticated 8 MB bodies ${(attacked * 1000).toFixed(1)} ms`);
	assert.ok(attacked <= idle + 0.05, `the loop was held ${(attacked * 1000).toFixed(0)} ms (idle: ${(idle * 1000).toFixed(0)} ms)`);
});

test(`api: with the key, JSON nested deeper than ${MAX_JSON_DEPTH} is refused before it is parsed; bodies are limited per route (an app 256 KiB); a body that is not JSON is 415; __proto__ is named`, async (t) => {
	const mock = await mockApns(t);
	const d = await startDaemon(t, dataDir(t));
	assert.equal((await d.api('PUT', '/v1/apps/a', appBody(mock))).status, 200);
	const auth = ['authorization', `Bearer ${API_KEY}`, 'content-type', 'application/json'];
	const token = makeTokens(1, 0x31)[0]!;
	const deep = `{"notifications":[{"tokens":["${token}"],"aps":{"alert":"x","deep":${'['.repeat(MAX_JSON_DEPTH)}${']'.repeat(MAX_JSON_DEPTH)}}}]}`;
	const m = shape('too deep', await raw(d.url, 'POST', '/v1/apps/a/notifications', auth, deep), 400, 'body');
	assert.match(String(m['message']), /nested more than 32/);
	const ok = `{"notifications":[{"tokens":["${token}"],"aps":{"alert":"x","deep":${'['.repeat(MAX_JSON_DEPTH - 4)}${']'.repeat(MAX_JSON_DEPTH - 4)}}}]}`;
	assert.equal((await raw(d.url, 'POST', '/v1/apps/a/notifications', auth, ok)).status, 202, 'nesting within the bound is fine');
	shape('an app over 256 KiB', await raw(d.url, 'PUT', '/v1/apps/a', auth, JSON.stringify(appBody(mock, { ca: 'x'.repeat(300 * 1024) }))), 413, 'body');
	shape('text/plain', await raw(d.url, 'POST', '/v1/apps/a/notifications', ['authorization', `Bearer ${API_KEY}`, 'content-type', 'text/plain'], 'hello'), 415, 'headers/content-type');
	const proto = `{"notifications":[{"tokens":["${token}"],"aps":{"alert":"x","__proto__":{"polluted":true}}}]}`;
	const p = shape('__proto__', await raw(d.url, 'POST', '/v1/apps/a/notifications', auth, proto), 400, 'body/notifications/0/aps/__proto__');
	assert.match(String(p['message']), /__proto__ is not allowed/);
	shape('__proto__ spelled with an escape', await raw(d.url, 'POST', '/v1/apps/a/notifications', auth, proto.replace('"__proto__"', '"\\u005f_proto__"')), 400, 'body/notifications/0/aps/__proto__');
	shape('malformed', await raw(d.url, 'POST', '/v1/apps/a/notifications', auth, '{"notifications": ['), 400, 'body');
});

test('api: the Authorization scheme is case-insensitive; app ids . and .. are refused; two Idempotency-Key headers are 400; headers over 16 KiB are 431 in the API\'s error shape', async (t) => {
	const mock = await mockApns(t);
	const d = await startDaemon(t, dataDir(t));
	for (const scheme of ['bearer', 'BEARER', 'Bearer ', 'bEaReR\t']) assert.equal((await raw(d.url, 'GET', '/v1/apps', ['authorization', `${scheme} ${API_KEY}`])).status, 200, JSON.stringify(scheme));
	shape('no scheme', await raw(d.url, 'GET', '/v1/apps', ['authorization', API_KEY]), 401, 'headers/authorization');
	const auth = ['authorization', `Bearer ${API_KEY}`, 'content-type', 'application/json'];
	for (const id of ['.', '..', '%2E', '%2e%2E']) shape(`app id ${id}`, await raw(d.url, 'PUT', `/v1/apps/${id}`, auth, JSON.stringify(appBody(mock))), 400, 'params/appId');
	assert.equal((await raw(d.url, 'PUT', '/v1/apps/a.b', auth, JSON.stringify(appBody(mock)))).status, 200, 'a dot inside an id is fine');
	const body = JSON.stringify({ notifications: [{ tokens: makeTokens(1, 0x32), aps: { alert: 'x' } }] });
	shape('two keys', await raw(d.url, 'POST', '/v1/apps/a.b/notifications', [...auth, 'idempotency-key', 'a1', 'Idempotency-Key', 'a2'], body), 400, 'headers/idempotency-key');
	shape('headers too large', await raw(d.url, 'GET', '/v1/apps', ['authorization', `Bearer ${API_KEY}`, 'x-filler', 'x'.repeat(20 * 1024)]), 431, 'headers');
});

/** A daemon on a SQLite file, or on a real redis-server of its own. */
async function daemonOn(t: TestContext, store: 'sqlite' | 'redis'): Promise<RunningDaemon> {
	if (store === 'sqlite') return startDaemon(t, dataDir(t));
	const r = await startRedis();
	t.after(() => r.close());
	return startDaemon(t, undefined, { args: ['--redis', r.url] });
}

for (const store of ['sqlite', 'redis'] as const) {
	test(`api (${store}): the same Idempotency-Key with another body is 422 idempotency_key_reused, and nothing of it is stored; with the same body, the first answer`, { skip: store === 'redis' ? REDIS_MISSING : false }, async (t: TestContext) => {
		const mock = await mockApns(t);
		const d = await daemonOn(t, store);
		assert.equal((await d.api('PUT', '/v1/apps/a', appBody(mock))).status, 200);
		const tokens = makeTokens(3, 0x33);
		const first = await d.api('POST', '/v1/apps/a/notifications', { notifications: [{ tokens, aps: { alert: 'one' } }] }, { 'idempotency-key': 'order-1' });
		assert.equal(first.status, 202, JSON.stringify(first.body));
		const same = await d.api('POST', '/v1/apps/a/notifications', { notifications: [{ tokens, aps: { alert: 'one' } }] }, { 'idempotency-key': 'order-1' });
		assert.deepEqual([same.status, same.body], [202, first.body]);
		const other = await d.api('POST', '/v1/apps/a/notifications', { notifications: [{ tokens: makeTokens(2, 0x34), aps: { alert: 'two' } }] }, { 'idempotency-key': 'order-1' });
		assert.equal(other.status, 422, JSON.stringify(other.body));
		assert.deepEqual([other.body.error, other.body.field], ['idempotency_key_reused', 'headers/idempotency-key']);
		const app = await d.api('GET', '/v1/apps/a');
		assert.ok(app.body.pending <= 3, `only the first request's 3 are stored (pending ${app.body.pending})`);
	});
}

/** A GET over HTTPS trusting `ca` only; the status, or the error's code. */
function httpsGet(url: string, path: string, ca: string, headers: Record<string, string> = {}): Promise<number | string> {
	const { hostname, port } = new URL(url);
	return new Promise((resolve) => {
		const req = httpsRequest({ host: hostname, port, path, ca, headers, agent: false }, (res) => {
			res.resume();
			res.on('end', () => resolve(res.statusCode!));
		});
		req.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
		req.end();
	});
}

test('api: --tls-cert/--tls-key serve HTTPS only; SIGHUP reads a renewed certificate without dropping work (a bad one keeps the old); a non-loopback --host without TLS is warned about, and the address printed is the one listened on', async (t) => {
	const dir = dataDir(t);
	const files = { cert: join(dir, 'api.crt'), key: join(dir, 'api.key') };
	const first = makeTestCertificates();
	writeFileSync(files.cert, first.server.cert);
	writeFileSync(files.key, first.server.key);
	const d = await startDaemon(t, join(dir, 'data'), { args: ['--tls-cert', files.cert, '--tls-key', files.key], env: { LOG_LEVEL: 'info' } });
	assert.match(d.url, /^https:\/\/127\.0\.0\.1:\d+$/);
	assert.equal(await httpsGet(d.url, '/healthz', first.ca.cert), 200);
	assert.equal(await httpsGet(d.url, '/v1/apps', first.ca.cert, { authorization: `Bearer ${API_KEY}` }), 200);
	const plain = await fetch(d.url.replace('https:', 'http:') + '/healthz').then((r) => r.status, (error: Error) => error.message);
	assert.notEqual(plain, 200, 'no plain HTTP');
	assert.ok(!d.output().includes('WARNING'), 'loopback with TLS: nothing to warn about');
	// Work waiting on a gateway where nothing listens, across the reload.
	assert.equal((await httpsJson(d.url, 'PUT', '/v1/apps/a', first.ca.cert, appBody({ host: '127.0.0.1', port: 9 }))).status, 200);
	assert.equal((await httpsJson(d.url, 'POST', '/v1/apps/a/notifications', first.ca.cert, { notifications: [{ tokens: makeTokens(5, 0x41), aps: { alert: 'x' } }] })).status, 202);
	const renewed = makeTestCertificates();
	writeFileSync(files.cert, renewed.server.cert);
	writeFileSync(files.key, renewed.server.key);
	d.child.kill('SIGHUP');
	await until(async () => (d.output().includes('read again (SIGHUP)') ? true : undefined), 'the reload to be logged', 100, 20);
	assert.equal(await httpsGet(d.url, '/healthz', renewed.ca.cert), 200, 'new connections get the renewed certificate');
	assert.notEqual(await httpsGet(d.url, '/healthz', first.ca.cert), 200, 'and no longer the old one');
	// A broken pair: logged, and the renewed certificate stays.
	writeFileSync(files.key, first.server.key);
	d.child.kill('SIGHUP');
	await until(async () => (d.output().includes('could not be read') ? true : undefined), 'the failed reload to be logged', 100, 20);
	assert.equal(await httpsGet(d.url, '/healthz', renewed.ca.cert), 200);
	assert.equal((await httpsJson(d.url, 'GET', '/v1/apps/a', renewed.ca.cert)).body.pending, 5, 'nothing dropped');
	// Without TLS on every address: warned at start, and the address printed is 0.0.0.0.
	const open = await startDaemon(t, dataDir(t), { args: ['--host', '0.0.0.0'], env: { LOG_LEVEL: 'info' } });
	assert.match(open.output(), /listening on http:\/\/0\.0\.0\.0:\d+/);
	assert.match(open.output(), /WARNING: the API listens on 0\.0\.0\.0 without TLS/);
	// SIGHUP without TLS (a `systemctl reload`) does not end it.
	open.child.kill('SIGHUP');
	await until(async () => (open.output().includes('nothing to read again') ? true : undefined), 'the SIGHUP to be logged', 100, 20);
	assert.equal((await fetch(`${open.url}/healthz`)).status, 200);
});

/** A JSON request over HTTPS trusting `ca`, with the API key. */
function httpsJson(url: string, method: string, path: string, ca: string, body?: unknown): Promise<{ status: number; body: any }> {
	const { hostname, port } = new URL(url);
	return new Promise((resolve, reject) => {
		const req = httpsRequest({ host: hostname, port, path, method, ca, agent: false, headers: { authorization: `Bearer ${API_KEY}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) } }, (res) => {
			let text = '';
			res.setEncoding('utf8');
			res.on('data', (c: string) => (text += c));
			res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text) }));
		});
		req.on('error', reject);
		req.end(body === undefined ? undefined : JSON.stringify(body));
	});
}

for (const store of ['sqlite', 'redis'] as const) {
	test(`api (${store}): an app tells its trouble — connected, lastError (the gateway's certificate refused), the oldest pending notification's age; /metrics has apns_worker_app_up and apns_worker_oldest_pending_seconds`, { skip: store === 'redis' ? REDIS_MISSING : false }, async (t: TestContext) => {
		const mock = await mockApns(t);
		const d = await daemonOn(t, store);
		// Trusting another CA than the mock's: every connection is refused by our own TLS check.
		assert.equal((await d.api('PUT', '/v1/apps/untrusted', appBody(mock, { ca: makeTestCertificates().ca.cert }))).status, 200);
		assert.equal((await d.api('PUT', '/v1/apps/ok', appBody(mock))).status, 200);
		assert.equal((await d.api('POST', '/v1/apps/untrusted/notifications', { notifications: [{ tokens: makeTokens(3, 0x42), aps: { alert: 'x' } }] })).status, 202);
		const ok = await d.api('POST', '/v1/apps/ok/notifications', { notifications: [{ tokens: makeTokens(2, 0x43), aps: { alert: 'x' } }] });
		const bad = await until(async () => {
			const v = (await d.api('GET', '/v1/apps/untrusted')).body;
			return v.lastError !== null ? v : undefined;
		}, 'the refused connection to show', 200, 25);
		assert.equal(bad.state, 'sending', 'its credentials loaded: the trouble is elsewhere, and now it says where');
		assert.equal(bad.connected, false);
		assert.equal(bad.lastError.status, 0);
		assert.match(bad.lastError.reason, /certificate/);
		assert.ok(!Number.isNaN(Date.parse(bad.lastError.at)));
		assert.equal(bad.pending, 3);
		assert.ok(typeof bad.oldestPendingSeconds === 'number' && bad.oldestPendingSeconds >= 0, JSON.stringify(bad));
		const good = await until(async () => {
			const v = (await d.api('GET', '/v1/apps/ok')).body;
			return v.pending === 0 ? v : undefined;
		}, 'the good app to drain', 200, 25);
		assert.deepEqual([good.connected, good.lastError, good.oldestPendingSeconds], [true, null, null]);
		assert.equal(ok.status, 202);
		const metrics = await (await fetch(`${d.url}/metrics`)).text();
		assert.match(metrics, /^apns_worker_app_up\{app="untrusted"\} 0$/m);
		assert.match(metrics, /^apns_worker_app_up\{app="ok"\} 1$/m);
		assert.match(metrics, /^apns_worker_oldest_pending_seconds\{app="untrusted"\} \d/m);
		assert.doesNotMatch(metrics, /apns_worker_oldest_pending_seconds\{app="ok"\}/, 'nothing pending: no age');
	});
}

/** `apns-worker serve ARGS` run to its end (a one-shot such as --rotate-secret): its exit code and what it printed. */
function serveOnce(args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; output: string }> {
	const full: Record<string, string | undefined> = { ...process.env, APNS_WORKER_API_KEY: API_KEY, LOG_LEVEL: 'warn', ...env };
	for (const [k, v] of Object.entries(full)) if (v === undefined) delete full[k];
	const child = spawn(process.execPath, [fileURLToPath(new URL('../src/cli.js', import.meta.url)), 'serve', ...args], { env: full as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
	let output = '';
	child.stdout.on('data', (c: Buffer) => (output += c.toString()));
	child.stderr.on('data', (c: Buffer) => (output += c.toString()));
	return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}

const NEW_SECRET = 'the-new-secret-0123456789abcdefgh';

for (const store of ['sqlite', 'redis'] as const) {
	test(`api (${store}): serve --rotate-secret re-seals every credential under the new secret in one go (the old one no longer opens them; a wrong old secret changes nothing); the app sends after`, { skip: store === 'redis' ? REDIS_MISSING : false }, async (t: TestContext) => {
		const mock = await mockApns(t);
		const dir = dataDir(t);
		const redis = store === 'redis' ? await startRedis() : undefined;
		if (redis !== undefined) t.after(() => redis.close());
		const where = redis === undefined ? ['--data', dir] : ['--redis', redis.url];
		const start = (secret: string): Promise<RunningDaemon> => startDaemon(t, redis === undefined ? dir : undefined, { args: redis === undefined ? [] : ['--redis', redis.url], env: { APNS_WORKER_SECRET: secret } });
		let d = await start(SECRET);
		for (const id of ['a', 'b']) assert.equal((await d.api('PUT', `/v1/apps/${id}`, appBody(mock))).status, 200);
		d.child.kill('SIGTERM');
		assert.deepEqual(await d.exited, { code: 0, signal: null });
		const wrong = await serveOnce([...where, '--rotate-secret'], { APNS_WORKER_SECRET_OLD: 'not-the-secret-0123456789abcdef', APNS_WORKER_SECRET: NEW_SECRET });
		assert.equal(wrong.code, 2, wrong.output);
		assert.match(wrong.output, /APNS_WORKER_SECRET_OLD is not the secret/);
		const rotated = await serveOnce([...where, '--rotate-secret'], { APNS_WORKER_SECRET_OLD: SECRET, APNS_WORKER_SECRET: NEW_SECRET });
		assert.equal(rotated.code, 0, rotated.output);
		assert.match(rotated.output, /re-sealed the credentials of 2 apps/);
		assert.ok(!rotated.output.includes(NEW_SECRET) && !rotated.output.includes(SECRET), 'no secret printed');
		const old = await startDaemon(t, redis === undefined ? dir : undefined, { args: redis === undefined ? [] : ['--redis', redis.url], env: { APNS_WORKER_SECRET: SECRET } }).then(
			() => 'started',
			(error: Error) => error.message,
		);
		assert.match(old, /is not the secret the credentials/, 'the old secret no longer opens them');
		d = await start(NEW_SECRET);
		assert.equal((await d.api('GET', '/v1/apps/a')).body.state, 'sending');
		const tokens = makeTokens(2, 0x44);
		const post = await d.api('POST', '/v1/apps/b/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] });
		assert.equal(post.status, 202);
		await until(async () => (tokens.every((tk) => mock.counts.get(tk) === 1) ? true : undefined), 'the rotated app to send', 200, 25);
	});
}

test('api (sqlite): credentials stored with --insecure-plaintext-secrets are sealed by the first start with APNS_WORKER_SECRET; after that, a start without it is refused', async (t) => {
	const mock = await mockApns(t);
	const dir = dataDir(t);
	let d = await startDaemon(t, dir, { args: ['--insecure-plaintext-secrets'], env: { APNS_WORKER_SECRET: undefined } });
	assert.equal((await d.api('PUT', '/v1/apps/a', appBody(mock))).status, 200);
	d.child.kill('SIGTERM');
	await d.exited;
	const stored = (): string => {
		const db = new Database(join(dir, 'apns-worker.db'), { readonly: true });
		try {
			return (db.prepare("SELECT sealed FROM apps WHERE id = 'a'").get() as { sealed: string }).sealed;
		} finally {
			db.close();
		}
	};
	assert.match(stored(), /^plain:/);
	d = await startDaemon(t, dir);
	assert.equal((await d.api('GET', '/v1/apps/a')).body.state, 'sending');
	d.child.kill('SIGTERM');
	await d.exited;
	assert.match(stored(), /^v1:/, 'sealed at start');
	const refused = await serveOnce(['--data', dir, '--port', '0', '--insecure-plaintext-secrets'], { APNS_WORKER_SECRET: undefined });
	assert.equal(refused.code, 2, refused.output);
	assert.match(refused.output, /are encrypted: start the daemon with the APNS_WORKER_SECRET/);
});

for (const store of ['sqlite', 'redis'] as const) {
	test(`api (${store}): scoped API keys — the admin key makes one for some apps and scopes (shown once, stored hashed); it gets 403 on any other app or scope and never manages apps or keys; deleted, it stops at once`, { skip: store === 'redis' ? REDIS_MISSING : false }, async (t: TestContext) => {
		const mock = await mockApns(t);
		const dir = dataDir(t);
		const redis = store === 'redis' ? await startRedis() : undefined;
		if (redis !== undefined) t.after(() => redis.close());
		const d = await startDaemon(t, redis === undefined ? dir : undefined, { args: redis === undefined ? [] : ['--redis', redis.url] });
		for (const id of ['shop', 'other']) assert.equal((await d.api('PUT', `/v1/apps/${id}`, appBody(mock))).status, 200);
		const unknown = await d.api('POST', '/v1/keys', { apps: ['shop', 'nope'], scopes: ['send'] });
		assert.deepEqual([unknown.status, unknown.body.field], [404, 'body/apps/1'], 'a key for an app that does not exist');
		const made = await d.api('POST', '/v1/keys', { apps: ['shop'], scopes: ['send'] });
		assert.equal(made.status, 201, JSON.stringify(made.body));
		assert.match(made.body.key, /^awk_[A-Za-z0-9_-]{43}$/);
		assert.deepEqual([made.body.apps, made.body.scopes], [['shop'], ['send']]);
		const sender = made.body.key as string;
		const reader = (await d.api('POST', '/v1/keys', { apps: ['shop'], scopes: ['read'] })).body.key as string;
		const listed = await d.api('GET', '/v1/keys');
		assert.equal(listed.body.keys.length, 2);
		assert.ok(!JSON.stringify(listed.body).includes(sender) && !JSON.stringify(listed.body).includes(reader), 'never shown again');
		const as = (key: string) => (method: string, path: string, body?: unknown) => request(d.url, method, path, body, { authorization: `Bearer ${key}` });
		const send = as(sender);
		const read = as(reader);
		const notification = { notifications: [{ tokens: makeTokens(1, 0x45), aps: { alert: 'x' } }] };
		assert.equal((await send('POST', '/v1/apps/shop/notifications', notification)).status, 202, 'its scope, its app');
		const refused: Array<[string, string, string, unknown?]> = [
			['send', 'POST', '/v1/apps/other/notifications', notification],
			['send', 'GET', '/v1/apps/shop'],
			['send', 'GET', '/v1/apps/shop/feedback'],
			['send', 'PUT', '/v1/apps/shop', appBody(mock)],
			['send', 'DELETE', '/v1/apps/shop'],
			['send', 'GET', '/v1/apps'],
			['send', 'GET', '/v1/keys'],
			['send', 'POST', '/v1/keys', { apps: ['other'], scopes: ['send'] }],
			['read', 'POST', '/v1/apps/shop/notifications', notification],
			['read', 'GET', '/v1/apps/other'],
		];
		for (const [who, method, path, body] of refused) {
			const r = await (who === 'send' ? send : read)(method, path, body);
			assert.deepEqual([r.status, r.body.error, r.body.field], [403, 'forbidden', 'headers/authorization'], `${who}: ${method} ${path}`);
		}
		assert.equal((await read('GET', '/v1/apps/shop')).status, 200);
		assert.equal((await read('GET', '/v1/apps/shop/feedback')).status, 200);
		assert.equal((await request(d.url, 'GET', '/v1/apps/shop', undefined, { authorization: `Bearer awk_${'A'.repeat(43)}` })).status, 401, 'a key that is not one');
		assert.deepEqual((await d.api('DELETE', `/v1/keys/${made.body.id}`)).body, { deleted: made.body.id });
		assert.equal((await send('POST', '/v1/apps/shop/notifications', notification)).status, 401, 'deleted: at once');
		assert.equal((await d.api('DELETE', `/v1/keys/${made.body.id}`)).status, 404);
		// Deleting an app deletes the keys that name it: the app made again under the id does not inherit them.
		const forOther = (await d.api('POST', '/v1/keys', { apps: ['other'], scopes: ['read'] })).body.key as string;
		assert.equal((await as(forOther)('GET', '/v1/apps/other')).status, 200);
		assert.equal((await d.api('DELETE', '/v1/apps/other')).status, 200);
		assert.equal((await d.api('PUT', '/v1/apps/other', appBody(mock))).status, 200);
		assert.equal((await as(forOther)('GET', '/v1/apps/other')).status, 401);
		assert.equal((await d.api('GET', '/v1/keys')).body.keys.length, 1, 'the reader for shop is left');
		// Stored as a hash only.
		if (redis !== undefined) {
			const c = new Redis(redis.url);
			t.after(() => c.disconnect());
			assert.ok(!JSON.stringify(await c.hgetall('aw:keys')).includes(reader));
		} else {
			d.child.kill('SIGTERM');
			await d.exited;
			const db = new Database(join(dir, 'apns-worker.db'), { readonly: true });
			t.after(() => db.close());
			assert.ok(!JSON.stringify(db.prepare('SELECT * FROM api_keys').all()).includes(reader));
		}
	});
}

test('api: a webhook receiver that answers with a redirect is a failed delivery (retried), never followed: a GET without the body would have counted as delivered', async (t) => {
	const tokens = makeTokens(3, 0x46);
	const mock = await mockApns(t, { unregistered: [tokens[1]!] });
	let landed = 0;
	let posted = 0;
	const hook = createServer((req, res) => {
		req.resume();
		if (req.url === '/landing') {
			landed++;
			return void res.writeHead(200).end();
		}
		posted++;
		res.writeHead(301, { location: '/landing' }).end();
	});
	await new Promise<void>((resolve) => hook.listen(0, '127.0.0.1', resolve));
	t.after(() => new Promise<void>((resolve) => hook.close(() => resolve())));
	const d = await startDaemon(t, dataDir(t));
	const url = `http://127.0.0.1:${(hook.address() as { port: number }).port}/fb`;
	assert.equal((await d.api('PUT', '/v1/apps/a', appBody(mock, { webhook: { url, secret: WEBHOOK_SECRET } }))).status, 200);
	assert.equal((await d.api('POST', '/v1/apps/a/notifications', { notifications: [{ tokens, aps: { alert: 'x' } }] })).status, 202);
	await until(async () => (d.output().includes('HTTP 301') ? true : undefined), 'the redirect to be logged as a failure', 400, 25);
	assert.ok(posted >= 1);
	assert.equal(landed, 0, 'not followed');
});
