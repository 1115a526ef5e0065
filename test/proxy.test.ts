/**
 * HTTP CONNECT proxies: both protocols and the feedback service through the mock proxy on 127.0.0.1, the
 * proxy's failures as connect failures (named, backed off, counted, nothing lost), the environment
 * (HTTPS_PROXY, ALL_PROXY, NO_PROXY), and the option checks. Every target is on 127.0.0.1.
 */
import assert from 'node:assert/strict';
import { BACKENDS } from './support/backends.js';
import { generateKeyPairSync } from 'node:crypto';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { inspect } from 'node:util';
import { ApnsManager, ConnectionError, InvalidArgumentError, type ApnsManagerOptions } from '../src/index.js';
import { connectTls } from '../src/credentials.js';
import { bypassed, proxyFromEnv, redactUrl, ResolvedProxy } from '../src/proxy.js';
import { startMockApnsHttp2, startMockProxy, type MockApnsHttp2, type MockGateway, type MockProxy, type MockProxyFaults, type MockProxyOptions } from '../src/testing.js';
import { account, certs, closedPort, feedbackService, gateway, makeTokens, manager, once } from './support/helpers.js';

const TOPIC = 'com.example.app';
const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const KEY = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'ABC123DEFG', teamId: 'TEAM123456' };
/** A password with characters that need percent-encoding in a URL. */
const AUTH = { username: 'pusher', password: 'p@ss:w/rd%20é' };
const FAST = { initialDelayMs: 5, maxDelayMs: 20 };

async function proxy(t: TestContext, options: MockProxyOptions = {}): Promise<MockProxy> {
	const p = await startMockProxy(options);
	t.after(() => p.close());
	return p;
}

async function http2Mock(t: TestContext): Promise<MockApnsHttp2> {
	const c = certs();
	const m = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, keys: [{ keyId: KEY.keyId, teamId: KEY.teamId, publicKey: p8.publicKey }], topics: [TOPIC] });
	t.after(() => m.close());
	return m;
}

function h2(t: TestContext, server: { host: string; port: number }, options: Partial<ApnsManagerOptions> = {}): ApnsManager {
	return manager(t, server, { protocol: 'http2', cert: undefined, key: undefined, token: KEY, topic: TOPIC, retry: FAST, ...options });
}

function via(p: { host: string; port: number }, auth?: { username: string; password: string }): ApnsManagerOptions['proxy'] {
	return { host: p.host, port: p.port, ...(auth === undefined ? {} : { auth }) };
}

/** Every token exactly once at the target, nothing else. */
function exactlyOnce(target: MockGateway | MockApnsHttp2, tokens: readonly string[]): void {
	assert.equal(target.counts.size, tokens.length, 'distinct tokens at the target');
	assert.ok(tokens.every((tk) => target.counts.get(tk) === 1), 'each token exactly once');
}

/** Wait (a bounded number of short real-time steps) until `done()` holds. */
async function until(done: () => boolean, what: string): Promise<void> {
	for (let i = 0; i < 400 && !done(); i++) await new Promise((resolve) => setTimeout(resolve, 5));
	assert.ok(done(), what);
}

/** `promise`, or a failure after `ms` of real time: a hang guard, so a regression fails fast instead of stalling the run. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
	let timer: NodeJS.Timeout | undefined;
	const guard = new Promise<never>((_, reject) => {
		timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms);
	});
	try {
		return await Promise.race([promise, guard]);
	} finally {
		clearTimeout(timer);
	}
}

/** Let setImmediate-coalesced work run. */
async function settle(): Promise<void> {
	for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}

