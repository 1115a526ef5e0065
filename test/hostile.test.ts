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
import { BLACK_HOLE_SESSIONS, RESET_BURST, RESETS_PER_SECOND } from '../src/drivers/http2.js';
import { certs, gateway, makeTokens, managerOn, startRelay, type Relay } from './support/helpers.js';

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

		/** Requests the mock saw, by token (answered or not). */
		function requestsByToken() {
			const counts = new Map<string, number>();
			return { counts, onRequest: (token: string) => void counts.set(token, (counts.get(token) ?? 0) + 1) };
		}

		test('a request never answered on a live session (token auth, the lone first stream): cancelled at requestTimeoutMs, an attempt each time; the session is kept and the others are not held up', async (t) => {
			const tokens = makeTokens(50, 413);
			const seen = requestsByToken();
			const server = await api(t, { neverAnswer: [tokens[0]!] }, { onRequest: seen.onRequest });
			const m = h2(t, server, { maxAttempts: 2 });
			const w = watch(m);
			m.sendAps(tokens, { alert: 'x' }); // tokens[0] is the session's first, lone stream
			await m.flushMessages();
			assert.deepEqual([...w.failures.keys()], [tokens[0]]);
			allUnanswered(w.failures, 'RequestTimeout', /No answer within 200 ms \(requestTimeoutMs\), 2 times/);
			assert.deepEqual(tally(tokens, server.counts, w.failures), { accepted: 49, duplicated: 0, lost: 0 });
			assert.equal(seen.counts.get(tokens[0]!), 2, 'one request per attempt');
			// The session answered the others (and its PINGs): it is alive, and kept.
			assert.deepEqual([server.sessions, w.connectErrors], [1, []]);
		});

		test('1% black-holed (5 of 500 never answered): each costs its own attempts, side by side; nothing else is held up; one session throughout', async (t) => {
			const tokens = makeTokens(500, 418);
			const holes = tokens.filter((_, i) => i % 100 === 50);
			const seen = requestsByToken();
			const server = await api(t, { neverAnswer: holes }, { onRequest: seen.onRequest });
			// 1 s: long enough that the mock answers every other request in time on a busy machine.
			const m = h2(t, server, { requestTimeoutMs: 1000 });
			const w = watch(m);
			// When the first is reported, every other black hole is on its last attempt or done: they
			// were tried side by side, not one after another (which left the others at one request each).
			const atFirstReport = new Promise<number[]>((resolve) => m.once('deliveryError', () => resolve(holes.map((h) => seen.counts.get(h) ?? 0))));
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			for (const count of await atFirstReport) assert.ok(count >= MAX_ATTEMPTS - 1, `${count} requests of a black hole when the first was reported`);
			assert.deepEqual(new Set(w.failures.keys()), new Set(holes));
			allUnanswered(w.failures, 'RequestTimeout', new RegExp(`No answer within 1000 ms \\(requestTimeoutMs\\), ${MAX_ATTEMPTS} times`));
			const r = tally(tokens, server.counts, w.failures);
			assert.deepEqual([r.accepted, r.lost], [495, 0]);
			// An answer later than requestTimeoutMs is a timeout too, re-sent (in doubt): none is expected here.
			assert.ok(r.duplicated <= m.stats.inDoubt - holes.length * (MAX_ATTEMPTS - 1), `${r.duplicated} duplicated, ${m.stats.inDoubt} in doubt`);
			for (const h of holes) assert.equal(seen.counts.get(h), MAX_ATTEMPTS, 'one request per attempt');
			assert.equal(server.requests, 495 + r.duplicated + holes.length * MAX_ATTEMPTS, 'requests written');
			assert.deepEqual([server.sessions, w.connectErrors, w.reportedTwice, m.pending], [1, [], 0, 0]);
		});

		for (const auth of ['cert', 'token'] as const) {
			test(`100% black-holed after the first 100 answers (100 streams a session, ${auth} auth): the pool grows beside the black holes (at most ${BLACK_HOLE_SESSIONS} sessions), each notification costs its own attempts side by side; the extra sessions close once idle`, async (t) => {
				const tokens = makeTokens(600, 419);
				const seen = requestsByToken();
				const server = await api(t, { neverAnswerAfter: 100 }, { maxConcurrentStreams: 100, onRequest: seen.onRequest });
				// Token auth: the extra sessions carry what the server allows at once (the key was proven on the first), never a lone stream.
				const credentials = auth === 'token' ? { cert: undefined, key: undefined, token: KEY, topic: TOPIC } : {};
				const m = manager(t, server, { protocol: 'http2', ...credentials, ...FAST, retry: { initialDelayMs: 5, maxDelayMs: 40 }, requestTimeoutMs: 500 });
				const w = watch(m);
				const ended: string[] = [];
				let allEnded: (() => void) | undefined;
				m.on('disconnected', (info) => {
					ended.push(info.reason);
					if (ended.length === server.sessions - 1) allEnded?.();
				});
				// When the first is reported, every black hole has been tried (one session of 100 streams at a time reached 100 of 500).
				const atFirstReport = new Promise<number>((resolve) => m.once('deliveryError', () => resolve(tokens.filter((tk) => (seen.counts.get(tk) ?? 0) === 0).length)));
				m.sendAps(tokens, { alert: 'x' });
				await m.flushMessages();
				assert.equal(await atFirstReport, 0, 'tokens never tried when the first black hole was reported');
				const r = tally(tokens, server.counts, w.failures);
				assert.deepEqual([r.accepted, w.failures.size, r.lost, r.duplicated, w.reportedTwice], [100, 500, 0, 0, 0]);
				allUnanswered(w.failures, 'RequestTimeout');
				for (const token of w.failures.keys()) assert.equal(seen.counts.get(token), MAX_ATTEMPTS, 'one request per attempt');
				assert.ok(server.sessions >= 2 && server.sessions <= BLACK_HOLE_SESSIONS, `${server.sessions} sessions`);
				// Once no black hole is left for requestTimeoutMs, the sessions opened for them are closed, not failed.
				if (ended.length < server.sessions - 1) await new Promise<void>((resolve) => (allEnded = resolve));
				assert.deepEqual([ended, w.connectErrors], [ended.map(() => 'closed'), []]);
			});
		}

		test(`a wave of 1,200 black holes where the server allows 1,000 streams (cert auth): each settled at its deadline, its stream reset within the budget (${RESET_BURST} at once, ${RESETS_PER_SECOND}/s) and a session over it retired, not reset further: the server never sends GOAWAY for a rapid reset`, async (t) => {
			const tokens = makeTokens(1200, 422);
			const seen = requestsByToken();
			const server = await api(t, { neverAnswer: true }, { onRequest: seen.onRequest });
			const m = manager(t, server, { protocol: 'http2', ...FAST, retry: { initialDelayMs: 5, maxDelayMs: 40 }, requestTimeoutMs: 300 });
			const w = watch(m);
			const ended: string[] = [];
			const endedIds: number[] = [];
			const goaways: string[] = [];
			m.on('disconnected', (info) => {
				ended.push(info.reason);
				endedIds.push(info.connection);
				if (info.reason === 'goaway') goaways.push(info.error?.message ?? '');
			});
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 1200);
			allUnanswered(w.failures, 'RequestTimeout');
			for (const token of tokens) assert.equal(seen.counts.get(token), MAX_ATTEMPTS, 'one request per attempt');
			// nghttp2 (the mock's HTTP/2, and many servers') answers >1,000 resets at once with GOAWAY INTERNAL_ERROR.
			assert.deepEqual(goaways, []);
			assert.deepEqual(w.connectErrors, []);
			// 1,000 black holes at once are more than the first session's budget: rather than hold the streams
			// it could not reset, it was retired — closed by us, not failed — while the black holes were still
			// being tried (holding them, it stayed open until idle, after the flush).
			assert.ok(endedIds.includes(1), `sessions closed before the flush resolved: ${endedIds.join(', ')}`);
			assert.deepEqual(ended, ended.map(() => 'closed'));
			assert.ok(server.peakSessions <= BLACK_HOLE_SESSIONS, `${server.peakSessions} sessions at once`);
		});

		test('a session that answers nothing after a request, not even a PING, is dead: destroyed at pingTimeoutMs, its requests lost with it (in doubt); the request that hangs it is isolated and reported; the rest delivered', async (t) => {
			const tokens = makeTokens(300, 420);
			const bad = tokens[150]!;
			let relay: Relay | undefined;
			// The peer hangs whenever `bad` reaches it: the relay stops passing anything on that connection.
			const server = await api(t, {}, { onRequest: (token) => token === bad && relay?.freeze() });
			relay = await startRelay(server);
			t.after(() => relay.close());
			const m = manager(t, relay, { protocol: 'http2', ...FAST, retry: { initialDelayMs: 5, maxDelayMs: 40 }, requestTimeoutMs: 200, pingTimeoutMs: 100 });
			const w = watch(m);
			const lost: string[] = [];
			m.on('disconnected', (info) => info.error !== undefined && lost.push(info.error.message));
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.deepEqual([...w.failures.keys()], [bad]);
			// Never a black hole: nothing sent after it was answered (a PING jumps the queue, so it proves only what had left it).
			allUnanswered(w.failures, 'ConnectionLost');
			// `bad` itself may have been accepted: the mock answered it, and the answer never came back.
			const r = tally(tokens.filter((token) => token !== bad), server.counts, w.failures);
			assert.deepEqual([r.accepted, r.lost], [299, 0]);
			assert.ok(r.duplicated <= m.stats.inDoubt, `${r.duplicated} duplicated, ${m.stats.inDoubt} in doubt`);
			assert.ok(lost.some((message) => /PING unanswered for 100 ms/.test(message)), lost.join('; '));
			assert.ok(relay.connections <= 20, `${relay.connections} sessions`);
		});

		test('a peer that hangs on every session (nothing answered, not even a PING): each session is a counted failure, backed off; each notification is reported', async (t) => {
			let relay: Relay | undefined;
			const server = await api(t, {}, { onRequest: () => relay?.freeze() });
			relay = await startRelay(server);
			t.after(() => relay.close());
			const m = manager(t, relay, { protocol: 'http2', ...FAST, retry: { initialDelayMs: 5, maxDelayMs: 40 }, requestTimeoutMs: 200, pingTimeoutMs: 100, maxAttempts: 2 });
			const w = watch(m);
			const tokens = makeTokens(3, 421);
			m.sendAps(tokens, { alert: 'x' });
			await m.flushMessages();
			assert.equal(w.failures.size, 3);
			allUnanswered(w.failures, 'ConnectionLost');
			assert.match(w.connectErrors[0]!, /PING unanswered for 100 ms/);
			assert.ok(w.connectErrors.length >= relay.connections - 1, `${w.connectErrors.length} reported of ${relay.connections} sessions`);
			assert.ok(relay.connections <= tokens.length * 2 + 2, `${relay.connections} sessions`);
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
