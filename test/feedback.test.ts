/**
 * getFeedback and readFeedback against the mock feedback service over real TLS. getFeedback runs on every
 * backend (test/support/backends.ts); readFeedback, called directly, has no backend and runs once.
 */
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import tls from 'node:tls';
import { ConnectionError, Feedback, ProtocolError, TimeoutError } from '../src/index.js';
import { readFeedback, type FeedbackReadOptions } from '../src/feedback.js';
import { BACKENDS } from './support/backends.js';
import { certs, closedPort, feedbackService, makeTokens, managerOn } from './support/helpers.js';

function tuples(n: number, seed: number): Array<{ token: string; when: Date }> {
	return makeTokens(n, seed).map((token, i) => ({ token: token.toUpperCase(), when: new Date((1_700_000_000 + i) * 1000) }));
}

/** The client sockets opened during the test: `tls.connect` is watched (still called through), not replaced. */
function clientSockets(t: TestContext): () => tls.TLSSocket[] {
	const connect = t.mock.method(tls, 'connect');
	return () => connect.mock.calls.map((call) => call.result as tls.TLSSocket);
}

/** Options for calling readFeedback directly, with the test client certificate. */
function readOptions(server: { host: string; port: number }, timeouts: Pick<FeedbackReadOptions, 'idleTimeoutMs' | 'timeoutMs'>): FeedbackReadOptions {
	const c = certs();
	return { host: server.host, port: server.port, cert: c.client.cert, key: c.client.key, ca: [c.ca.cert], connectTimeoutMs: 10_000, ...timeouts };
}

/** A tuple with a token of any length, for the mock's `rawTuples`. */
function raw(length: number, fill: number): { when: Date; token: Buffer } {
	return { when: new Date(1_700_000_000_000), token: Buffer.alloc(length, fill) };
}

test('readFeedback: a service trickling one byte at a time is cut by the deadline; complete tuples stay handed over', async (t) => {
	const sockets = clientSockets(t);
	const given = tuples(40, 54);
	// 40 tuples at 5 ms a byte take over 7 s; each byte comes well inside the idle timeout.
	const fb = await feedbackService(t, { tuples: given, trickleMs: 5, ignoreFin: true });
	const got: Feedback[] = [];
	let error: unknown;
	await readFeedback(readOptions(fb, { idleTimeoutMs: 500, timeoutMs: 1000 }), (f) => got.push(f)).then(
		() => assert.fail('the deadline must reject'),
		(e: unknown) => (error = e),
	);
	assert.ok(error instanceof TimeoutError, String(error));
	assert.equal(error.code, 'APNS_TIMEOUT');
	assert.equal(error.pending, 0);
	assert.equal(error.message, `Feedback read from ${fb.host}:${fb.port} exceeded 1000 ms; ${got.length} tuples were handed over`);
	assert.ok(got.length > 0 && got.length < given.length, `${got.length} tuples`);
	assert.deepEqual(got.map((f) => f.token), given.slice(0, got.length).map((g) => g.token.toLowerCase()));
	assert.ok(sockets().every((s) => s.destroyed));
});