const ENV_NAMES = ['HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'NO_PROXY', 'no_proxy'] as const;

/** Clear the proxy variables, set `vars`, and put everything back after the test. */
function useEnv(t: TestContext, vars: Partial<Record<(typeof ENV_NAMES)[number], string>>): void {
	const saved = ENV_NAMES.map((name) => [name, process.env[name]] as const);
	for (const name of ENV_NAMES) delete process.env[name];
	Object.assign(process.env, vars);
	t.after(() => {
		for (const [name, value] of saved) {
			if (value === undefined) delete process.env[name];
			else process.env[name] = value;
		}
	});
}

for (const backend of BACKENDS) test(`HTTP/2 through the proxy (${backend.name}): every notification delivered exactly once; one tunnel, asked for the gateway, with Proxy-Authorization`, async (t) => {
	const server = await http2Mock(t);
	const px = await proxy(t, { auth: AUTH });
	const m = h2(t, server, { ...backend.options, proxy: via(px, AUTH) });
	const tokens = makeTokens(500, 90);
	m.sendAps(tokens, { alert: 'through the proxy' });
	await m.flushMessages({ timeoutMs: 10_000 });
	exactlyOnce(server, tokens);
	assert.equal(server.requests, 500);
	assert.equal(m.stats.delivered, 500);
	assert.deepEqual(px.tunnels, [`127.0.0.1:${server.port}`], 'one session, tunnelled to the gateway');
	assert.deepEqual([px.connects, px.opened, server.connectionsAccepted], [1, 1, 1], 'the gateway saw only the tunnel');
	await within(m.close(), 10_000, 'close()');
	await until(() => px.open === 0, 'close() ends the tunnel');
});

test('binary through the proxy: every notification delivered exactly once, getFeedback too; every tunnel named its target', async (t) => {
	const gw = await gateway(t);
	const given = makeTokens(3, 93).map((token, i) => ({ token, when: new Date((1_700_000_000 + i) * 1000) }));
	const fb = await feedbackService(t, { tuples: given });
	const px = await proxy(t, { auth: AUTH });
	const m = manager(t, gw, { feedback: { host: fb.host, port: fb.port }, proxy: via(px, AUTH) });
	const tokens = makeTokens(3000, 91);
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages({ timeoutMs: 10_000 });
	assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	const toGateway = `127.0.0.1:${gw.port}`;
	assert.ok(px.tunnels.length >= 1 && px.tunnels.every((target) => target === toGateway), px.tunnels.join());
	assert.equal(gw.connectionsAccepted, px.opened, 'every gateway connection came through the proxy');
	const got: string[] = [];
	assert.equal(await m.getFeedback((f) => got.push(f.token)), 3);
	assert.deepEqual(got, given.map((g) => g.token));
	assert.equal(px.tunnels.at(-1), `127.0.0.1:${fb.port}`, 'the feedback read was tunnelled to the feedback service');
	assert.equal(fb.connections, 1);
	await within(m.close(), 10_000, 'close()');
	await until(() => px.open === 0, 'close() ends every tunnel');
});

test('a wrong proxy password: one connectError per attempt naming the proxy and its 407 (never the password), backed off, nothing sent', async (t) => {
	const gw = await gateway(t);
	const px = await proxy(t, { auth: AUTH });
	const wrong = 'not-the-password';
	const policy = { initialDelayMs: 100, maxDelayMs: 400, jitter: 0 };
	const m = manager(t, gw, { proxy: via(px, { username: AUTH.username, password: wrong }), reconnect: policy });
	// Only setTimeout is mocked (the backoff runs on it); sockets and setImmediate stay real.
	t.mock.timers.enable({ apis: ['setTimeout'] });
	t.after(() => t.mock.timers.reset());
	const errors: Array<{ error: ConnectionError; attempt: number; retryInMs: number }> = [];
	m.on('connectError', (error, info) => errors.push({ error, ...info }));
	const first = once(m, 'connectError');
	m.sendAps(makeTokens(3, 92), { alert: 'x' });
	await first;
	for (let round = 1; round <= 5; round++) {
		const last = errors.at(-1)!;
		assert.deepEqual([last.attempt, last.retryInMs], [round, Math.min(400, 100 * 2 ** (round - 1))], 'capped exponential backoff');
		assert.deepEqual([m.stats.connectAttempts, px.connects, errors.length], [round, round, round], 'one proxy connection and one connectError per attempt');
		t.mock.timers.tick(last.retryInMs - 1);
		await settle();
		assert.equal(m.stats.connectAttempts, round, `no attempt ${last.retryInMs - 1} ms into a ${last.retryInMs} ms backoff`);
		const next = once(m, 'connectError');
		t.mock.timers.tick(1);
		await next;
	}
	const basic = Buffer.from(`${AUTH.username}:${wrong}`).toString('base64');
	for (const { error } of errors) {
		assert.ok(error instanceof ConnectionError);
		assert.match(error.message, new RegExp(`^Cannot connect to 127\\.0\\.0\\.1:${gw.port}: The proxy 127\\.0\\.0\\.1:${px.port} refused CONNECT 127\\.0\\.0\\.1:${gw.port}: "HTTP/1\\.1 407 Proxy Authentication Required" \\(it did not accept the credentials in proxy\\.auth\\)$`));
		assert.ok(!error.message.includes(wrong) && !error.message.includes(basic), 'never the password');
		assert.ok(!inspect(error, { depth: 5 }).includes(wrong), 'nor in its cause');
	}
	assert.deepEqual([gw.connectionsAccepted, m.stats.pending, m.stats.delivered], [0, 3, 0], 'nothing reached the gateway; nothing lost');
});

test('a proxy that wants credentials and got none: getFeedback rejects with a ConnectionError that says so', async (t) => {
	const fb = await feedbackService(t, { tuples: [{ token: makeTokens(1, 94)[0]!, when: new Date(1_700_000_000_000) }] });
	const px = await proxy(t, { auth: AUTH });
	const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port }, proxy: via(px) });
	await assert.rejects(
		m.getFeedback(() => assert.fail('nothing is read')),
		(e: unknown) => e instanceof ConnectionError && /^The proxy 127\.0\.0\.1:\d+ refused CONNECT 127\.0\.0\.1:\d+: "HTTP\/1\.1 407 Proxy Authentication Required" \(it wants credentials: give proxy\.auth\)$/.test(e.message),
	);
	assert.deepEqual([fb.connections, px.tunnels.length], [0, 1]);
});

