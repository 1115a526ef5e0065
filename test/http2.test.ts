/**
 * The HTTP/2 provider API behind the same manager, against the validating mock on 127.0.0.1 (real TLS,
 * HTTP/2, JWT verification). Every test counts deliveries by the mock's record. The provider-token and
 * option checks run once; every test that sends runs on every backend (test/support/backends.ts).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { DeliveryError, Feedback, InvalidArgumentError, ProviderToken, TOKEN_MIN_INTERVAL_MS, TOKEN_REFRESH_MS, type ApnsManagerOptions } from '../src/index.js';
import { startMockApnsHttp2, type MockApnsHttp2Faults, type MockApnsHttp2Options } from '../src/testing.js';
import { BACKENDS } from './support/backends.js';
import { certs, makeTokens, manager, managerOn } from './support/helpers.js';

const TOPIC = 'com.example.app';
const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const KEY = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'ABC123DEFG', teamId: 'TEAM123456' };

async function mock(t: TestContext, faults: MockApnsHttp2Faults = {}, extra: Partial<MockApnsHttp2Options> = {}) {
	const c = certs();
	const m = await startMockApnsHttp2({
		server: c.server,
		ca: c.ca.cert,
		keys: [{ keyId: KEY.keyId, teamId: KEY.teamId, publicKey: p8.publicKey }],
		topics: [TOPIC],
		faults,
		...extra,
	});
	t.after(() => m.close());
	return m;
}

test('provider tokens: ES256, cached, refreshed at 50 minutes, never made twice within 20 minutes', () => {
	let now = 1_700_000_000_000;
	const token = new ProviderToken(KEY, () => now);
	const first = token.current();
	const [h, c] = first.split('.').slice(0, 2).map((p) => JSON.parse(Buffer.from(p, 'base64url').toString()) as Record<string, unknown>);
	assert.deepEqual(h, { alg: 'ES256', kid: KEY.keyId });
	assert.deepEqual(c, { iss: KEY.teamId, iat: now / 1000 });
	assert.equal(Buffer.from(first.split('.')[2]!, 'base64url').length, 64, 'raw r‖s signature');
	now += TOKEN_MIN_INTERVAL_MS - 1;
	assert.equal(token.expired(), false, 'not within 20 minutes');
	assert.equal(token.current(), first);
	now += 1;
	assert.equal(token.expired(), true);
	const second = token.current();
	assert.notEqual(second, first);
	now += TOKEN_REFRESH_MS - 1;
	assert.equal(token.current(), second);
	now += 1;
	assert.notEqual(token.current(), second, 'refreshed at 50 minutes');
	assert.equal(token.minted, 3);
	assert.throws(() => new ProviderToken({ ...KEY, keyId: 'short' }), /10-character Key ID/);
	const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
	assert.throws(() => new ProviderToken({ ...KEY, key: rsa }), /EC P-256/);
});

test('token auth needs a topic; a token on the binary protocol is refused', () => {
	assert.throws(() => manager({ after() {} } as unknown as TestContext, undefined, { protocol: 'http2', cert: undefined, key: undefined, token: KEY }), /options\.topic/);
	assert.throws(() => manager({ after() {} } as unknown as TestContext, undefined, { token: KEY }), /options\.token/);
});

/** A TCP proxy to `port` on 127.0.0.1 whose open connections can go silent: they stay open and pass nothing (a dead peer); new connections pass. */
async function blackHoleProxy(t: TestContext, port: number): Promise<{ port: number; freeze(): void }> {
	const net = await import('node:net');
	const pairs: Array<{ sockets: [import('node:net').Socket, import('node:net').Socket]; frozen: boolean }> = [];
	const server = net.createServer((client) => {
		const upstream = net.connect(port, '127.0.0.1');
		const pair = { sockets: [client, upstream] as [import('node:net').Socket, import('node:net').Socket], frozen: false };
		pairs.push(pair);
		for (const [from, to] of [[client, upstream], [upstream, client]] as const) {
			from.on('data', (chunk: Buffer) => {
				if (!pair.frozen) to.write(chunk);
			});
			from.on('error', () => {});
			from.on('close', () => to.destroy());
		}
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	t.after(async () => {
		for (const pair of pairs) for (const socket of pair.sockets) socket.destroy();
		await new Promise<void>((resolve) => server.close(() => resolve()));
	});
	return {
		port: (server.address() as { port: number }).port,
		freeze: () => {
			for (const pair of pairs) pair.frozen = true;
		},
	};
}

for (const backend of BACKENDS) describe(`HTTP/2 (${backend.name})`, () => {
	const manager = managerOn(backend); // every manager below runs on this backend
	function h2(t: TestContext, server: { host: string; port: number }, options: Partial<ApnsManagerOptions> = {}) {
		return manager(t, server, { protocol: 'http2', cert: undefined, key: undefined, token: KEY, topic: TOPIC, retry: { initialDelayMs: 5, maxDelayMs: 20 }, ...options });
	}

	test('200: every notification delivered exactly once with the right headers; flush resolves when all responses are in', async (t) => {
		const server = await mock(t);
		const m = h2(t, server);
		let delivered = 0;
		m.on('delivered', ({ count }) => (delivered += count));
		const tokens = makeTokens(2000, 60);
		m.sendAps(tokens, { alert: 'hi' }, { collapseId: 'c1', expiration: 2_000_000_000 });
		m.sendAps(tokens[0]!, { contentAvailable: true });
		m.sendAps(tokens[1]!, { alert: 'once' }, { expiration: 0, collapseId: 'c0' });
		await m.flushMessages();
		assert.equal(delivered, 2002);
		assert.deepEqual([...server.counts.values()].reduce((a, b) => a + b, 0), 2002);
		assert.ok(tokens.every((tk) => (server.counts.get(tk) ?? 0) >= 1));
		const first = server.received.find((r) => r.pushType === 'alert')!;
		assert.deepEqual([first.topic, first.priority, first.expiration, first.collapseId], [TOPIC, '10', '2000000000', 'c1']);
		const background = server.received.find((r) => r.pushType === 'background')!;
		assert.equal(background.priority, '5', 'content-available only: background, priority 5');
		// No expiration given: no header, so APNs stores it under its own policy; an explicit 0 is sent as 0.
		assert.equal(background.expiration, undefined);
		assert.equal(server.received.find((r) => r.collapseId === 'c0')!.expiration, '0');
		assert.equal(server.tokensSeen.size, 1, 'one JWT shared by every request');
		// Apple's HPACK advice: the per-request path and the token stay out of its dynamic table.
		assert.deepEqual([...first.neverIndexed].sort(), [':path', 'authorization']);
	});

	test('410 Unregistered: a DeliveryError with the reason, and a Feedback record for listeners and getFeedback', async (t) => {
		const tokens = makeTokens(50, 61);
		const goneAt = new Date('2026-01-02T03:04:05.000Z');
		const server = await mock(t, { unregistered: new Map([[tokens[7]!, goneAt]]) });
		const m = h2(t, server);
		const errors: DeliveryError[] = [];
		const events: Feedback[] = [];
		m.on('deliveryError', (e) => errors.push(e));
		m.on('feedback', (f) => events.push(f));
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.deepEqual(errors.map((e) => [e.status, e.reason, e.token, e.timestamp?.toISOString()]), [[410, 'Unregistered', tokens[7], goneAt.toISOString()]]);
		const polled: Feedback[] = [];
		assert.equal(await m.getFeedback((f) => polled.push(f)), 1);
		assert.deepEqual(polled, events);
		assert.deepEqual([polled[0]!.token, polled[0]!.when.toISOString()], [tokens[7], goneAt.toISOString()]);
		assert.equal(await m.getFeedback(() => {}), 0, 'drained');
		assert.equal(server.counts.size, 49);
	});

	test('400 BadDeviceToken: reported with the reason and never retried', async (t) => {
		const tokens = makeTokens(30, 62);
		const server = await mock(t, { badTokens: [tokens[3]!] });
		const m = h2(t, server);
		const errors: DeliveryError[] = [];
		m.on('deliveryError', (e) => errors.push(e));
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.deepEqual(errors.map((e) => [e.status, e.reason]), [[400, 'BadDeviceToken']]);
		assert.equal(server.answers.filter((a) => a.token === tokens[3]).length, 1, 'asked once');
	});

	test('429, 500, 503 are retried with backoff (retry-after honoured) until they pass', async (t) => {
		const tokens = makeTokens(20, 63);
		for (const status of [429, 500, 503] as const) {
			const server = await mock(t, { transient: { tokens: tokens.slice(0, 5), status, times: 2 } });
			const m = h2(t, server);
			let retried = 0;
			m.on('resent', ({ count, reason }) => reason === 'retry' && (retried += count));
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(m.stats.failed, 0, `${status}`);
			assert.equal(retried, 10, `${status}: 5 tokens × 2 retries`);
			assert.ok(tokens.every((tk) => server.counts.get(tk) === 1));
		}
		const server = await mock(t, { statusEvery: { every: 3, status: 503, retryAfterSeconds: 0 } });
		// Every 3rd request fails, retries included, so allow enough attempts for every one to get through.
		const m = h2(t, server, { maxAttempts: 20 });
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.ok(tokens.every((tk) => server.counts.get(tk) === 1), 'retry-after: 0 is honoured and delivery completes');
	});

	test('a retry limit ends in a DeliveryError', async (t) => {
		const [tk] = makeTokens(1, 64);
		const server = await mock(t, { transient: { tokens: [tk!], status: 500, times: 99 } });
		const m = h2(t, server, { maxAttempts: 3 });
		const errors: DeliveryError[] = [];
		m.on('deliveryError', (e) => errors.push(e));
		m.sendAps(tk!, { alert: 'x' });
		await m.flushMessages();
		assert.deepEqual(errors.map((e) => [e.status, e.reason]), [[500, 'InternalServerError']]);
		assert.equal(server.answers.length, 3);
	});

	test('ExpiredProviderToken: a new JWT is made and the notification retried', async (t) => {
		// The mock calls tokens older than -1 s expired, so the first one is; the manager mints a second.
		const server = await mock(t, {}, { maxTokenAgeSeconds: -1 });
		const m = h2(t, server, { maxAttempts: 2 });
		const errors: DeliveryError[] = [];
		m.on('deliveryError', (e) => errors.push(e));
		m.sendAps(makeTokens(1, 65), { alert: 'x' });
		await m.flushMessages();
		// With a 20-minute minimum between tokens, the retry reuses the token made moments ago, and the limit reports it.
		assert.deepEqual(errors.map((e) => e.reason), ['ExpiredProviderToken']);
		assert.equal(server.tokensSeen.size, 1, 'no second token within 20 minutes of the first');
	});

	test('IdleTimeout: the session is replaced and the notification retried', async (t) => {
		const tokens = makeTokens(10, 66);
		const server = await mock(t, { idleTimeoutTokens: [tokens[0]!] });
		const m = h2(t, server);
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.ok(tokens.every((tk) => server.counts.get(tk) === 1));
		assert.equal(m.stats.failed, 0);
		assert.ok(server.sessions >= 2, 'a new session');
	});

	test('GOAWAY: unprocessed streams are re-queued and sent on a new session; nothing lost or duplicated', async (t) => {
		const server = await mock(t, { goawayAfter: 100 }, { maxConcurrentStreams: 50 });
		const m = h2(t, server);
		const tokens = makeTokens(1000, 67);
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.ok(server.sessions >= 2);
		assert.ok(tokens.every((tk) => server.counts.get(tk) === 1), `lost or duplicated: ${tokens.filter((tk) => server.counts.get(tk) !== 1).length}`);
	});

	test("streams in flight never exceed the server's maxConcurrentStreams; 20,000 tokens at once work", async (t) => {
		const server = await mock(t, {}, { maxConcurrentStreams: 10 });
		const m = h2(t, server);
		const tokens = makeTokens(20_000, 68);
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.ok(server.peakConcurrentStreams <= 10, `peak ${server.peakConcurrentStreams}`);
		assert.ok(tokens.every((tk) => server.counts.get(tk) === 1));
	});

	test('certificate auth: the topic defaults to the certificate UID; no authorization header is needed', async (t) => {
		const server = await mock(t);
		const c = certs();
		const m = manager(t, server, { protocol: 'http2', cert: c.client.cert, key: c.client.key });
		m.sendAps(makeTokens(5, 69), { alert: 'x' });
		await m.flushMessages();
		assert.equal(server.counts.size, 5);
		assert.equal(server.received[0]!.topic, TOPIC);
		assert.equal(server.tokensSeen.size, 0);
	});

	test('push types: topic suffixes, VoIP payload limit; bad input throws at the call', async (t) => {
		const server = await mock(t);
		const m = h2(t, server);
		const [a, b] = makeTokens(2, 70);
		m.sendAps(a!, { alert: 'call' }, { pushType: 'voip', extra: { pad: 'v'.repeat(4500) } });
		m.sendAps(b!, { event: 'update' }, { pushType: 'liveactivity' });
		await m.flushMessages();
		assert.deepEqual(server.received.map((r) => [r.pushType, r.topic]).sort(), [['liveactivity', `${TOPIC}.push-type.liveactivity`], ['voip', `${TOPIC}.voip`]]);
		const bad: Array<[() => void, string]> = [
			[() => m.sendAps(a!, { alert: 'x' }, { pushType: 'fax' as 'alert' }), 'options.pushType'],
			[() => m.sendAps(a!, { alert: 'x' }, { extra: { pad: 'p'.repeat(4100) } }), 'aps'],
			[() => m.sendAps(a!, { alert: 'x' }, { pushType: 'voip', extra: { pad: 'p'.repeat(5200) } }), 'aps'],
			[() => m.sendAps(a!, { contentAvailable: true }, { priority: 10 }), 'options.priority'],
			[() => m.sendAps(a!, { alert: 'x' }, { collapseId: 'c'.repeat(65) }), 'options.collapseId'],
			[() => m.sendAps('nope', { alert: 'x' }), 'tokens'],
		];
		for (const [call, argument] of bad) assert.throws(call, (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument, argument);
		assert.equal(m.pending, 0);
	});

	test('PING: a session that stops answering is detected and replaced; later notifications go out on a new one', async (t) => {
		const server = await mock(t);
		const proxy = await blackHoleProxy(t, server.port);
		const m = h2(t, { host: '127.0.0.1', port: proxy.port }, { pingIntervalMs: 50, pingTimeoutMs: 200 });
		const [first, second] = [makeTokens(10, 71), makeTokens(10, 72)];
		m.sendAps(first, { alert: 'x' });
		await m.flushMessages();
		const lost = new Promise<[{ reason: string; error?: Error }]>((resolve) => m.once('disconnected', (info) => resolve([info])));
		proxy.freeze(); // the session goes idle, its next PING vanishes
		const [info] = await lost;
		assert.match(info.error?.message ?? '', /PING unanswered/);
		m.sendAps(second, { alert: 'y' }); // a new session, through a new (live) proxy connection
		await m.flushMessages();
		assert.equal(server.sessions, 2);
		assert.ok([...first, ...second].every((tk) => server.counts.get(tk) === 1));
	});

	test('410 records kept for getFeedback are bounded by maxFeedbackRecords: the newest are kept, the rest counted dropped, every one still reported', async (t) => {
		const tokens = makeTokens(50, 73);
		const server = await mock(t, { unregistered: tokens });
		const m = h2(t, server, { maxFeedbackRecords: 10 });
		let events = 0;
		let errors = 0;
		m.on('feedback', () => events++);
		m.on('deliveryError', () => errors++);
		for (const token of tokens) m.sendAps(token, { alert: 'x' }); // one at a time: answers arrive in this order
		await m.flushMessages();
		assert.deepEqual([events, errors], [50, 50], 'each 410 is reported as an error and a feedback event');
		assert.equal(m.stats.feedbackDropped, 40);
		const kept: string[] = [];
		assert.equal(await m.getFeedback((f) => kept.push(f.token)), 10);
		assert.equal(new Set(kept).size, 10);
		assert.equal(m.stats.feedbackDropped, 40);
		assert.equal(await m.getFeedback(() => {}), 0);
	});

	test('destroy() with answers half-way (headers in, stream still open): nothing settles afterwards, the counts stay whole, nothing is emitted after closed', async (t) => {
		const http2 = await import('node:http2');
		const c = certs();
		// Answers 200 but never ends the stream: the client holds a status for requests not yet finished.
		const server = http2.createSecureServer({ cert: c.server.cert, key: c.server.key });
		let headersSent = 0;
		let answered!: () => void;
		const allAnswered = new Promise<void>((resolve) => (answered = resolve));
		const sessions = new Set<import('node:http2').ServerHttp2Session>();
		server.on('session', (session) => sessions.add(session));
		server.on('stream', (stream) => {
			stream.on('error', () => {});
			stream.respond({ ':status': 200 });
			if (++headersSent === 20) answered();
		});
		await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
		// Destroy the sessions, not close their streams and wait for the client to hang up: on 'threaded' the
		// client's thread may still be dying then, and RST_STREAMs written to it can leave Node's server
		// session neither closed nor reading its socket, so server.close() never calls back and the event loop
		// empties under this hook (the "flaky on threaded" of issue 10).
		t.after(() => new Promise<void>((resolve) => {
			server.close(() => resolve());
			for (const session of sessions) session.destroy();
		}));
		// Certificate auth: with a token, the first request goes alone until it is answered in full.
		const m = h2(t, { host: '127.0.0.1', port: (server.address() as { port: number }).port }, { token: undefined, cert: c.client.cert, key: c.client.key });
		const tokens = makeTokens(20, 74);
		for (const token of tokens) m.sendAps(token, { alert: 'x' });
		let closed = false;
		const late: string[] = [];
		m.on('closed', () => (closed = true));
		for (const event of ['delivered', 'deliveryError', 'resent'] as const) m.on(event, () => closed && late.push(event));
		await allAnswered;
		await new Promise((resolve) => setTimeout(resolve, 50)); // let the headers reach the client
		m.destroy();
		await new Promise((resolve) => setImmediate(resolve));
		await new Promise((resolve) => setImmediate(resolve));
		const s = m.stats;
		assert.deepEqual(late, []);
		assert.equal(s.pending, 0);
		assert.deepEqual([s.queued, s.delivered, s.dropped], [20, 0, 20], 'dropped by destroy, never delivered afterwards');
	});
	test('a ProviderToken shared by two managers (two apps of one team): one token is minted for both, and both deliver', async (t) => {
		const server = await mock(t);
		const shared = new ProviderToken(KEY);
		const a = h2(t, server, { token: shared });
		const b = h2(t, server, { token: shared });
		const tokens = makeTokens(4, 0x77);
		a.sendAps(tokens.slice(0, 2), { alert: 'a' });
		b.sendAps(tokens.slice(2), { alert: 'b' });
		await Promise.all([a.flushMessages(), b.flushMessages()]);
		assert.equal(shared.minted, 1);
		assert.deepEqual(tokens.map((tk) => server.counts.get(tk)), [1, 1, 1, 1]);
	});
});
