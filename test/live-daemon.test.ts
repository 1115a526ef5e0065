/**
 * Live Activity channels through the daemon (`apns-worker serve` as a child process, SQLite): the routes
 * pass through to APNs' channel management (the mock), nothing is stored; APNs' refusals become the
 * API's 4xx/5xx naming what went wrong; channel ids in paths are base64url or percent-encoded base64.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { appBody, dataDir, mockApns, request, startDaemon } from './support/daemon.js';

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
	const key = await d.api('POST', '/v1/keys', { apps: ['live'], scopes: ['read'] });
	const reader = { authorization: `Bearer ${key.body.key}` };
	assert.equal((await request(d.url, 'GET', '/v1/apps/live/channels', undefined, reader)).status, 200, 'read may list');
	assert.equal((await request(d.url, 'POST', '/v1/apps/live/channels', {}, reader)).status, 403, 'read may not create');
	assert.deepEqual(mock.channels.map((c) => c.id), [b.body.channelId]);
});