/** Each proxy failure, what the connectError must say about it, and a token seed. */
const FAULTS: ReadonlyArray<readonly [name: string, faults: MockProxyFaults | 'notListening', message: RegExp]> = [
	['refuses the TCP connection', 'notListening', /: Cannot reach the proxy 127\.0\.0\.1:\d+ \(connect ECONNREFUSED 127\.0\.0\.1:\d+\)$/],
	['answers 403', { status: 403 }, /: The proxy 127\.0\.0\.1:\d+ refused CONNECT 127\.0\.0\.1:\d+: "HTTP\/1\.1 403 Forbidden"$/],
	['answers 502', { status: 502 }, /: The proxy 127\.0\.0\.1:\d+ refused CONNECT 127\.0\.0\.1:\d+: "HTTP\/1\.1 502 Bad Gateway"$/],
	['answers garbage', { garbage: true }, /: The proxy 127\.0\.0\.1:\d+ answered CONNECT 127\.0\.0\.1:\d+ with something that is not HTTP: "\\x16\\x03\\x01\\xde\\xad\\xbe\\xef\\x0a"$/],
	['closes without answering', { refuseTunnel: true }, /: The proxy 127\.0\.0\.1:\d+ closed the connection before answering CONNECT 127\.0\.0\.1:\d+$/],
	['closes the tunnel mid-handshake', { closeAfterConnect: true }, /: The tunnel through the proxy 127\.0\.0\.1:\d+ to 127\.0\.0\.1:\d+ closed before a byte came back \(the proxy, or the server behind it, hung up\)$/],
];

