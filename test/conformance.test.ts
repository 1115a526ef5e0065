/**
 * The contract every backend keeps, run against a mock over real TLS on 127.0.0.1. A new backend is one
 * line in BACKENDS (test/support/backends.ts, owned here); the rest of the fault matrix — hostile
 * gateways, HTTP/2 faults, lifecycle, feedback, receipts — runs on that same list in its own file. Every test counts every
 * notification: the exact set the mock accepted, the exact errors reported, 0 lost, 0 duplicated. The
 * binary protocol's own faults (status 10, silent drops, late error frames, ident wrap) follow in a
 * block of their own (after silent drops: 0 lost, and duplicates no more than those re-sent in doubt).
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import { generateKeyPairSync } from 'node:crypto';
import { type ApnsManager, type ApnsManagerOptions, type DeliveryError } from '../src/index.js';
import { startMockApnsHttp2 } from '../src/testing.js';
import { BACKENDS, type BackendUnderTest } from './support/backends.js';
import { account, certs, gateway, makeTokens, manager } from './support/helpers.js';

/** A mock that counts accepted tokens and rejects the given ones as invalid. */
interface Fixture {
	readonly name: string;
	start(t: TestContext, rejectTokens: readonly string[]): Promise<{ host: string; port: number; counts: ReadonlyMap<string, number> }>;
	manager(t: TestContext, mock: { host: string; port: number }, options?: Partial<ApnsManagerOptions>): ApnsManager;
	/** The status an invalid token is reported with. */
	readonly invalidStatus: number;
}

const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const TOKEN_AUTH = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'KEY1234567', teamId: 'TEAM765432' };

/** Each backend runs every protocol. */
function fixture(protocol: 'binary' | 'http2', backend: BackendUnderTest): Fixture {
	const name = `${protocol}/${backend.name}`;
	if (protocol === 'http2') {
		return {
			name,
			invalidStatus: 400,
			async start(t, rejectTokens) {
				const c = certs();
				const mock = await startMockApnsHttp2({
					server: c.server,
					ca: c.ca.cert,
					keys: [{ keyId: TOKEN_AUTH.keyId, teamId: TOKEN_AUTH.teamId, publicKey: p8.publicKey }],
					topics: ['com.example.app'],
					faults: { badTokens: rejectTokens },
				});
				t.after(() => mock.close());
				return mock;
			},
			manager: (t, mock, options = {}) =>
				manager(t, mock, { protocol: 'http2', ...backend.options, cert: undefined, key: undefined, token: TOKEN_AUTH, topic: 'com.example.app', ...options }),
		};
	}
	return {
		name,
		invalidStatus: 8,
		start: (t, rejectTokens) => gateway(t, { rejectTokens: Object.fromEntries(rejectTokens.map((b) => [b, 8])) }),
		manager: (t, mock, options = {}) => manager(t, mock, { ...backend.options, ...options }),
	};
}

const COMBINATIONS: readonly Fixture[] = BACKENDS.flatMap((backend) => [fixture('binary', backend), fixture('http2', backend)]);

const N = 20_000;

function every(tokens: readonly string[], n: number): string[] {
	return tokens.filter((_, i) => i % n === n - 1);
}

function exactlyOnce(counts: ReadonlyMap<string, number>, sent: readonly string[], rejected: ReadonlySet<string> = new Set()): { lost: number; duplicated: number; deliveredRejected: number } {
	let lost = 0;
	let duplicated = 0;
	let deliveredRejected = 0;
	for (const token of sent) {
		const n = counts.get(token) ?? 0;
		if (rejected.has(token)) deliveredRejected += n;
		else if (n === 0) lost++;
		else duplicated += n - 1;
	}
	return { lost, duplicated, deliveredRejected };
}

