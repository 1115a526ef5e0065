/**
 * Live Activity channel management (`createChannel`, `getChannel`, `listChannels`, `deleteChannel`)
 * against the HTTP/2 mock's channel table, on 127.0.0.1: token and certificate auth, APNs' errors with
 * their status and reason, retries of 429/5xx, and what a binary or closed manager says.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ApnsManager, ChannelError, ClosedError, InvalidArgumentError } from '../src/index.js';
import { certs, manager } from './support/helpers.js';
import { liveManager, liveMock, TOPIC } from './support/live.js';

for (const auth of ['token', 'cert'] as const) {
	test(`channels (${auth} auth): create (storage policy 0 by default, or 1), read, list, delete; the mock's table follows; a deleted channel is ChannelNotRegistered`, async (t) => {
		const m = await liveMock(t);
		const apns = liveManager(t, m, auth);
		const a = await apns.createChannel();
		const b = await apns.createChannel({ storagePolicy: 1 });
		assert.match(a, /^[A-Za-z0-9+/]+={0,2}$/, 'base64, as APNs makes them');
		assert.notEqual(a, b);
		assert.deepEqual(await apns.getChannel(a), { id: a, storagePolicy: 0 });
		assert.deepEqual(await apns.getChannel(b), { id: b, storagePolicy: 1 });
		assert.deepEqual((await apns.listChannels()).sort(), [a, b].sort());
		await apns.deleteChannel(a);
		assert.deepEqual(await apns.listChannels(), [b]);
		assert.deepEqual(m.channels.map((c) => [c.id, c.bundle, c.storagePolicy]), [[b, TOPIC, 1]]);
		const gone = await apns.getChannel(a).then(
			() => assert.fail('read a deleted channel'),
			(error: unknown) => error,
		);
		assert.ok(gone instanceof ChannelError, String(gone));
		assert.deepEqual([gone.code, gone.status, gone.reason], ['APNS_CHANNEL', 400, 'ChannelNotRegistered']);
		assert.match(gone.requestId, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
		await assert.rejects(apns.deleteChannel(a), { name: 'ChannelError', status: 400, reason: 'ChannelNotRegistered' });
		await apns.close();
	});
}

test('channels: the 10,000-channel limit (here 2) is 400 CannotCreateChannelConfig, never retried; deleting one makes room', async (t) => {
	const m = await liveMock(t, {}, { maxChannels: 2 });
	const apns = liveManager(t, m);
	const first = await apns.createChannel();
	await apns.createChannel();
	await assert.rejects(apns.createChannel(), (error: unknown) => error instanceof ChannelError && error.status === 400 && error.reason === 'CannotCreateChannelConfig' && !/attempts/.test(error.message));
	await apns.deleteChannel(first);
	assert.equal(typeof (await apns.createChannel()), 'string');
	assert.equal(m.channels.length, 2);
});

test('channels: 503 twice, then an answer: retried with the retry backoff; 503 for ever: ChannelError after maxAttempts, each attempt a request', async (t) => {
	const m = await liveMock(t, { managementErrors: { status: 503, times: 2 } });
	const apns = liveManager(t, m, 'token', { maxAttempts: 3 });
	const id = await apns.createChannel();
	assert.deepEqual([m.channels.map((c) => c.id), m.requests], [[id], 3], 'created once, on the third attempt');
	m.setFaults({ managementErrors: { status: 429, times: 1_000 } });
	const error = await apns.listChannels().then(
		() => assert.fail('listed through 429s'),
		(e: unknown) => e,
	);
	assert.ok(error instanceof ChannelError);
	assert.deepEqual([error.status, error.reason], [429, 'TooManyRequests']);
	assert.match(error.message, /^listChannels\(\) failed: status 429 TooManyRequests \(after 3 attempts\)$/);
	assert.equal(m.requests, 6, 'three more requests, one per attempt');
});

test('channels: a topic the credentials do not cover is 403 TopicMismatch; a push-type suffix is 400 TopicDisallowed', async (t) => {
	const m = await liveMock(t);
	await assert.rejects(liveManager(t, m, 'token', { topic: 'com.example.other' }).createChannel(), { name: 'ChannelError', status: 403, reason: 'TopicMismatch' });
	await assert.rejects(liveManager(t, m, 'token', { topic: `${TOPIC}.push-type.liveactivity` }).createChannel(), { name: 'ChannelError', status: 400, reason: 'TopicDisallowed' });
	assert.equal(m.channels.length, 0);
});

test('channels: bad arguments reject naming the argument, before any request; a binary manager and a closed one say why', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m);
	await assert.rejects(apns.createChannel({ storagePolicy: 2 as 0 }), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes('options.storagePolicy'));
	await assert.rejects(apns.createChannel({ storage: 1 } as never), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes('options.storage'));
	await assert.rejects(apns.getChannel('not base64!'), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes('channelId'));
	await assert.rejects(apns.deleteChannel(undefined as never), (e: unknown) => e instanceof InvalidArgumentError && e.message.includes('channelId'));
	assert.equal(m.requests, 0, 'nothing reached the mock');
	const binary = manager(t, { host: '127.0.0.1', port: 9 });
	await assert.rejects(binary.createChannel(), (e: unknown) => e instanceof InvalidArgumentError && /HTTP\/2 API/.test(e.message));
	await apns.close();
	await assert.rejects(apns.listChannels(), ClosedError);
});

test('channels: channelGateway is an HTTP/2 option with the environment\'s default; refused on binary', () => {
	const c = certs();
	assert.throws(() => new ApnsManager({ protocol: 'binary', cert: c.client.cert, key: c.client.key, channelGateway: { host: '127.0.0.1' } }), /channelGateway/);
});

/** One raw HTTP/2 request to the mock with the test client certificate: its status, headers and body. */
async function raw(m: { host: string; port: number }, headers: Record<string, string>, body: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
	const { connect } = await import('node:http2');
	const c = certs();
	const session = connect(`https://${m.host}:${m.port}`, { ca: c.ca.cert, cert: c.client.cert, key: c.client.key });
	try {
		return await new Promise((resolve, reject) => {
			const stream = session.request({ ':method': 'POST', ...headers });
			let answer: Record<string, unknown> = {};
			let text = '';
			stream.on('response', (h) => (answer = h));
			stream.on('data', (chunk: Buffer) => (text += chunk.toString()));
			stream.on('end', () => resolve({ status: Number(answer[':status']), headers: answer, body: text }));
			stream.on('error', reject);
			stream.end(body);
		});
	} finally {
		session.close();
	}
}

