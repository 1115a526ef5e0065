/**
 * Live Activities through the daemon (`apns-worker serve` as a child process): channel routes pass
 * through to APNs' channel management (the mock), nothing stored, APNs' refusals the API's 4xx/5xx, ids in
 * paths base64url or percent-encoded base64; broadcasts are stored durably (SQLite and Redis) and sent
 * like notifications, once, across a kill -9.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { appBody, dataDir, mockApns, request, type RunningDaemon, startDaemon, until } from './support/daemon.js';
import { REDIS_MISSING, startRedis } from './support/redis.js';

test('serve: channels — create (201, storage policy 0 by default), list, read by a base64url or percent-encoded id, delete; a deleted one is 404 unknown_channel; bad input is a 400 naming the field; a read-only key cannot create', async (t) => {
	const mock = await mockApns(t);
	const d = await startDaemon(t, dataDir(t));
	const at = { host: mock.host, port: mock.port };
	assert.equal((await d.api('PUT', '/v1/apps/live', appBody(mock, { channelGateway: at }))).status, 200);
	const view = await d.api('GET', '/v1/apps/live');
	assert.deepEqual(view.body.channelGateway, at);
	const a = await d.api('POST', '/v1/apps/live/channels', {});
	const b = await d.api('POST', '/v1/apps/live/channels', { storagePolicy: 1 });
	assert.deepEqual([a.status, a.body.storagePolicy, b.status, b.body.storagePolicy], [201, 0, 201, 1], JSON.stringify([a.body, b.body]));
	assert.deepEqual(mock.channels.map((c) => [c.id, c.storagePolicy]), [[a.body.channelId, 0], [b.body.channelId, 1]], 'made at APNs');
	assert.deepEqual((await d.api('GET', '/v1/apps/live/channels')).body.channels.sort(), [a.body.channelId, b.body.channelId].sort());
	const url = (id: string): string => id.replace(/\+/g, '-').replace(/\//g, '_');
	assert.deepEqual((await d.api('GET', `/v1/apps/live/channels/${url(b.body.channelId)}`)).body, { channelId: b.body.channelId, storagePolicy: 1 });
	assert.deepEqual((await d.api('GET', `/v1/apps/live/channels/${encodeURIComponent(b.body.channelId)}`)).body, { channelId: b.body.channelId, storagePolicy: 1 });
	assert.deepEqual((await d.api('DELETE', `/v1/apps/live/channels/${url(a.body.channelId)}`)).body, { deleted: a.body.channelId });
	const gone = await d.api('GET', `/v1/apps/live/channels/${url(a.body.channelId)}`);
	assert.deepEqual([gone.status, gone.body.error, gone.body.field], [404, 'unknown_channel', 'params/channelId']);
	const bad = await d.api('POST', '/v1/apps/live/channels', { storagePolicy: 2 });
	assert.equal(bad.status, 400);
	assert.match(JSON.stringify(bad.body), /storagePolicy/);
	assert.equal((await d.api('GET', '/v1/apps/nope/channels')).status, 404);
	// APNs refusing through every attempt: a 502 naming its status and reason.
	mock.setFaults({ managementErrors: { status: 503, times: 1_000 } });
	const refused = await d.api('POST', '/v1/apps/live/channels', {});
	assert.deepEqual([refused.status, refused.body.error], [502, 'apns_refused']);
	assert.match(refused.body.message, /503 ServiceUnavailable/);
	mock.setFaults({});
	const key = await d.api('POST', '/v1/keys', { apps: ['live'], scopes: ['read'] });
	const reader = { authorization: `Bearer ${key.body.key}` };
	assert.equal((await request(d.url, 'GET', '/v1/apps/live/channels', undefined, reader)).status, 200, 'read may list');
	assert.equal((await request(d.url, 'POST', '/v1/apps/live/channels', {}, reader)).status, 403, 'read may not create');
	assert.deepEqual(mock.channels.map((c) => c.id), [b.body.channelId]);
});

/** Broadcast `id` of `app` once nothing of it is pending. */
function broadcastSettled(d: RunningDaemon, app: string, id: string): Promise<{ pending: number; sent: number; failed: Array<{ status: number; reason: string }> }> {
	return until(async () => {
		const r = await d.api('GET', `/v1/apps/${app}/broadcasts/${id}`);
		assert.equal(r.status, 200, JSON.stringify(r.body));
		return r.body.pending === 0 ? r.body : undefined;
	}, `broadcast ${id} to settle`);
}