for (const f of COMBINATIONS) {
	describe(`${f.name}`, () => {
		test(`clean: ${N} notifications, each delivered exactly once`, async (t) => {
			const mock = await f.start(t, []);
			const m = f.manager(t, mock);
			const tokens = makeTokens(N, 11);
			for (const token of tokens) m.sendAps(token, { alert: 'hello', badge: 1 });
			await m.flushMessages();
			assert.deepEqual(exactlyOnce(mock.counts, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0 });
			assert.deepEqual([m.stats.failed, m.stats.delivered, m.pending], [0, N, 0]);
		});

		test(`1 invalid token per 500 (${N}): each reported exactly once, everything else delivered exactly once`, async (t) => {
			const tokens = makeTokens(N, 12);
			const bad = every(tokens, 500);
			const mock = await f.start(t, bad);
			const handled: DeliveryError[] = [];
			const emitted: DeliveryError[] = [];
			const m = f.manager(t, mock, { errorHandler: (e) => handled.push(e) });
			m.on('deliveryError', (e) => emitted.push(e));
			m.sendAps(tokens, { alert: 'broadcast' });
			await m.flushMessages();
			assert.deepEqual(exactlyOnce(mock.counts, tokens, new Set(bad)), { lost: 0, duplicated: 0, deliveredRejected: 0 });
			assert.deepEqual(handled.map((e) => e.token).sort(), [...bad].sort());
			assert.deepEqual(emitted, handled, 'the event and the handler see the same errors');
			const shapes = new Set(handled.map((e) => `${e.code} ${e.status} ${e.notification.count}`));
			assert.deepEqual([...shapes], [`APNS_DELIVERY ${f.invalidStatus} ${N}`]);
		});

		test('the retention cap pauses sending without dropping anything, and reports it', async (t) => {
			const mock = await f.start(t, []);
			const m = f.manager(t, mock, { maxRetained: 500 });
			let full = 0;
			m.on('retentionFull', () => full++);
			const tokens = makeTokens(5000, 13);
			m.sendAps(tokens, { alert: 'cap' });
			await m.flushMessages();
			assert.ok(full >= 1);
			assert.deepEqual(exactlyOnce(mock.counts, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0 });
		});
	});
}