test('mock broadcasts: /4/broadcasts/apps/{bundle} as Apple lists it — accepted with apns-request-id and apns-unique-id and recorded; each wrong header answered with its reason', async (t) => {
	const m = await liveMock(t);
	const apns = liveManager(t, m, 'cert');
	const none = await apns.createChannel({ storagePolicy: 0 });
	const kept = await apns.createChannel({ storagePolicy: 1 });
	const path = `/4/broadcasts/apps/${TOPIC}`;
	const ok = { ':path': path, 'apns-channel-id': none, 'apns-push-type': 'liveactivity', 'apns-priority': '10', 'apns-expiration': '0' };
	const body = JSON.stringify({ aps: { timestamp: 1, event: 'update', 'content-state': { score: '1-0' } } });
	const accepted = await raw(m, { ...ok, 'apns-request-id': '0f6f7c2e-1111-4a5b-9c3d-123456789abc' }, body);
	assert.equal(accepted.status, 200, accepted.body);
	assert.equal(accepted.headers['apns-request-id'], '0f6f7c2e-1111-4a5b-9c3d-123456789abc');
	assert.match(String(accepted.headers['apns-unique-id']), /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
	const later = String(Math.floor(Date.now() / 1000) + 600);
	assert.equal((await raw(m, { ...ok, 'apns-channel-id': kept, 'apns-expiration': later }, body)).status, 200, 'a channel that keeps the latest takes an expiration');
	const refused = async (headers: Record<string, string>, payload = body) => {
		const r = await raw(m, headers, payload);
		return [r.status, (JSON.parse(r.body) as { reason: string }).reason];
	};
	const { 'apns-priority': _p, ...noPriority } = ok;
	const { 'apns-expiration': _e, ...noExpiration } = ok;
	const { 'apns-channel-id': _c, ...noChannel } = ok;
	assert.deepEqual(await refused(noPriority), [400, 'BadPriority']);
	assert.deepEqual(await refused(noExpiration), [400, 'BadExpirationDate']);
	assert.deepEqual(await refused({ ...ok, 'apns-expiration': '1999999999' }), [400, 'BadExpirationDate'], 'a channel that stores nothing takes only 0');
	assert.deepEqual(await refused(noChannel), [400, 'MissingChannelId']);
	assert.deepEqual(await refused({ ...ok, 'apns-channel-id': 'AAAAAAAAAAAAAAAAAAAAAA==' }), [400, 'ChannelNotRegistered']);
	assert.deepEqual(await refused({ ...ok, 'apns-push-type': 'alert' }), [400, 'InvalidPushType']);
	assert.deepEqual(await refused(ok, ''), [400, 'PayloadEmpty']);
	assert.deepEqual(await refused(ok, JSON.stringify({ aps: { x: 'y'.repeat(5200) } })), [413, 'PayloadTooLarge']);
	assert.deepEqual(await refused({ ...ok, ':path': '/4/broadcasts/apps/com.example.other' }), [403, 'TopicMismatch']);
	assert.deepEqual(m.broadcasts.map((b) => [b.channel, b.priority, b.expiration, JSON.parse(b.payload).aps.event]), [[none, '10', '0', 'update'], [kept, '10', later, 'update']]);
});