for (const protocol of ['binary', 'http2'] as const) {
	for (const [index, [name, faults, message]] of FAULTS.entries()) {
		test(`${protocol}: a proxy that ${name} is a failed connect (named, backed off, counted); nothing lost, all delivered once it behaves`, async (t) => {
			const target = protocol === 'binary' ? await gateway(t) : await http2Mock(t);
			let px: MockProxy | undefined;
			const port = faults === 'notListening' ? await closedPort() : undefined;
			if (faults !== 'notListening') px = await proxy(t, { faults });
			const m = protocol === 'binary'
				? manager(t, target, { proxy: via(px ?? { host: '127.0.0.1', port: port! }), reconnect: FAST })
				: h2(t, target, { proxy: via(px ?? { host: '127.0.0.1', port: port! }), reconnect: FAST });
			const errors: Array<{ error: ConnectionError; attempt: number; retryInMs: number }> = [];
			let connected = 0;
			m.on('connectError', (error, info) => errors.push({ error, ...info }));
			m.on('connected', () => connected++);
			const failed = once(m, 'connectError');
			const tokens = makeTokens(20, 100 + index * 2 + (protocol === 'binary' ? 0 : 1));
			m.sendAps(tokens, { alert: 'x' });
			await failed;
			const { error, attempt, retryInMs } = errors[0]!;
			assert.ok(error instanceof ConnectionError);
			assert.ok(error.message.startsWith(`Cannot connect to 127.0.0.1:${target.port}: `), error.message);
			assert.match(error.message, message);
			assert.deepEqual([attempt, retryInMs > 0], [1, true], 'counted, and the next attempt waits');
			assert.deepEqual([target.counts.size, m.stats.pending, m.stats.delivered], [0, 20, 0], 'nothing sent, nothing lost');
			// The proxy behaves (or comes up) again: everything goes, once.
			if (px === undefined) px = await proxy(t, { port: port! });
			else px.setFaults({});
			await m.flushMessages({ timeoutMs: 10_000 });
			exactlyOnce(target, tokens);
			assert.ok(errors.every((e) => message.test(e.error.message)), 'every failure said the same');
			assert.equal(m.stats.connectAttempts, errors.length + connected, 'every attempt either connected or was one connectError');
			assert.ok(px.tunnels.every((tunnel) => tunnel === `127.0.0.1:${target.port}`));
			if (protocol === 'http2') assert.equal(connected, 1, 'one session once the proxy behaves');
		});
	}
}

test('connectTimeoutMs covers the CONNECT phase: a proxy that never answers is cut off (its connection closed) on both protocols and for feedback', async (t) => {
	const gw = await gateway(t);
	const server = await http2Mock(t);
	const fb = await feedbackService(t);
	const px = await proxy(t, { faults: { silent: true } });
	const binary = manager(t, gw, { proxy: via(px), feedback: { host: fb.host, port: fb.port }, connectTimeoutMs: 150, reconnect: FAST });
	const http2 = h2(t, server, { proxy: via(px), connectTimeoutMs: 150, reconnect: FAST });
	const bTokens = makeTokens(10, 120);
	const hTokens = makeTokens(10, 121);
	const failure = (m: ApnsManager): Promise<ConnectionError> => new Promise((resolve) => m.once('connectError', resolve));
	const failures = [failure(binary), failure(http2)];
	binary.sendAps(bTokens, { alert: 'x' });
	http2.sendAps(hTokens, { alert: 'x' });
	const [b, h] = await within(Promise.all(failures), 10_000, 'a connectError from each manager');
	assert.equal(b!.message, `Cannot connect to 127.0.0.1:${gw.port}: Connect to 127.0.0.1:${gw.port} timed out after 150 ms`);
	assert.equal(h!.message, `Cannot connect to 127.0.0.1:${server.port}: Connect to 127.0.0.1:${server.port} timed out after 150 ms`);
	await assert.rejects(within(binary.getFeedback(() => {}), 10_000, 'the feedback read'), (e: unknown) => e instanceof ConnectionError && e.message === `Connect to the feedback service 127.0.0.1:${fb.port} timed out after 150 ms`);
	binary.destroy();
	http2.destroy();
	await until(() => px.open === 0, 'a timed-out connect closes its connection to the proxy');
	// The proxy answers again: the same path delivers.
	px.setFaults({});
	const again = manager(t, gw, { proxy: via(px), connectTimeoutMs: 150 });
	again.sendAps(bTokens, { alert: 'x' });
	await again.flushMessages({ timeoutMs: 10_000 });
	exactlyOnce(gw, bTokens);
});