test('readFeedback: the deadline covers the connect (a server that never finishes the handshake)', async (t) => {
	const net = await import('node:net');
	const held = new Set<import('node:net').Socket>();
	const server = net.createServer((socket) => {
		held.add(socket);
		socket.on('error', () => {});
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	t.after(() => {
		for (const socket of held) socket.destroy();
		return new Promise<void>((resolve) => server.close(() => resolve()));
	});
	const sockets = clientSockets(t);
	const options = readOptions({ host: '127.0.0.1', port: (server.address() as { port: number }).port }, { idleTimeoutMs: 100, timeoutMs: 200 });
	await assert.rejects(
		readFeedback(options, () => assert.fail('nothing was sent')),
		(e: unknown) => e instanceof TimeoutError && /exceeded 200 ms; 0 tuples were handed over$/.test(e.message),
	);
	assert.ok(sockets().every((s) => s.destroyed));
});

test('readFeedback: a tuple with a token length of 1000 is refused at its header, without waiting for the 1000 bytes', async (t) => {
	const sockets = clientSockets(t);
	// The first write carries two valid tuples and the bad header; the rest of the bad tuple would take
	// 12 more writes 10 s apart. Only a check at the header can answer before the 20 s deadline.
	const fb = await feedbackService(t, { rawTuples: [raw(32, 1), raw(32, 2), raw(1000, 9)], chunkBytes: 2 * 38 + 6, trickleMs: 10_000 });
	const got: string[] = [];
	await assert.rejects(
		readFeedback(readOptions(fb, { idleTimeoutMs: 30_000, timeoutMs: 20_000 }), (f) => got.push(f.token)),
		(e: unknown) => e instanceof ProtocolError && /token of 1000 bytes, not 32 \(after 2 tuples were handed over\)/.test(e.message),
	);
	assert.deepEqual(got, ['01'.repeat(32), '02'.repeat(32)]);
	assert.ok(sockets().every((s) => s.destroyed));
});

test('readFeedback: a throwing onFeedback stops the read and rejects with what it threw', async (t) => {
	const sockets = clientSockets(t);
	const fb = await feedbackService(t, { tuples: tuples(5, 55), ignoreFin: true });
	let calls = 0;
	const bug = new Error('callback bug');
	await assert.rejects(
		readFeedback(readOptions(fb, { idleTimeoutMs: 60_000, timeoutMs: 60_000 }), () => {
			calls++;
			throw bug;
		}),
		(e: unknown) => e === bug,
	);
	assert.equal(calls, 1);
	assert.ok(sockets().every((s) => s.destroyed));
});

for (const backend of BACKENDS) describe(`getFeedback (${backend.name})`, () => {
	const manager = managerOn(backend); // every manager below runs on this backend
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

	test('a service that ignores our FIN: the idle timeout resolves with the count and destroys the socket', async (t) => {
		const sockets = clientSockets(t);
		const fb = await feedbackService(t, { tuples: tuples(3, 53), ignoreFin: true });
		const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port }, feedbackIdleTimeoutMs: 100 });
		const got: string[] = [];
		assert.equal(await m.getFeedback((f) => got.push(f.token)), 3);
		assert.equal(got.length, 3);
		assert.equal(sockets().length, 1);
		assert.ok(sockets().every((s) => s.destroyed), 'the socket is destroyed, not left ending');
	});

	test('a service that accepts TLS, never sends and never closes: the idle timeout resolves 0', async (t) => {
		const sockets = clientSockets(t);
		const fb = await feedbackService(t, { ignoreFin: true });
		const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port }, feedbackIdleTimeoutMs: 100 });
		assert.equal(await m.getFeedback(() => assert.fail('nothing was sent')), 0);
		assert.equal(fb.connections, 1);
		assert.ok(sockets().every((s) => s.destroyed));
	});

	test('a tuple with a token length of 0 hands over the valid ones before it, then rejects with ProtocolError', async (t) => {
		const sockets = clientSockets(t);
		const fb = await feedbackService(t, { rawTuples: [raw(32, 1), raw(32, 2), raw(0, 0), raw(32, 3)], ignoreFin: true });
		const m = manager(t, undefined, { feedback: { host: fb.host, port: fb.port }, feedbackIdleTimeoutMs: 60_000 });
		const got: string[] = [];
		await assert.rejects(
			m.getFeedback((f) => got.push(f.token)),
			(e: unknown) => e instanceof ProtocolError && /token of 0 bytes, not 32 \(after 2 tuples were handed over\)/.test(e.message),
		);
		assert.deepEqual(got, ['01'.repeat(32), '02'.repeat(32)]);
		assert.ok(sockets().every((s) => s.destroyed));
	});
});
