/** getFeedback against the mock feedback service over real TLS. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnectionError, Feedback, ProtocolError } from '../src/index.js';
import { closedPort, feedbackService, makeTokens, manager } from './support/helpers.js';

function tuples(n: number, seed: number): Array<{ token: string; when: Date }> {
	return makeTokens(n, seed).map((token, i) => ({ token: token.toUpperCase(), when: new Date((1_700_000_000 + i) * 1000) }));
}

test('reads every tuple however it is chunked, calls back, emits, resolves the count; the list is then empty', async (t) => {
	const given = tuples(50, 50);
	const fb = await feedbackService(t, { tuples: given, chunkBytes: 7 });
	const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port } });
	const called: Feedback[] = [];
	const emitted: Feedback[] = [];
	m.on('feedback', (f) => emitted.push(f));
	assert.equal(await m.getFeedback((f) => called.push(f)), 50);
	assert.deepEqual(called.map((f) => [f.token, f.when.getTime()]), given.map((g) => [g.token.toLowerCase(), g.when.getTime()]));
	assert.deepEqual(emitted, called);
	assert.ok(called[0] instanceof Feedback);
	assert.equal(await m.getFeedback(() => assert.fail('the service forgets what it sent')), 0);
	assert.equal(fb.connections, 2);
});

test('a service that never closes is ended by the idle timeout, keeping what it sent', async (t) => {
	const fb = await feedbackService(t, { tuples: tuples(3, 51), hang: true });
	const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port }, feedbackIdleTimeoutMs: 200 });
	const got: string[] = [];
	assert.equal(await m.getFeedback((f) => got.push(f.token)), 3);
	assert.equal(got.length, 3);
});

test('an unreachable feedback service rejects with ConnectionError', async (t) => {
	const port = await closedPort();
	const m = manager(t, undefined, { feedback: { host: '127.0.0.1', port } });
	await assert.rejects(m.getFeedback(() => {}), (e: unknown) => e instanceof ConnectionError && /ECONNREFUSED/.test(e.message));
});

test('a stream cut inside a tuple hands over the complete ones, then rejects with ProtocolError', async (t) => {
	const net = await import('node:tls');
	const { certs } = await import('./support/helpers.js');
	const { encodeFeedbackTuple } = await import('../src/frame.js');
	const c = certs();
	const server = net.createServer({ cert: c.server.cert, key: c.server.key, ca: [c.ca.cert], requestCert: true }, (socket) => {
		const whole = encodeFeedbackTuple(new Date(1_700_000_000_000), Buffer.alloc(32, 1));
		socket.end(Buffer.concat([whole, whole.subarray(0, 10)]));
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	t.after(() => new Promise<void>((resolve) => server.close(() => resolve())));
	const m = manager(t, undefined, { feedback: { host: '127.0.0.1', port: (server.address() as { port: number }).port } });
	const got: string[] = [];
	await assert.rejects(m.getFeedback((f) => got.push(f.token)), (e: unknown) => e instanceof ProtocolError && /10 bytes left over after 1 tuples/.test(e.message));
	assert.deepEqual(got, ['01'.repeat(32)]);
});

test('a throwing callback becomes an error event; every tuple is still read', async (t) => {
	const fb = await feedbackService(t, { tuples: tuples(5, 52) });
	const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port } });
	const errors: unknown[] = [];
	m.on('error', (e) => errors.push(e));
	let emitted = 0;
	m.on('feedback', () => emitted++);
	assert.equal(
		await m.getFeedback(() => {
			throw new Error('callback bug');
		}),
		5,
	);
	assert.equal(errors.length, 5);
	assert.equal(emitted, 5);
});