test("proxy: 'env': HTTPS_PROXY (percent-encoded credentials) carries gateway and feedback; a NO_PROXY that names neither changes nothing", async (t) => {
	const gw = await gateway(t);
	const fb = await feedbackService(t, { tuples: [{ token: makeTokens(1, 131)[0]!, when: new Date(1_700_000_000_000) }] });
	const px = await proxy(t, { auth: AUTH });
	useEnv(t, {
		HTTPS_PROXY: `http://${encodeURIComponent(AUTH.username)}:${encodeURIComponent(AUTH.password)}@127.0.0.1:${px.port}`,
		NO_PROXY: 'example.com, .corp.example, 10.0.0.0/8, 127.0.0.1:1',
	});
	const m = manager(t, gw, { feedback: { host: fb.host, port: fb.port }, proxy: 'env' });
	const tokens = makeTokens(200, 130);
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages({ timeoutMs: 10_000 });
	assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	assert.equal(await m.getFeedback(() => {}), 1);
	assert.ok(px.tunnels.includes(`127.0.0.1:${gw.port}`) && px.tunnels.at(-1) === `127.0.0.1:${fb.port}`, px.tunnels.join());
	assert.equal(gw.connectionsAccepted, px.opened - 1, 'every connection but the feedback read went to the gateway through the proxy');
});