for (const backend of BACKENDS) describe(`binary protocol faults (${backend.name} backend)`, () => {
		test(`clean: ${N} notifications in order, as command-2 frames with all five items and unique idents`, async (t) => {
			const gw = await gateway(t);
			const m = manager(t, gw, backend.options);
			const tokens = makeTokens(N, 1);
			for (const token of tokens) m.sendAps(token, { alert: 'hello', badge: 1 }, { priority: 5, expiration: 2_000_000_000 });
			await m.flushMessages();
			assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
			// In the order sent: each connection's in order, one connection after another. (Arrivals at the mock
			// interleave when the client runs on another thread: the next connection starts while the last
			// one's bytes are still being read.)
			const sent = [...gw.received].sort((a, b) => a.connection - b.connection).map((r) => r.token);
			assert.deepEqual(sent, tokens, 'in the order sent');
			const first = gw.received[0]!;
			assert.deepEqual([first.command, first.priority, first.expiry, first.payload], [2, 5, 2_000_000_000, '{"aps":{"alert":"hello","badge":1}}']);
			assert.equal(new Set(gw.received.map((r) => r.ident)).size, N, 'every notification has its own ident');
			assert.deepEqual([m.stats.failed, m.stats.resent, m.stats.delivered, m.pending], [0, 0, N, 0]);
		});

		test(`error frames up to 800 ms late (${N}, 1 invalid per 500): nothing lost or duplicated`, async (t) => {
			const tokens = makeTokens(N, 3);
			const bad = every(tokens, 500);
			const gw = await gateway(t, { rejectTokens: Object.fromEntries(bad.map((b) => [b, 8])), errorDelayMs: [0, 800] });
			const errors: string[] = [];
			const m = manager(t, gw, { ...backend.options, errorHandler: (e) => errors.push(e.token) });
			m.sendAps(tokens, { alert: 'late' });
			await m.flushMessages();
			assert.deepEqual(account(gw, tokens, new Set(bad)), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
			assert.deepEqual(errors.sort(), [...bad].sort());
		});

		test(`status 10 every 3,000 (${N}): no error reported, nothing lost or duplicated`, async (t) => {
			const gw = await gateway(t, { shutdownEvery: 3000 });
			const errors: DeliveryError[] = [];
			const m = manager(t, gw, { ...backend.options, errorHandler: (e) => errors.push(e) });
			const resent: string[] = [];
			m.on('resent', ({ reason }) => resent.push(reason));
			const tokens = makeTokens(N, 4);
			m.sendAps(tokens, { alert: 'shutdown' });
			await m.flushMessages();
			assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
			assert.deepEqual(errors, []);
			assert.equal(gw.errorsSent.filter((e) => e.status === 10).length, Math.floor(N / 3000));
			assert.ok(resent.includes('shutdown'));
		});

		test(`silent drop every 3,000 (${N}): nothing lost; duplicates only among those re-sent as in doubt`, async (t) => {
			const gw = await gateway(t, { silentDropEvery: 3000 });
			const errors: DeliveryError[] = [];
			const m = manager(t, gw, { ...backend.options, errorHandler: (e) => errors.push(e) });
			let inDoubtEvents = 0;
			m.on('resent', ({ count, reason }) => reason === 'silentClose' && (inDoubtEvents += count));
			const tokens = makeTokens(N, 5);
			m.sendAps(tokens, { alert: 'drop' });
			await m.flushMessages();
			const result = account(gw, tokens);
			assert.equal(result.lost, 0);
			assert.equal(result.unexpected, 0);
			assert.deepEqual(errors, []);
			assert.ok(gw.silentDrops >= Math.floor(N / 3000), `the mock dropped ${gw.silentDrops} connections`);
			assert.equal(inDoubtEvents, m.stats.inDoubt, 'every in-doubt re-send is reported in an event');
			assert.ok(result.duplicated <= m.stats.inDoubt, `${result.duplicated} duplicated, ${m.stats.inDoubt} re-sent in doubt`);
			t.diagnostic(`silent drops: ${gw.silentDrops}, duplicated: ${result.duplicated}, in doubt: ${m.stats.inDoubt}`);
		});

		test('everything after a rejected notification is re-sent ahead of new work, in its original order', async (t) => {
			const tokens = makeTokens(1000, 6);
			const later = makeTokens(100, 7);
			// The error comes late, so the client has written all 1000 on the first connection by then.
			// (confirmEvery 0: no count-based probe, so no second connection takes over meanwhile. With probes,
			// "ahead of new work" means ahead of everything not yet written.)
			const gw = await gateway(t, { rejectTokens: { [tokens[100]!]: 8 }, errorDelayMs: 200 });
			const m = manager(t, gw, { ...backend.options, confirmEvery: 0 });
			m.once('resent', () => m.sendAps(later, { alert: 'new work' })); // queued while the re-sends are pending
			m.sendAps(tokens, { alert: 'first' });
			await m.flushMessages();
			const second = gw.received.filter((r) => r.connection > 1);
			if (backend.writers === 1) assert.deepEqual(second.map((r) => r.token), [...tokens.slice(101), ...later]);
			else {
				// Several threads write at once: no order across them. Each kind still comes in its own order,
				// and on any one connection nothing new is written before a re-send.
				const isLater = new Set(later);
				assert.deepEqual(second.filter((r) => !isLater.has(r.token)).map((r) => r.token), tokens.slice(101));
				assert.deepEqual(second.filter((r) => isLater.has(r.token)).map((r) => r.token), later);
				for (const c of new Set(second.map((r) => r.connection))) {
					const on = second.filter((r) => r.connection === c).map((r) => isLater.has(r.token));
					assert.ok(on.indexOf(true) === -1 || !on.slice(on.indexOf(true)).includes(false), `connection ${c}: a re-send after new work`);
				}
			}
			assert.deepEqual(account(gw, [...tokens, ...later], new Set([tokens[100]!])), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
		});

		test('idents wrap past 2^32-1 on the wire, and backtracking across the wrap loses nothing', async (t) => {
			const tokens = makeTokens(2000, 8);
			const gw = await gateway(t, { rejectTokens: { [tokens[150]!]: 8 } });
			const errors: DeliveryError[] = [];
			const m = manager(t, gw, { ...backend.options, initialIdent: 0xffff_ffff - 99, errorHandler: (e) => errors.push(e) });
			m.sendAps(tokens, { alert: 'wrap' });
			await m.flushMessages();
			assert.deepEqual(account(gw, tokens, new Set([tokens[150]!])), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
			// Token i gets ident 2^32-100+i up to 2^32-1 (i = 99); then 1, 2, … (0 is skipped): token 150 → 51.
			assert.deepEqual(errors.map((e) => [e.token, e.ident]), [[tokens[150], 51]]);
			const idents = gw.received.map((r) => r.ident);
			assert.ok(idents.includes(0xffff_ffff) && idents.includes(1) && !idents.includes(0));
		});

		test('a slow reader pushes back: writes wait for drain, nothing is lost or duplicated', async (t) => {
			const gw = await gateway(t, { readPauseMs: 2 });
			const m = manager(t, gw, backend.options);
			const tokens = makeTokens(N, 9);
			m.sendAps(tokens, { alert: 'x'.repeat(1500) });
			await m.flushMessages();
			assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
		});

});
