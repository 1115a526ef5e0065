/**
 * Hostile gateways, one test per failure mode, both protocols. Each counts every notification: accepted
 * by the mock, reported failed (exactly once), or still pending — never none of these (0 lost) — with
 * duplicates no more than `stats.inDoubt`, and bounds the work the peer costs us: every connection that
 * ended before the gateway settled anything on it is reported as a `connectError` (so it waited out the
 * backoff: test/manager.test.ts proves each connect waits `retryInMs`), and the connections made stay
 * within what attempts × notifications allow. No assertion reads the clock. Every case runs on every
 * backend (test/support/backends.ts).
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { describe, test, type TestContext } from 'node:test';
import { TimeoutError, type ApnsManager, type ApnsManagerOptions, type DeliveryError } from '../src/index.js';
import { makeTestCertificates, startMockApnsHttp2, startMockGateway, type MockApnsHttp2Faults, type MockApnsHttp2Options, type MockGatewayFaults } from '../src/testing.js';
import { BACKENDS } from './support/backends.js';
import { certs, gateway, makeTokens, managerOn } from './support/helpers.js';

/** Fast timings so each case runs in seconds; the mechanisms are the same at the defaults. */
const FAST: Partial<ApnsManagerOptions> = { reconnect: { initialDelayMs: 5, maxDelayMs: 40, jitter: 0.5 }, maxAttempts: 3 };
const MAX_ATTEMPTS = 3;

/** What a manager reported: failures by token (a second report of one token is counted), connect errors. */
function watch(m: ApnsManager) {
	const failures = new Map<string, DeliveryError>();
	const connectErrors: string[] = [];
	let reportedTwice = 0;
	m.on('deliveryError', (e) => {
		if (failures.has(e.token)) reportedTwice++;
		failures.set(e.token, e);
	});
	m.on('connectError', (e) => connectErrors.push(e.message));
	return {
		failures,
		connectErrors,
		get reportedTwice() {
			return reportedTwice;
		},
	};
}

/** Where every sent token ended up. `lost` = never accepted, never reported; with nothing pending it must be 0. */
function tally(sent: readonly string[], counts: ReadonlyMap<string, number>, failures: ReadonlyMap<string, unknown>) {
	let accepted = 0;
	let duplicated = 0;
	let lost = 0;
	for (const token of sent) {
		const n = counts.get(token) ?? 0;
		if (n > 0) accepted++;
		duplicated += Math.max(0, n - 1);
		if (n === 0 && !failures.has(token)) lost++;
	}
	return { accepted, duplicated, lost };
}

/** Every failure is status 0 with this reason, once per token. */
function allUnanswered(failures: ReadonlyMap<string, DeliveryError>, reason: string, description?: RegExp): void {
	for (const [token, e] of failures) {
		assert.equal(e.status, 0, token);
		assert.equal(e.reason, reason, token);
		if (description !== undefined) assert.match(e.description, description);
	}
}