test("proxy: 'env': NO_PROXY is applied to the gateway and the feedback service separately; a match uses no tunnel", async (t) => {
	const gw = await gateway(t);
	const fb = await feedbackService(t, { tuples: [{ token: makeTokens(1, 141)[0]!, when: new Date(1_700_000_000_000) }] });
	const px = await proxy(t);
	// The feedback service's port only: the gateway still goes through the proxy.
	useEnv(t, { https_proxy: `http://127.0.0.1:${px.port}`, no_proxy: `127.0.0.1:${fb.port}` });
	const m = manager(t, gw, { feedback: { host: fb.host, port: fb.port }, proxy: 'env' });
	const tokens = makeTokens(50, 140);
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages({ timeoutMs: 10_000 });
	assert.equal(await m.getFeedback(() => {}), 1);
	assert.ok(px.tunnels.length >= 1 && px.tunnels.every((x) => x === `127.0.0.1:${gw.port}`), 'the feedback read went direct');
	assert.equal(gw.connectionsAccepted, px.opened, 'the gateway saw only tunnelled connections');
	// The whole host: nothing goes through the proxy.
	process.env['no_proxy'] = '127.0.0.1';
	const connects = px.connects;
	const direct = manager(t, gw, { feedback: { host: fb.host, port: fb.port }, proxy: 'env' });
	const more = makeTokens(50, 142);
	direct.sendAps(more, { alert: 'x' });
	await direct.flushMessages({ timeoutMs: 10_000 });
	assert.equal(await direct.getFeedback(() => {}), 0);
	assert.equal(px.connects, connects, 'no tunnel');
	assert.deepEqual(account(gw, [...tokens, ...more]), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
});

test("proxy: 'env' falls back to ALL_PROXY (no scheme: http), and HTTP/2 goes through it", async (t) => {
	const server = await http2Mock(t);
	const px = await proxy(t);
	useEnv(t, { ALL_PROXY: `127.0.0.1:${px.port}` });
	const m = h2(t, server, { proxy: 'env' });
	const tokens = makeTokens(100, 150);
	m.sendAps(tokens, { alert: 'x' });
	await m.flushMessages({ timeoutMs: 10_000 });
	exactlyOnce(server, tokens);
	assert.deepEqual(px.tunnels, [`127.0.0.1:${server.port}`]);
	assert.deepEqual([px.opened, server.connectionsAccepted], [1, 1], 'the gateway saw only the tunnel');
});

test('NO_PROXY rules: host suffixes, leading dots and *., *, host:port, IPs and CIDR ranges, case and spaces', () => {
	const cases: Array<[host: string, port: number, list: string, expected: boolean]> = [
		['api.push.apple.com', 443, '', false],
		['api.push.apple.com', 443, 'apple.com', true],
		['api.push.apple.com', 443, '.apple.com', true],
		['apple.com', 443, '.apple.com', true],
		['api.push.apple.com', 443, '*.apple.com', true],
		['api.push.apple.com', 443, 'push.apple.com.', true],
		['api.push.apple.com', 443, 'le.com', false],
		['notapple.com', 443, 'apple.com', false],
		['api.push.apple.com', 443, 'example.com, API.PUSH.APPLE.COM', true],
		['api.push.apple.com', 443, 'example.com  other.org', false],
		['api.push.apple.com', 443, '*', true],
		['api.push.apple.com', 443, 'example.com,*', true],
		['api.push.apple.com', 443, 'apple.com:443', true],
		['api.push.apple.com', 2197, 'apple.com:443', false],
		['127.0.0.1', 2195, '127.0.0.1', true],
		['127.0.0.1', 2195, '0.0.1', false],
		['127.0.0.1', 2195, '127.0.0.0/8', true],
		['127.0.0.1', 2195, '10.0.0.0/8', false],
		['127.0.0.1', 2195, '127.0.0.1:2196', false],
		['::1', 443, '[::1]:443', true],
		['::1', 443, '::1', true],
		['::1', 443, '::/0', true],
		['api.push.apple.com', 443, '17.0.0.0/8', false],
	];
	for (const [host, port, list, expected] of cases) assert.equal(bypassed({ host, port }, list), expected, `${host}:${port} with NO_PROXY=${JSON.stringify(list)}`);
});

test("proxy: 'env' URL forms: lower case first, ALL_PROXY fallback, default port 80, decoded credentials; https://, SOCKS and bad URLs refused without the password", () => {
	const gateway = { host: 'api.push.apple.com', port: 443 };
	assert.equal(proxyFromEnv(gateway, {}), undefined);
	assert.equal(proxyFromEnv(gateway, { HTTPS_PROXY: '  ' }), undefined, 'blank is unset');
	const seen = (env: NodeJS.ProcessEnv): string => {
		const p = proxyFromEnv(gateway, env)!;
		return `${p.toString()} ${p.authenticated}`;
	};
	assert.equal(seen({ HTTPS_PROXY: 'http://proxy.corp:3128' }), 'proxy.corp:3128 false');
	assert.equal(seen({ HTTPS_PROXY: 'http://upper:1', https_proxy: 'http://lower:2' }), 'lower:2 false');
	assert.equal(seen({ ALL_PROXY: 'proxy.corp' }), 'proxy.corp:80 false');
	assert.equal(seen({ HTTPS_PROXY: 'http://[::1]:8080/' }), '[::1]:8080 false');
	assert.equal(proxyFromEnv(gateway, { HTTPS_PROXY: 'http://proxy:1', NO_PROXY: 'apple.com' }), undefined);
	assert.throws(() => proxyFromEnv(gateway, { HTTPS_PROXY: 'http://us%3Aer:secret@proxy:3128' }), (e: unknown) => e instanceof InvalidArgumentError && /a user name without colons/.test(e.message) && !e.message.includes('secret'));
	const p = proxyFromEnv(gateway, { HTTPS_PROXY: 'http://user%40corp:p%40ss%3Aw%2F@proxy:3128' })!;
	assert.equal(p.request('api.push.apple.com', 443), `CONNECT api.push.apple.com:443 HTTP/1.1\r\nHost: api.push.apple.com:443\r\nProxy-Authorization: Basic ${Buffer.from('user@corp:p@ss:w/').toString('base64')}\r\n\r\n`);
	assert.ok(!inspect(p).includes('Basic') && !JSON.stringify(p).includes('Basic'), 'the credentials are not printed');
	for (const [value, why] of [
		['https://user:hunter2@proxy:443', /https:\/\/\*\*\*@proxy:443/],
		['socks5://user:hunter2@proxy:1080', /socks5:\/\/\*\*\*@proxy:1080/],
		['http://user:hunter2@', /http:\/\/\*\*\*@/],
		// Characters that break URL parsing, inside the password: still never shown.
		['http://user:hun/ter2@proxy:3128', /http:\/\/\*\*\*@proxy:3128/],
		['http://user:hun#ter2@proxy:3128', /http:\/\/\*\*\*@proxy:3128/],
		['user:hun?ter2@proxy:3128', /\*\*\*@proxy:3128/],
		['http://user:p@hunter2@proxy:3128/x', /http:\/\/\*\*\*@proxy:3128\/x/],
		['http://proxy:0', /a port from 1 to 65535/],
	] as const) {
		assert.throws(
			() => proxyFromEnv(gateway, { HTTPS_PROXY: value }),
			(e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.proxy' && /in HTTPS_PROXY/.test(e.message) && why.test(e.message) && !e.message.includes('hunter2'),
			value,
		);
	}
	assert.equal(redactUrl('user:hunter2@proxy:3128'), '***@proxy:3128');
	assert.equal(redactUrl('http://proxy:3128'), 'http://proxy:3128');
});

test('bad proxy options throw InvalidArgumentError naming the field, never showing a password', () => {
	const c = certs();
	const base = { cert: c.client.cert, key: c.client.key, ca: c.ca.cert, gateway: { host: '127.0.0.1', port: 1 } };
	const bad: Array<[proxy: unknown, argument: string, extra?: Partial<ApnsManagerOptions>]> = [
		['http://proxy:3128', 'options.proxy'],
		['http://user:hunter2@proxy:3128', 'options.proxy'],
		[42, 'options.proxy'],
		[null, 'options.proxy'],
		[{ port: 3128 }, 'options.proxy.host'],
		[{ host: '', port: 3128 }, 'options.proxy.host'],
		[{ host: 'proxy\r\nX-Evil: 1', port: 3128 }, 'options.proxy.host'],
		[{ host: 'http://proxy', port: 3128 }, 'options.proxy.host'],
		[{ host: 'proxy' }, 'options.proxy.port'],
		[{ host: 'proxy', port: 0 }, 'options.proxy.port'],
		[{ host: 'proxy', port: 65_536 }, 'options.proxy.port'],
		[{ host: 'proxy', port: '3128' }, 'options.proxy.port'],
		[{ host: 'proxy', port: 3128, auth: 'user:hunter2' }, 'options.proxy.auth'],
		[{ host: 'proxy', port: 3128, auth: { username: 'us:er', password: 'hunter2' } }, 'options.proxy.auth.username'],
		[{ host: 'proxy', port: 3128, auth: { password: 'hunter2' } }, 'options.proxy.auth.username'],
		[{ host: 'proxy', port: 3128, auth: { username: 'user', password: 1234567 } }, 'options.proxy.auth.password'],
		[{ host: 'proxy', port: 3128 }, 'options.gateway.host', { gateway: { host: 'gw\r\nX: 1', port: 1 } }],
	];
	for (const [proxy, argument, extra] of bad) {
		assert.throws(
			() => new ApnsManager({ ...base, ...extra, proxy } as never),
			(e: unknown) => e instanceof InvalidArgumentError && e.argument === argument && !e.message.includes('hunter2') && !e.message.includes('1234567'),
			argument,
		);
	}
	// Good ones construct (and connect nowhere: nothing is sent).
	for (const proxy of [{ host: 'proxy.corp', port: 3128 }, { host: '::1', port: 3128, auth: { username: '', password: '' } }, 'env'] as const) {
		new ApnsManager({ ...base, proxy }).destroy();
	}
});

test('through a tunnel, SNI and the certificate check are for the gateway, not the proxy', async (t) => {
	// A stand-in proxy that answers 200 and ends the TLS itself, recording the SNI: the client dials only
	// this 127.0.0.1 listener and resolves no name (the gateway name only travels in CONNECT and SNI).
	const c = certs();
	const sni: string[] = [];
	const requests: string[] = [];
	const terminator = tls.createServer({
		cert: c.server.cert,
		key: c.server.key,
		SNICallback: (name, callback) => {
			sni.push(name);
			callback(null, undefined);
		},
	});
	terminator.on('secureConnection', (s: tls.TLSSocket) => s.end('hello'));
	terminator.on('tlsClientError', () => {});
	const sockets = new Set<net.Socket>();
	const fake = net.createServer((socket) => {
		sockets.add(socket);
		socket.once('data', (head: Buffer) => {
			requests.push(head.toString('latin1'));
			socket.write('HTTP/1.1 200 Connection Established\r\nVia: test\r\n\r\n');
			terminator.emit('connection', socket);
		});
		socket.on('error', () => {});
	});
	await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
	t.after(() => {
		for (const s of sockets) s.destroy();
		fake.close();
	});
	const proxyAt = new ResolvedProxy('127.0.0.1', (fake.address() as net.AddressInfo).port);
	const dial = (host: string): Promise<{ error?: Error; data?: string }> =>
		new Promise((resolve) => {
			const socket = connectTls({ host, port: 443, ca: [c.ca.cert], proxy: proxyAt });
			let data = '';
			socket.on('data', (d: Buffer) => (data += d.toString()));
			socket.on('error', (error) => resolve({ error }));
			socket.on('end', () => resolve({ data }));
		});
	// The server certificate names localhost and 127.0.0.1.
	assert.deepEqual(await dial('localhost'), { data: 'hello' });
	const refused = await dial('gateway.invalid');
	assert.match(refused.error?.message ?? '', /Hostname\/IP does not match certificate's altnames: Host: gateway\.invalid/);
	assert.deepEqual(sni, ['localhost', 'gateway.invalid'], 'SNI named the gateway each time');
	assert.equal(requests[0], 'CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n');
	assert.equal(requests[1], 'CONNECT gateway.invalid:443 HTTP/1.1\r\nHost: gateway.invalid:443\r\n\r\n');
});

test('the mock proxy tunnels to 127.0.0.1 only: any other target is refused with 403 and nothing is dialled', async (t) => {
	const px = await proxy(t);
	const ask = (target: string): Promise<string> =>
		new Promise((resolve, reject) => {
			const s = net.connect(px.port, '127.0.0.1', () => s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`));
			let answer = '';
			s.on('data', (d: Buffer) => (answer += d.toString('latin1')));
			s.on('close', () => resolve(answer.split('\r\n', 1)[0]!));
			s.on('error', reject);
		});
	for (const target of ['example.com:443', 'localhost:443', '10.0.0.1:443', '[::1]:443', '127.0.0.1.nip.io:443', '127.0.0.1:99999']) {
		assert.equal(await ask(target), 'HTTP/1.1 403 Forbidden', target);
	}
	assert.deepEqual([px.opened, px.tunnels.length], [0, 6]);
});
