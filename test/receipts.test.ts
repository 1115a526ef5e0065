/**
 * Per-call outcomes and the controls around them: receipts (HTTP/2 and binary, destroy), apns-id,
 * onPendingBelow, rateLimit, logger, the one-time warning for unheard rejections, and the option checks
 * that come with HTTP/2 being the default protocol. Loopback mocks only. The RateGate and option checks
 * run once; everything that sends runs on every backend (test/support/backends.ts).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { ApnsManager, InvalidArgumentError, Message, type ApnsManagerOptions, type Logger } from '../src/index.js';
import { startMockApnsHttp2, type MockApnsHttp2Faults } from '../src/testing.js';
import { BACKENDS } from './support/backends.js';
import { certs, closedPort, gateway, makeTokens, manager, managerOn } from './support/helpers.js';

const TOPIC = 'com.example.app';
const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const KEY = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'ABC123DEFG', teamId: 'TEAM123456' };
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

async function mock(t: TestContext, faults: MockApnsHttp2Faults = {}) {
	const c = certs();
	const m = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, keys: [{ keyId: KEY.keyId, teamId: KEY.teamId, publicKey: p8.publicKey }], topics: [TOPIC], faults });
	t.after(() => m.close());
	return m;
}

test('rateLimit counts uses, not only grants: grants left unused past their window lapse, so no window ever carries 2× the limit', async (t) => {
	const { RateGate } = await import('../src/rate-limit.js');
	t.mock.timers.enable({ apis: ['Date', 'setTimeout'], now: 0 });
	t.after(() => t.mock.timers.reset());
	const gate = new RateGate({ limit: 10, intervalMs: 1000 }, () => {});
	t.after(() => gate.close());
	const settle = async () => {
		for (let i = 0; i < 10; i++) await new Promise((resolve) => setImmediate(resolve)); // p-queue's promise turns
	};
	gate.want(40); // asked while no writer can use them (a session still connecting, say)
	await settle();
	const usedAt: number[] = [];
	let now = 0;
	const drainAt = async (at: number) => {
		t.mock.timers.tick(at - now);
		now = at;
		for (let round = 0; round < 3; round++) {
			while (gate.take()) usedAt.push(at);
			gate.want(40);
			await settle();
		}
	};
	for (const at of [1500, 1501, 2000, 2499, 2500, 2600, 3600]) await drainAt(at);
	for (const at of usedAt) assert.ok(usedAt.filter((u) => u > at - 1000 && u <= at).length <= 10, `more than 10 uses in the second before ${at}: ${usedAt.join(',')}`);
	assert.equal(usedAt.filter((u) => u <= 1501).length, 10, 'the lapsed t=0 grants were not spent beside fresh ones');
	assert.ok(usedAt.length >= 20, `and it keeps granting: ${usedAt.join(',')}`);
});

test('options: HTTP/2 is the default; an unknown option is refused naming the closest one; an option of the other protocol is refused', () => {
	const c = certs();
	const cert = { cert: c.client.cert, key: c.client.key };
	const refused = (options: object, argument: string, pattern: RegExp) =>
		assert.throws(() => new ApnsManager(options as never), (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument && pattern.test(e.message), argument);
	refused({ ...cert, gatway: { host: '127.0.0.1', port: 1 } }, 'options.gatway', /did you mean gateway\?/);
	refused({ ...cert, maxRetries: 3 }, 'options.maxRetries', /did you mean maxRetained\?|did you mean maxAttempts\?/);
	refused({ ...cert, host: '127.0.0.1' }, 'options.host', /^Unknown option options\.host: not an option of ApnsManager \(see ApnsManagerOptions\)$/);
	// Options of the libraries people come from get a pointer; a value is never shown (it may be a secret).
	refused({ ...cert, production: true }, 'options.production', /^Unknown option options\.production: node-apn's "production" is environment: 'production' \(or 'sandbox'\) in apns-worker$/);
	refused({ ...cert, connectionRetryLimit: 3 }, 'options.connectionRetryLimit', /is maxAttempts/);
	refused({ ...cert, signingKey: 's3cret-value' }, 'options.signingKey', /^(?!.*s3cret).*token: \{ key, keyId, teamId \}/);
	refused({ ...cert, confirmEvery: 10 }, 'options.confirmEvery', /protocol 'binary'/);
	refused({ ...cert, feedback: { host: '127.0.0.1', port: 1 } }, 'options.feedback', /protocol 'binary'/);
	refused({ ...cert, protocol: 'binary', connections: 2 }, 'options.connections', /protocol 'http2'/);
	refused({ ...cert, protocol: 'binary', topic: TOPIC }, 'options.topic', /protocol 'http2'/);
	// undefined is absent, as with any spread of optional values.
	assert.doesNotThrow(() => new ApnsManager({ ...cert, protocol: 'binary', connections: undefined }));
});

test('a binary send refuses what the binary frame cannot carry, naming it; nothing is queued', async (t) => {
	const gw = await gateway(t);
	const m = manager(t, gw);
	const [token] = makeTokens(1, 91);
	for (const [options, argument] of [
		[{ collapseId: 'c' }, 'options.collapseId'],
		[{ pushType: 'alert' }, 'options.pushType'],
		[{ topic: TOPIC }, 'options.topic'],
		[{ id: '00000000-0000-4000-8000-000000000001' }, 'options.id'],
		[{ priority: 1 }, 'options.priority'],
	] as const) {
		assert.throws(() => m.sendAps(token!, { alert: 'x' }, options), (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument, argument);
	}
	assert.equal(m.stats.queued, 0);
});

for (const backend of BACKENDS) describe(`receipts, pacing, logging (${backend.name})`, () => {
	const manager = managerOn(backend); // every manager below runs on this backend
	function h2(t: TestContext, server: { host: string; port: number }, options: Partial<ApnsManagerOptions> = {}) {
		return manager(t, server, { protocol: 'http2', cert: undefined, key: undefined, token: KEY, topic: TOPIC, retry: { initialDelayMs: 5, maxDelayMs: 20 }, ...options });
	}

	test('a receipt for a mixed HTTP/2 batch: every token sent (with the apns-id the gateway saw) or failed (status, reason, timestamp)', async (t) => {
		const tokens = makeTokens(40, 80);
		const goneAt = new Date('2026-05-06T07:08:09.000Z');
		const server = await mock(t, { unregistered: new Map([[tokens[3]!, goneAt]]), badTokens: [tokens[10]!, tokens[39]!] });
		const m = h2(t, server);
		m.on('deliveryError', () => {});
		const receipt = m.sendAps(tokens, { alert: 'mixed' });
		const other = m.sendAps(tokens[0]!, { alert: 'alone' });
		assert.equal(receipt.count, 40);
		const result = await receipt.settled;
		assert.deepEqual(
			result.failed.map((f) => [f.token, f.status, f.reason, f.timestamp?.toISOString()]),
			[
				[tokens[3], 410, 'Unregistered', goneAt.toISOString()],
				[tokens[10], 400, 'BadDeviceToken', undefined],
				[tokens[39], 400, 'BadDeviceToken', undefined],
			],
		);
		assert.deepEqual(result.dropped, []);
		assert.deepEqual(result.sent.map((s) => s.token), tokens.filter((_, i) => i !== 3 && i !== 10 && i !== 39));
		// The apns-id reported is the one on the wire, distinct per notification.
		const seen = new Map(server.received.filter((r) => r.payload.includes('mixed')).map((r) => [r.token, r.apnsId]));
		for (const s of result.sent) assert.equal(s.apnsId, seen.get(s.token));
		const ids = [...result.sent, ...result.failed].map((x) => x.apnsId!);
		assert.ok(ids.every((id) => UUID.test(id)), 'canonical lowercase v4-shaped UUIDs');
		assert.equal(new Set(ids).size, 40);
		const alone = await other.settled;
		assert.equal(alone.sent.length, 1);
		assert.ok(!ids.includes(alone.sent[0]!.apnsId!), 'another call, another id');
		assert.equal(receipt.pending, 0);
	});

	test("a message's own id is sent as apns-id and reported back; an id for several tokens is refused", async (t) => {
		const server = await mock(t, { badTokens: makeTokens(1, 81) });
		const m = h2(t, server);
		m.on('deliveryError', () => {});
		const id = '123E4567-E89B-42D3-A456-426614174000';
		const [good] = makeTokens(1, 82);
		const ok = m.send(new Message(good!, { aps: { alert: 'x' } }, { id }));
		const bad = m.sendAps(makeTokens(1, 81), { alert: 'x' }, { id: '00000000-0000-4000-8000-000000000001' });
		assert.deepEqual((await ok.settled).sent, [{ token: good, apnsId: id.toLowerCase() }]);
		assert.equal(server.received[0]!.apnsId, id.toLowerCase());
		assert.deepEqual((await bad.settled).failed.map((f) => [f.reason, f.apnsId]), [['BadDeviceToken', '00000000-0000-4000-8000-000000000001']]);
		assert.throws(() => m.sendAps(makeTokens(2, 83), { alert: 'x' }, { id }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.id');
		assert.throws(() => m.sendAps(good!, { alert: 'x' }, { id: 'not-a-uuid' }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.id');
	});

	test('one Message sent twice: two sends, two receipts, each settled on its own', async (t) => {
		const server = await mock(t);
		const m = h2(t, server);
		const message = new Message(makeTokens(5, 84), { aps: { alert: 'twice' } });
		const first = m.send(message);
		const second = m.send(message);
		const [a, b] = await Promise.all([first.settled, second.settled]);
		assert.equal(a.sent.length, 5);
		assert.equal(b.sent.length, 5);
		assert.equal(server.acceptedCount, 10);
		assert.equal(new Set([...a.sent, ...b.sent].map((s) => s.apnsId)).size, 10);
	});

	test('binary receipts: delivered on the gateway’s word, failures with the status description, no apns-id', async (t) => {
		const tokens = makeTokens(30, 85);
		const gw = await gateway(t, { rejectTokens: { [tokens[12]!]: 8 } });
		const m = manager(t, gw);
		m.on('deliveryError', () => {});
		const receipt = m.sendAps(tokens, { alert: 'b' });
		const result = await receipt.settled;
		assert.deepEqual(result.failed, [{ token: tokens[12], status: 8, reason: 'Invalid token', timestamp: undefined, apnsId: undefined }]);
		assert.equal(result.sent.length, 29);
		assert.ok(result.sent.every((s) => s.apnsId === undefined));
	});

	test('destroy() resolves receipts with the dropped tokens listed; nothing rejects', async (t) => {
		const port = await closedPort();
		const m = h2(t, { host: '127.0.0.1', port });
		const tokens = makeTokens(12, 86);
		const a = m.sendAps(tokens.slice(0, 10), { alert: 'x' });
		const b = m.sendAps(tokens.slice(10), { alert: 'y' });
		const pending = m.onPendingBelow(1);
		m.destroy();
		assert.deepEqual(await a.settled, { sent: [], failed: [], dropped: tokens.slice(0, 10) });
		assert.deepEqual((await b.settled).dropped, tokens.slice(10));
		await pending; // nothing pending after destroy
		assert.equal(m.stats.dropped, 12);
	});

	test('destroy() with requests in flight and retries waiting: every token is listed dropped exactly once', async (t) => {
		const tokens = makeTokens(20, 87);
		// Half never answered (in flight at destroy), half answered 503 (waiting to be retried at destroy).
		const server = await mock(t, { neverAnswer: tokens.slice(0, 10), transient: { tokens: tokens.slice(10), status: 503, times: 100 } });
		const m = h2(t, server, { token: undefined, cert: certs().client.cert, key: certs().client.key, retry: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
		const receipt = m.sendAps(tokens, { alert: 'x' });
		// Wait on the mock: all 20 asked, the 10 503s answered. (The manager re-queues a 503 only when its
		// backoff ends — 30 to 60 s here — so waiting for `resent` waited that long, and the retries were no
		// longer waiting at destroy.) The pause lets the answers reach the client, on whichever thread.
		while (server.requests < 20 || server.answers.length < 10) await new Promise((resolve) => setTimeout(resolve, 5));
		await new Promise((resolve) => setTimeout(resolve, 100));
		assert.deepEqual([server.received.length, m.stats.resent], [0, 0], 'nothing delivered, no retry re-sent yet');
		m.destroy();
		const result = await receipt.settled;
		assert.deepEqual([...result.dropped].sort(), [...tokens].sort());
		assert.deepEqual([result.sent.length, result.failed.length], [0, 0]);
	});

	test('onPendingBelow: a producer of many batches keeps at most one batch beyond the limit queued', async (t) => {
		const server = await mock(t);
		const m = h2(t, server);
		let peak = 0;
		for (let batch = 0; batch < 20; batch++) {
			await m.onPendingBelow(500);
			m.sendAps(makeTokens(250, 1000 + batch), { alert: `batch ${batch}` });
			peak = Math.max(peak, m.pending);
		}
		await m.flushMessages();
		assert.ok(peak < 500 + 250, `peak pending ${peak}`);
		assert.equal(server.acceptedCount, 5000);
		assert.throws(() => m.onPendingBelow(0), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'limit');
		assert.throws(() => m.onPendingBelow('10' as never), InvalidArgumentError);
	});

	test('rateLimit: at most `limit` notifications go out in any interval (p-queue, strict window), driven by mock timers', async (t) => {
		const server = await mock(t);
		const c = certs();
		const m = h2(t, server, { token: undefined, cert: c.client.cert, key: c.client.key, rateLimit: { limit: 10, intervalMs: 1000 } });
		t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
		t.after(() => t.mock.timers.reset());
		const receipt = m.sendAps(makeTokens(25, 88), { alert: 'slow' });
		const settle = async (): Promise<void> => {
			for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
		};
		const until = async (done: () => boolean): Promise<void> => {
			while (!done()) await new Promise((resolve) => setImmediate(resolve));
		};
		await until(() => server.acceptedCount >= 10);
		await settle();
		assert.equal(m.stats.written, 10, 'the first window');
		t.mock.timers.tick(999);
		await settle();
		assert.equal(m.stats.written, 10, 'still the first window');
		t.mock.timers.tick(1);
		await until(() => server.acceptedCount >= 20);
		await settle();
		assert.equal(m.stats.written, 20, 'the second window');
		t.mock.timers.tick(1000);
		const result = await receipt.settled;
		assert.equal(result.sent.length, 25);
		assert.equal(m.stats.written, 25);
		assert.throws(() => h2(t, server, { rateLimit: { limit: 0 } }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.rateLimit.limit');
		assert.throws(() => h2(t, server, { rateLimit: { limit: 5, per: 1000 } as never }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.rateLimit.per');
	});

	test('rateLimit on the binary protocol: a window held back by the limit is not a reason to probe (no reconnect per window)', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw, { rateLimit: { limit: 10, intervalMs: 1000 } });
		let connections = 0;
		m.on('connected', () => connections++);
		t.mock.timers.enable({ apis: ['setTimeout', 'Date'] });
		t.after(() => t.mock.timers.reset());
		const tokens = makeTokens(50, 92);
		const receipt = m.sendAps(tokens, { alert: 'paced' });
		const flushed = m.flushMessages(); // a waiting flush must not make every window probe either
		for (let window = 1; window <= 5; window++) {
			while (gw.acceptedCount < 10 * window) await new Promise((resolve) => setImmediate(resolve));
			for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
			assert.equal(m.stats.written, 10 * window, `window ${window}`);
			t.mock.timers.tick(1000);
		}
		await flushed;
		assert.equal((await receipt.settled).sent.length, 50);
		assert.ok(connections <= 2, `${connections} connections: one, and the probe's hand-over at the end`);
	});

	test('logger: lifecycle, failures and re-sends logged with stable fields; tokens shortened; no secret in any line', async (t) => {
		const tokens = makeTokens(10, 89);
		const server = await mock(t, { badTokens: [tokens[4]!], transient: { tokens: [tokens[6]!], status: 503, times: 1 } });
		const lines: Array<{ level: string; fields: Record<string, unknown>; message: string | undefined }> = [];
		const record = (level: string) => (fields: object, message?: string) => lines.push({ level, fields: fields as Record<string, unknown>, message });
		const logger: Logger = { debug: record('debug'), info: record('info'), warn: record('warn'), error: record('error') };
		const m = h2(t, server, { logger });
		m.on('deliveryError', () => {});
		await m.sendAps(tokens, { alert: 'logged' }).settled;
		await m.close();
		const events = (name: string) => lines.filter((l) => l.fields['event'] === name);
		assert.equal(events('connected').length, 1);
		assert.deepEqual(events('deliveryError').map((l) => [l.level, l.fields['token'], l.fields['status'], l.fields['reason']]), [['warn', `${tokens[4]!.slice(0, 8)}…`, 400, 'BadDeviceToken']]);
		assert.deepEqual(events('resent').map((l) => [l.fields['count'], l.fields['reason']]), [[1, 'retry']]);
		assert.equal(events('closed').length, 1);
		const text = JSON.stringify(lines);
		for (const token of tokens) assert.ok(!text.includes(token), 'no whole token');
		assert.ok(!text.includes(KEY.key.split('\n')[1]!) && !text.includes('bearer'), 'no key, no JWT');
		assert.throws(() => h2(t, server, { logger: { info() {} } as never }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.logger.debug');
	});

	test('a logger that throws breaks nothing: every notification settles, the throw surfaces as an error event', async (t) => {
		const tokens = makeTokens(20, 93);
		const server = await mock(t, { badTokens: [tokens[5]!] });
		const boom = () => {
			throw new Error('logger down');
		};
		const m = h2(t, server, { logger: { debug: boom, info: boom, warn: boom, error: boom }, errorHandler: () => {} });
		const errors: unknown[] = [];
		m.on('error', (e) => errors.push(e));
		const result = await m.sendAps(tokens, { alert: 'x' }).settled;
		assert.deepEqual([result.sent.length, result.failed.length], [19, 1]);
		assert.ok(errors.length >= 2 && errors.every((e) => (e as Error).message === 'logger down'));
	});

	test('a rejection nobody hears raises one process warning per manager; a handler, a listener or an awaited receipt silences it', async (t) => {
		const tokens = makeTokens(6, 90);
		const server = await mock(t, { badTokens: tokens });
		const warnings: Error[] = [];
		const onWarning = (w: Error) => {
			if ((w as { code?: string }).code === 'APNS_UNHANDLED_REJECTION') warnings.push(w);
		};
		process.on('warning', onWarning);
		t.after(() => process.off('warning', onWarning));
		const unheard = h2(t, server);
		unheard.sendAps(tokens.slice(0, 3), { alert: 'x' });
		await unheard.flushMessages();
		const handled = h2(t, server, { errorHandler: () => {} });
		handled.sendAps(tokens[3]!, { alert: 'x' });
		await handled.flushMessages();
		const awaited = h2(t, server);
		await awaited.sendAps(tokens[4]!, { alert: 'x' }).settled;
		await new Promise((resolve) => setImmediate(resolve)); // warnings are emitted on the next tick
		assert.equal(warnings.length, 1);
		assert.match(warnings[0]!.message, /BadDeviceToken.*nothing is listening/);
	});
});