for (const backend of BACKENDS) {
	const manager = managerOn(backend); // every manager below runs on this backend
	describe(`binary: a hostile gateway (${backend.name})`, () => {
		const bin = (t: TestContext, gw: { host: string; port: number }, options: Partial<ApnsManagerOptions> = {}) => manager(t, gw, { ...FAST, graceMs: 300, ...options });

		const garbled: Array<[keyof MockGatewayFaults, RegExp]> = [
			['garbage', /sent command 222, expected an error response/],
			['wrongCommand', /sent command 9, expected an error response/],
			['truncatedError', /inside an error response \(3 of 6 bytes\)/],
			['errorUnknownIdent', /named ident 2147483647, never sent on this connection/],
		];
		for (const [fault, why] of garbled) {
			test(`${fault} on every connection: each notification is isolated and reported ConnectionLost after maxAttempts; every connection is a counted failure`, async (t) => {
				const gw = await gateway(t, { [fault]: true });
				const m = bin(t, gw);
				const w = watch(m);
				const tokens = makeTokens(8, 400);
				m.sendAps(tokens, { alert: 'x' });
				await m.flushMessages();
				assert.equal(w.failures.size, 8);
				assert.equal(w.reportedTwice, 0);
				allUnanswered(w.failures, 'ConnectionLost', /alone on its connection/);
				assert.deepEqual(tally(tokens, gw.counts, w.failures), { accepted: 0, duplicated: 0, lost: 0 });
				assert.equal(m.pending, 0);
				assert.match(w.connectErrors[0]!, why);
				// Two unisolated rounds, then at most maxAttempts connections per notification (plus a spare in waiting).
				assert.ok(gw.connectionsAccepted <= 2 + tokens.length * MAX_ATTEMPTS + 2, `${gw.connectionsAccepted} connections`);
				assert.ok(w.connectErrors.length >= gw.connectionsAccepted - 2, `${w.connectErrors.length} connect errors for ${gw.connectionsAccepted} connections`);
			});
		}

		test('a connection dropped whenever one token arrives: that token is isolated and reported; every other is delivered; duplicates ≤ in doubt', async (t) => {
			const tokens = makeTokens(600, 401);
			const bad = tokens[300]!;
			const gw = await gateway(t, { dropOnToken: bad });
			const m = bin(t, gw, { graceMs: 5000 });
			const w = watch(m);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.deepEqual([...w.failures.keys()], [bad]);
			allUnanswered(w.failures, 'ConnectionLost');
			const r = tally(tokens, gw.counts, w.failures);
			assert.deepEqual([r.accepted, r.lost], [599, 0]);
			assert.ok(r.duplicated <= m.stats.inDoubt, `${r.duplicated} duplicated, ${m.stats.inDoubt} in doubt`);
			assert.ok(gw.connectionsAccepted <= 60, `${gw.connectionsAccepted} connections`);
			t.diagnostic(`connections ${gw.connectionsAccepted}, duplicated ${r.duplicated}, in doubt ${m.stats.inDoubt}`);
		});

		test('a gateway that never reads: nothing is counted delivered; connections are presumed dead after graceMs and reported; every notification is pending or reported', async (t) => {
			const gw = await gateway(t, { neverRead: true });
			const m = bin(t, gw);
			const w = watch(m);
			const tokens = makeTokens(3000, 402);
			m.sendAps(tokens, { alert: 'x' }, { extra: { pad: 'p'.repeat(1000) } });
			await assert.rejects(m.flushMessages({ timeoutMs: 2500 }), TimeoutError);
			assert.equal(m.stats.delivered, 0, 'no evidence, no delivery');
			assert.equal(gw.acceptedCount, 0);
			assert.equal(m.pending + w.failures.size, tokens.length, 'every notification is pending or reported');
			allUnanswered(w.failures, 'ConnectionLost');
			assert.ok(w.connectErrors.some((e) => /No answer from the gateway within 300 ms/.test(e)), w.connectErrors[0]);
			assert.ok(m.stats.inDoubt > 0, 'what a dead connection held was re-sent in doubt');
			// Unreported: only those still open when the flush gave up (at most 3 awaiting answers, the active one, a spare).
			assert.ok(gw.connectionsAccepted <= w.connectErrors.length + 5, `${gw.connectionsAccepted} connections, ${w.connectErrors.length} reported`);
		});

		test('a rejection answered late (every answer 1 s late): reported once with its status; nothing written after it is lost or settled by time', async (t) => {
			const tokens = makeTokens(4000, 403);
			const bad = tokens[2000]!;
			const gw = await gateway(t, { rejectTokens: { [bad]: 8 }, errorDelayMs: 1000 });
			const m = bin(t, gw, { graceMs: 3000 });
			const w = watch(m);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.deepEqual([...w.failures.keys()], [bad]);
			assert.deepEqual([w.failures.get(bad)!.status, w.reportedTwice], [8, 0]);
			assert.deepEqual(tally(tokens, gw.counts, w.failures), { accepted: 3999, duplicated: 0, lost: 0 });
			assert.equal(m.stats.delivered, 3999, 'each on the gateway\'s word');
		});

		test('a gateway that stalls reading on every new connection (shorter than graceMs): everything delivered exactly once over a handful of connections', async (t) => {
			const gw = await gateway(t, { stallReadMs: 300 });
			const m = bin(t, gw, { graceMs: 5000 });
			const w = watch(m);
			const tokens = makeTokens(20_000, 404);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.deepEqual(tally(tokens, gw.counts, w.failures), { accepted: 20_000, duplicated: 0, lost: 0 });
			assert.deepEqual(w.connectErrors, []);
			assert.ok(gw.connectionsAccepted <= 20, `${gw.connectionsAccepted} connections`);
		});

		test('close({ timeoutMs }) against a gateway that never reads settles: rejects with the number dropped, closes once', async (t) => {
			const gw = await gateway(t, { neverRead: true });
			const m = bin(t, gw, { graceMs: 60_000 });
			let closed = 0;
			m.on('closed', () => closed++);
			m.sendAps(makeTokens(5000, 405), { alert: 'x' }, { extra: { pad: 'p'.repeat(1000) } });
			await assert.rejects(m.close({ timeoutMs: 500 }), (e: unknown) => e instanceof TimeoutError && e.pending === 5000);
			assert.deepEqual([closed, m.pending], [1, 0]);
		});

		test('TLS 1.3 server refusing the client certificate after the handshake: each connection is a counted failure that says so', async (t) => {
			const c = certs();
			const stranger = makeTestCertificates();
			const gw = await startMockGateway({ server: c.server, ca: stranger.ca.cert });
			t.after(() => gw.close());
			const m = bin(t, gw, { maxAttempts: 2 });
			const w = watch(m);
			const tokens = makeTokens(2, 406);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 2);
			allUnanswered(w.failures, 'ConnectionLost');
			assert.match(w.connectErrors[0]!, /TLS 1\.3 a refused client certificate/);
			assert.ok(w.connectErrors.length >= gw.connectionsAccepted - 2, `${w.connectErrors.length} reported of ${gw.connectionsAccepted}`);
			assert.ok(gw.connectionsAccepted <= 2 + tokens.length * 2 + 2, `${gw.connectionsAccepted} connections`);
		});
	});

	describe(`HTTP/2: a hostile gateway (${backend.name})`, () => {
		const TOPIC = 'com.example.app';
		const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
		const KEY = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'HOSTILE123', teamId: 'TEAMHOSTIL' };

		async function api(t: TestContext, faults: MockApnsHttp2Faults, extra: Partial<MockApnsHttp2Options> = {}) {
			const c = certs();
			const server = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, keys: [{ keyId: KEY.keyId, teamId: KEY.teamId, publicKey: p8.publicKey }], topics: [TOPIC], faults, ...extra });
			t.after(() => server.close());
			return server;
		}
		const h2 = (t: TestContext, server: { host: string; port: number }, options: Partial<ApnsManagerOptions> = {}) =>
			manager(t, server, { protocol: 'http2', cert: undefined, key: undefined, token: KEY, topic: TOPIC, ...FAST, retry: { initialDelayMs: 5, maxDelayMs: 40 }, requestTimeoutMs: 200, ...options });

		test('an outage (503 on every request): each notification is tried maxAttempts times and reported, one heap-scheduled retry at a time', async (t) => {
			const server = await api(t, { statusEvery: { every: 1, status: 503 } });
			const m = h2(t, server);
			const w = watch(m);
			const tokens = makeTokens(300, 410);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 300);
			assert.deepEqual([...new Set([...w.failures.values()].map((e) => `${e.status} ${e.reason}`))], ['503 ServiceUnavailable']);
			assert.equal(server.requests, 300 * MAX_ATTEMPTS, 'exactly maxAttempts requests each');
			assert.deepEqual([m.pending, m.stats.resent, m.stats.inDoubt], [0, 300 * (MAX_ATTEMPTS - 1), 0]);
		});

		test('retry-after: 99999999 is capped at retry.maxDelayMs: no timer overflow, every notification settles', async (t) => {
			const server = await api(t, { statusEvery: { every: 1, status: 429, retryAfterSeconds: 99_999_999 } });
			const m = h2(t, server);
			const w = watch(m);
			const warnings: string[] = [];
			const onWarning = (warning: Error): void => void warnings.push(warning.name);
			process.on('warning', onWarning);
			t.after(() => process.off('warning', onWarning));
			const tokens = makeTokens(20, 411);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 20);
			assert.equal(server.requests, 20 * MAX_ATTEMPTS);
			assert.deepEqual(warnings.filter((name) => name === 'TimeoutOverflowWarning'), []);
		});

		for (const code of ['REFUSED_STREAM', 'INTERNAL_ERROR', 'CANCEL'] as const) {
			test(`RST_STREAM ${code} on every stream: each reset is a backed-off attempt; reported StreamReset after maxAttempts`, async (t) => {
				const server = await api(t, { resetStreams: { code } });
				const m = h2(t, server);
				const w = watch(m);
				const tokens = makeTokens(10, 412);
				m.sendAps(tokens, { alert: 'x' });
				await m.flushMessages();
				assert.equal(w.failures.size, 10);
				assert.equal(w.reportedTwice, 0);
				allUnanswered(w.failures, 'StreamReset', new RegExp(`\\(${code}\\) ${MAX_ATTEMPTS} times`));
				assert.equal(server.requests, 10 * MAX_ATTEMPTS, 'exactly maxAttempts requests each, never a hot loop');
				// REFUSED_STREAM says the request was never processed; the others may have been.
				assert.equal(m.stats.inDoubt, code === 'REFUSED_STREAM' ? 0 : 10 * (MAX_ATTEMPTS - 1));
			});
		}

		test('a request never answered: cancelled at requestTimeoutMs, its session replaced; the others are not held up (token auth, unanswered first stream)', async (t) => {
			const tokens = makeTokens(50, 413);
			const server = await api(t, { neverAnswer: [tokens[0]!] });
			const m = h2(t, server, { maxAttempts: 2 });
			const w = watch(m);
			m.sendAps(tokens, { alert: 'x' }); // tokens[0] is the session's first, lone stream
			await m.flushMessages();
			assert.deepEqual([...w.failures.keys()], [tokens[0]]);
			allUnanswered(w.failures, 'RequestTimeout', /No answer within 200 ms/);
			assert.deepEqual(tally(tokens, server.counts, w.failures), { accepted: 49, duplicated: 0, lost: 0 });
			assert.ok(server.sessions >= 2, 'the session with the unanswered request was replaced');
			assert.ok(w.connectErrors.some((e) => /went unanswered for 200 ms/.test(e)), w.connectErrors[0]);
		});

		test('GOAWAY(0) on every connect: each session is a counted failure; each notification, alone on its session, is reported ConnectionLost', async (t) => {
			const server = await api(t, { goawayOnConnect: true });
			const m = h2(t, server, { maxAttempts: 2 });
			const w = watch(m);
			const tokens = makeTokens(3, 414);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 3);
			allUnanswered(w.failures, 'ConnectionLost');
			assert.match(w.connectErrors[0]!, /GOAWAY NO_ERROR \(last stream 0\)/);
			assert.ok(w.connectErrors.length >= server.sessions - 1, `${w.connectErrors.length} reported of ${server.sessions} sessions`);
			assert.ok(server.sessions <= tokens.length * 2 + 2, `${server.sessions} sessions`);
			assert.equal(server.acceptedCount, 0);
		});

		test('TLS 1.3 server refusing the client certificate after the handshake: each session is a counted failure that says so', async (t) => {
			const stranger = makeTestCertificates();
			const c = certs();
			const server = await startMockApnsHttp2({ server: c.server, ca: stranger.ca.cert, requireClientCert: true, topics: [TOPIC] });
			t.after(() => server.close());
			const m = manager(t, server, { protocol: 'http2', ...FAST, maxAttempts: 2 });
			const w = watch(m);
			const tokens = makeTokens(2, 415);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 2);
			allUnanswered(w.failures, 'ConnectionLost');
			assert.match(w.connectErrors[0]!, /TLS 1\.3 a refused client certificate/);
			assert.ok(w.connectErrors.length >= server.connectionsAccepted - 1, `${w.connectErrors.length} reported of ${server.connectionsAccepted}`);
			assert.ok(server.connectionsAccepted <= tokens.length * 2 + 2, `${server.connectionsAccepted} connections`);
		});

		test('a request that kills its session whenever it arrives, on sessions that answered others (cert auth, many in flight): isolated, reported ConnectionLost; the rest delivered; duplicates ≤ in doubt', async (t) => {
			const tokens = makeTokens(500, 417);
			const bad = tokens[250]!;
			const server = await api(t, { killSessionOnToken: bad });
			const m = manager(t, server, { protocol: 'http2', ...FAST, retry: { initialDelayMs: 5, maxDelayMs: 40 } });
			const w = watch(m);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.deepEqual([...w.failures.keys()], [bad]);
			allUnanswered(w.failures, 'ConnectionLost', /only request on it/);
			const r = tally(tokens, server.counts, w.failures);
			assert.deepEqual([r.accepted, r.lost], [499, 0]);
			assert.ok(r.duplicated <= m.stats.inDoubt, `${r.duplicated} duplicated, ${m.stats.inDoubt} in doubt`);
			assert.ok(server.sessions <= 20, `${server.sessions} sessions`);
			t.diagnostic(`sessions ${server.sessions}, in doubt ${m.stats.inDoubt}, duplicated ${r.duplicated}`);
		});

		test('GOAWAY mid-run: close() resolves, nothing lost or duplicated', async (t) => {
			const server = await api(t, { goawayAfter: 100 }, { maxConcurrentStreams: 50 });
			const m = h2(t, server);
			const w = watch(m);
			const tokens = makeTokens(2000, 416);
			m.sendAps(tokens, { alert: 'x' });
			await m.close();
			assert.deepEqual(tally(tokens, server.counts, w.failures), { accepted: 2000, duplicated: 0, lost: 0 });
			assert.ok(server.goaways.length >= 2);
		});
	});
}
