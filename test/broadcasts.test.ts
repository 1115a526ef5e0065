/**
 * Live Activity broadcasts (`manager.broadcast()`) against the HTTP/2 mock: what reaches it, each
 * broadcast settled once (sent, failed with APNs' status and reason, or dropped by destroy), retries of
 * 429/5xx and unanswered requests counted, and `flushMessages()` waiting for them.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClosedError, InvalidArgumentError, liveActivityAps } from '../src/index.js';
import { manager } from './support/helpers.js';
import { liveManager, liveMock, TOPIC } from './support/live.js';

const UPDATE = { aps: liveActivityAps({ event: 'update', contentState: { score: '1-0' } }, 1_800_000_000_000) };

for (const auth of ['token', 'cert'] as const) {
	test(`broadcast (${auth} auth): an update and an end reach the channel's route with the headers Apple requires; a deleted channel fails ChannelNotRegistered, reported once; stats count each`, async (t) => {
		const m = await liveMock(t);
		const apns = liveManager(t, m, auth);
		const errors: Array<{ channel: string; status: number; reason: string }> = [];
		apns.on('broadcastError', (info) => errors.push({ channel: info.channel, status: info.status, reason: info.reason }));
		const channel = await apns.createChannel();
		const update = apns.broadcast(channel, UPDATE);
		const end = apns.broadcast(channel, { aps: liveActivityAps({ event: 'end', contentState: { score: '2-1' }, dismissalDate: 0 }, 1_800_000_000_000) }, { priority: 5, apnsId: '0F6F7C2E-1111-4A5B-9C3D-123456789ABC' });
		const [u, e] = [await update.settled, await end.settled];
		assert.deepEqual([u.failed, u.dropped, u.sent.map((s) => [s.channel, s.apnsId])], [[], [], [[channel, update.apnsId]]]);
		assert.match(String(u.sent[0]!.uniqueId), /^[0-9a-f]{8}-[0-9a-f]{4}-/);
		assert.equal(e.sent[0]!.apnsId, '0f6f7c2e-1111-4a5b-9c3d-123456789abc');
		assert.deepEqual(
			m.broadcasts.map((b) => [b.channel, b.bundle, b.pushType, b.priority, b.expiration, b.requestId, JSON.parse(b.payload).aps.event]),
			[
				[channel, TOPIC, 'liveactivity', '10', '0', update.apnsId, 'update'],
				[channel, TOPIC, 'liveactivity', '5', '0', end.apnsId, 'end'],
			],
		);
		await apns.deleteChannel(channel);
		const gone = await apns.broadcast(channel, UPDATE).settled;
		assert.deepEqual(gone, { sent: [], failed: [{ channel, status: 400, reason: 'ChannelNotRegistered' }], dropped: [] });
		assert.deepEqual(errors, [{ channel, status: 400, reason: 'ChannelNotRegistered' }]);
		assert.deepEqual(apns.stats.broadcasts, { sent: 2, failed: 1, dropped: 0, resent: 0, pending: 0 });
		await apns.close();
	});
}

test('broadcast: a channel that keeps the latest takes an expiration (a Date, sent as UNIX seconds); one that stores nothing refuses it (400 BadExpirationDate, not retried)', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m);
	const [kept, none] = [await apns.createChannel({ storagePolicy: 1 }), await apns.createChannel({ storagePolicy: 0 })];
	const at = new Date(Date.now() + 3_600_000);
	assert.equal((await apns.broadcast(kept, UPDATE, { expiration: at }).settled).sent.length, 1);
	assert.equal(m.broadcasts[0]!.expiration, String(Math.floor(at.getTime() / 1000)));
	assert.deepEqual((await apns.broadcast(none, UPDATE, { expiration: at }).settled).failed, [{ channel: none, status: 400, reason: 'BadExpirationDate' }]);
	assert.equal(apns.stats.broadcasts.resent, 0);
});

test('broadcast: 503 twice then accepted (3 requests, 2 resent); 503 for ever: failed with APNs\' last answer after maxAttempts requests', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m, 'token', { maxAttempts: 3 });
	const channel = await apns.createChannel();
	m.setFaults({ transient: { tokens: [channel], status: 503, times: 2 } });
	const before = m.requests;
	assert.equal((await apns.broadcast(channel, UPDATE).settled).sent.length, 1);
	assert.deepEqual([m.requests - before, m.broadcasts.length, apns.stats.broadcasts.resent], [3, 1, 2]);
	m.setFaults({ transient: { tokens: [channel], status: 503, times: 1_000_000 } });
	const failed = await apns.broadcast(channel, UPDATE).settled;
	assert.deepEqual(failed.failed, [{ channel, status: 503, reason: 'ServiceUnavailable' }]);
	assert.deepEqual([m.requests - before, apns.stats.broadcasts.failed], [6, 1]);
});

test('broadcast: never answered — each attempt cancelled at requestTimeoutMs, then failed RequestTimeout (status 0); flushMessages() waits for it', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m, 'token', { maxAttempts: 2, requestTimeoutMs: 200 });
	const channel = await apns.createChannel();
	m.setFaults({ neverAnswer: [channel] });
	let settled = false;
	const receipt = apns.broadcast(channel, UPDATE);
	void receipt.settled.then(() => (settled = true));
	await apns.flushMessages();
	assert.equal(settled, true, 'flushed only once the broadcast was settled');
	assert.deepEqual((await receipt.settled).failed, [{ channel, status: 0, reason: 'RequestTimeout' }]);
	assert.deepEqual(apns.stats.broadcasts, { sent: 0, failed: 1, dropped: 0, resent: 1, pending: 0 });
});

test('broadcast: destroy() drops what is not settled — each receipt says so, none left pending', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m);
	const channel = await apns.createChannel();
	m.setFaults({ neverAnswer: [channel] });
	const receipts = [apns.broadcast(channel, UPDATE), apns.broadcast(channel, UPDATE)];
	await new Promise<void>((resolve) => {
		const check = (): void => (m.requests >= 3 ? resolve() : void setImmediate(check));
		check();
	});
	apns.destroy();
	for (const r of receipts) assert.deepEqual(await r.settled, { sent: [], failed: [], dropped: [{ channel }] });
	assert.deepEqual(apns.stats.broadcasts, { sent: 0, failed: 0, dropped: 2, resent: 0, pending: 0 });
});

test('broadcast: bad arguments throw naming the argument and queue nothing; a binary manager and a closed one say why', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m);
	const channel = await apns.createChannel();
	const before = m.requests;
	const cases: Array<[() => unknown, string]> = [
		[() => apns.broadcast('not base64!', UPDATE), 'channelId'],
		[() => apns.broadcast(channel, [] as never), 'payload'],
		[() => apns.broadcast(channel, { aps: { x: 'y'.repeat(5200) } }), 'payload'],
		[() => apns.broadcast(channel, UPDATE, { priority: 7 as 10 }), 'options.priority'],
		[() => apns.broadcast(channel, UPDATE, { expiration: Date.now() }), 'options.expiration'],
		[() => apns.broadcast(channel, UPDATE, { apnsId: 'x' }), 'options.apnsId'],
		[() => apns.broadcast(channel, UPDATE, { collapseId: 'x' } as never), 'options.collapseId'],
	];
	for (const [call, argument] of cases) assert.throws(call, (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument, argument);
	assert.deepEqual([m.requests - before, apns.stats.broadcasts.pending], [0, 0]);
	assert.throws(() => manager(t, { host: '127.0.0.1', port: 9 }).broadcast(channel, UPDATE), (e: unknown) => e instanceof InvalidArgumentError && /HTTP\/2 API/.test(e.message));
	await apns.close();
	assert.throws(() => apns.broadcast(channel, UPDATE), ClosedError);
});

test('broadcast: a GOAWAY mid-way refuses the streams above its last one; they are sent again on a new session, each accepted once', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m);
	const channel = await apns.createChannel();
	m.setFaults({ goawayAfter: 4 });
	const receipts = Array.from({ length: 12 }, () => apns.broadcast(channel, UPDATE));
	const results = await Promise.all(receipts.map((r) => r.settled));
	assert.deepEqual(results.map((r) => r.sent.length), receipts.map(() => 1));
	assert.ok(m.goaways.length >= 1, 'the mock sent a GOAWAY');
	const ids = m.broadcasts.map((b) => b.requestId);
	assert.deepEqual([ids.length, new Set(ids).size], [12, 12], 'each accepted once');
	assert.deepEqual(new Set(ids), new Set(receipts.map((r) => r.apnsId)));
});