const UPDATE = { timestamp: 1_800_000_000, event: 'update', 'content-state': { score: '1-0' } };

for (const store of ['sqlite', 'redis'] as const) {
	test(`serve (${store}): broadcasts — 202 once stored, sent once with the headers Apple requires, status by id; an Idempotency-Key retry stores nothing more; a channel APNs does not know is recorded failed ChannelNotRegistered; a bad channel id is a 400 naming it`, { skip: store === 'redis' ? REDIS_MISSING : false }, async (t) => {
		const mock = await mockApns(t);
		let d: RunningDaemon;
		if (store === 'sqlite') d = await startDaemon(t, dataDir(t));
		else {
			const r = await startRedis({});
			t.after(() => r.close());
			d = await startDaemon(t, undefined, { args: ['--redis', r.url] });
		}
		assert.equal((await d.api('PUT', '/v1/apps/live', appBody(mock, { channelGateway: { host: mock.host, port: mock.port } }))).status, 200);
		const { channelId } = (await d.api('POST', '/v1/apps/live/channels', {})).body as { channelId: string };
		const post = await d.api('POST', '/v1/apps/live/broadcasts', { channelId, aps: UPDATE, priority: 5 }, { 'idempotency-key': 'score-1' });
		assert.equal(post.status, 202, JSON.stringify(post.body));
		assert.match(post.body.id, /^[0-9a-f-]{36}$/);
		const again = await d.api('POST', '/v1/apps/live/broadcasts', { channelId, aps: UPDATE, priority: 5 }, { 'idempotency-key': 'score-1' });
		assert.deepEqual([again.status, again.body], [202, post.body], 'the first answer');
		assert.deepEqual(await broadcastSettled(d, 'live', post.body.id), { id: post.body.id, pending: 0, sent: 1, failed: [] });
		assert.deepEqual(mock.broadcasts.map((b) => [b.channel, b.pushType, b.priority, b.expiration, JSON.parse(b.payload)]), [[channelId, 'liveactivity', '5', '0', { aps: UPDATE }]]);
		const unknown = await d.api('POST', '/v1/apps/live/broadcasts', { channelId: 'AAAAAAAAAAAAAAAAAAAAAA==', aps: UPDATE });
		assert.equal(unknown.status, 202);
		assert.deepEqual((await broadcastSettled(d, 'live', unknown.body.id)).failed, [{ status: 400, reason: 'ChannelNotRegistered' }]);
		const bad = await d.api('POST', '/v1/apps/live/broadcasts', { channelId: 'not base64!', aps: UPDATE });
		assert.deepEqual([bad.status, bad.body.field], [400, 'body/channelId']);
		assert.equal(mock.broadcasts.length, 1);
	});
}

test('serve: kill -9 after a broadcast was accepted and its request written but never answered; restarted, it is sent once', async (t) => {
	const mock = await mockApns(t);
	const dir = dataDir(t);
	const first = await startDaemon(t, dir);
	assert.equal((await first.api('PUT', '/v1/apps/live', appBody(mock, { channelGateway: { host: mock.host, port: mock.port } }))).status, 200);
	const { channelId } = (await first.api('POST', '/v1/apps/live/channels', {})).body as { channelId: string };
	mock.setFaults({ neverAnswer: [channelId] });
	const before = mock.requests;
	const post = await first.api('POST', '/v1/apps/live/broadcasts', { channelId, aps: UPDATE });
	assert.equal(post.status, 202);
	await until(async () => (mock.requests > before ? true : undefined), 'the broadcast request to reach APNs');
	first.child.kill('SIGKILL');
	await first.exited;
	assert.equal(mock.broadcasts.length, 0, 'never answered, never accepted');
	mock.setFaults({});
	const second = await startDaemon(t, dir);
	assert.deepEqual(await broadcastSettled(second, 'live', post.body.id), { id: post.body.id, pending: 0, sent: 1, failed: [] });
	assert.deepEqual(mock.broadcasts.map((b) => b.channel), [channelId], 'sent once after the restart');
});
