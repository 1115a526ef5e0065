/** The mock gateway itself: what it parses, what it answers, whom it lets in. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import tls from 'node:tls';
import { encodeErrorResponse, frameBytes, writeFrame } from '../src/frame.js';
import type { MockGatewayFaults } from '../src/testing.js';
import { certs, gateway } from './support/helpers.js';

async function rawClient(port: number, pair = certs().client): Promise<tls.TLSSocket> {
	const socket = tls.connect({ host: '127.0.0.1', port, cert: pair.cert, key: pair.key, ca: certs().ca.cert });
	await new Promise<void>((resolve, reject) => {
		socket.once('secureConnect', resolve);
		socket.once('error', reject);
	});
	return socket;
}

function answer(socket: tls.TLSSocket): Promise<Buffer> {
	return new Promise((resolve) => {
		const chunks: Buffer[] = [];
		socket.on('data', (c: Buffer) => chunks.push(c));
		socket.on('close', () => resolve(Buffer.concat(chunks)));
	});
}

const token = Buffer.alloc(32, 0xab);
const payload = Buffer.from('{"aps":{"alert":"raw"}}');

test('parses commands 0, 1 and 2 and records each', async (t) => {
	let accepted = 0;
	let allAccepted!: () => void;
	const threeAccepted = new Promise<void>((resolve) => (allAccepted = resolve));
	const gw = await gateway(t, {}, {
		onAccepted: () => {
			if (++accepted === 3) allAccepted();
		},
	});
	const socket = await rawClient(gw.port);
	const simple = Buffer.concat([Buffer.from([0, 0, 32]), token, Buffer.from([0, payload.length]), payload]);
	const enhancedHead = Buffer.alloc(9);
	enhancedHead[0] = 1;
	enhancedHead.writeUInt32BE(77, 1);
	enhancedHead.writeUInt32BE(123, 5);
	const enhanced = Buffer.concat([enhancedHead, Buffer.from([0, 32]), token, Buffer.from([0, payload.length]), payload]);
	const frame = Buffer.alloc(frameBytes(payload.length));
	writeFrame(frame, 0, token, 0, payload, 0, payload.length, 78, 0, 5);
	// Split across writes at awkward places: the mock must reassemble.
	const all = Buffer.concat([simple, enhanced, frame]);
	for (let o = 0; o < all.length; o += 13) socket.write(all.subarray(o, o + 13));
	const closed = answer(socket);
	await threeAccepted; // the mock calls onAccepted for each notification it accepts
	socket.end();
	assert.equal(gw.acceptedCount, 3);
	assert.equal((await closed).length, 0, 'accepted notifications get no answer');
	assert.deepEqual(
		gw.received.map((r) => [r.command, r.ident, r.expiry, r.priority, r.token, r.payload]),
		[
			[0, 0, 0, 10, token.toString('hex'), payload.toString()],
			[1, 77, 123, 10, token.toString('hex'), payload.toString()],
			[2, 78, 0, 5, token.toString('hex'), payload.toString()],
		],
	);
});

test('a malformed frame gets an error response and the connection is closed; the rest is discarded', async (t) => {
	const gw = await gateway(t);
	const socket = await rawClient(gw.port);
	const closed = answer(socket);
	const bad = Buffer.alloc(frameBytes(2100));
	writeFrame(bad, 0, token, 0, Buffer.alloc(2100, 0x20), 0, 2100, 9, 0, 10);
	const good = Buffer.alloc(frameBytes(payload.length));
	writeFrame(good, 0, token, 0, payload, 0, payload.length, 10, 0, 10);
	socket.write(Buffer.concat([bad, good]));
	assert.deepEqual(await closed, encodeErrorResponse(7, 9));
	assert.equal(gw.acceptedCount, 0);
	assert.deepEqual(gw.errorsSent, [{ status: 7, ident: 9, connection: 1 }]);
});

test('an unknown command is a protocol error (128)', async (t) => {
	const gw = await gateway(t);
	const socket = await rawClient(gw.port);
	const closed = answer(socket);
	socket.write(Buffer.from([42, 0, 0, 0, 0, 0]));
	assert.deepEqual(await closed, encodeErrorResponse(128, 0));
});

test('a client without a certificate from the trusted CA is not let in', async (t) => {
	const gw = await gateway(t);
	const socket = tls.connect({ host: '127.0.0.1', port: gw.port, ca: certs().ca.cert });
	socket.on('error', () => {});
	await new Promise((resolve) => socket.once('close', resolve));
	assert.equal(gw.connections, 0);
});

/** One command-2 frame for `tk` with ident `ident`. */
function frameFor(tk: Buffer, ident: number): Buffer {
	const out = Buffer.alloc(frameBytes(payload.length));
	writeFrame(out, 0, tk, 0, payload, 0, payload.length, ident, 0, 10);
	return out;
}

test('hostile answers to the first data of a connection: garbage, wrong command, truncated error, unknown ident; nothing recorded', async (t) => {
	const cases: Array<[MockGatewayFaults, Buffer]> = [
		[{ garbage: true }, Buffer.from([0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed])],
		[{ wrongCommand: true }, Buffer.from([9, 8, 0, 0, 0, 41])],
		[{ truncatedError: true }, Buffer.from([8, 8, 0])],
		[{ errorUnknownIdent: true }, encodeErrorResponse(8, 0x7fffffff)],
	];
	for (const [faults, expected] of cases) {
		const gw = await gateway(t, faults);
		for (let i = 0; i < 2; i++) {
			const socket = await rawClient(gw.port);
			const closed = answer(socket);
			socket.write(Buffer.concat([frameFor(token, 41), frameFor(token, 42)]));
			assert.deepEqual(await closed, expected, `${JSON.stringify(faults)}, connection ${i + 1}`);
		}
		assert.deepEqual([gw.acceptedCount, gw.garbledAnswers, gw.connections], [0, 2, 2]);
		assert.equal(gw.errorsSent.length, faults.errorUnknownIdent ? 2 : 0, 'only the well-formed one is an error response');
	}
});

test('dropOnToken: the connection is destroyed at that token with no answer; what came before it is accepted, nothing after', async (t) => {
	const [before, drop, after] = [Buffer.alloc(32, 1), Buffer.alloc(32, 2), Buffer.alloc(32, 3)];
	const gw = await gateway(t, { dropOnToken: drop.toString('hex') });
	const socket = await rawClient(gw.port);
	const closed = answer(socket);
	socket.on('error', () => {});
	socket.write(Buffer.concat([frameFor(before, 1), frameFor(drop, 2), frameFor(after, 3)]));
	assert.equal((await closed).length, 0);
	assert.deepEqual(gw.received.map((r) => r.ident), [1]);
	assert.deepEqual([gw.silentDrops, gw.framesReceived, gw.errorsSent.length], [1, 2, 0]);
});

/** Until `done()`: waits on I/O without timers (tests with mocked timers use this too). */
async function until(done: () => boolean): Promise<void> {
	while (!done()) await new Promise((resolve) => setImmediate(resolve));
}

test('neverRead: the handshake completes and nothing is ever read', async (t) => {
	const gw = await gateway(t, { neverRead: true });
	const silent = await rawClient(gw.port);
	silent.on('error', () => {});
	await new Promise((resolve) => silent.write(frameFor(token, 1), resolve));
	await until(() => gw.connections === 1); // (TLS 1.3: the client can be up before the server's side is)
	// A second connection, reading normally, proves the mock has been through its I/O since that write.
	gw.setFaults({});
	const normal = await rawClient(gw.port);
	normal.write(frameFor(Buffer.alloc(32, 9), 2));
	await until(() => gw.acceptedCount === 1);
	assert.deepEqual(gw.received.map((r) => r.ident), [2]);
	assert.deepEqual([gw.framesReceived, gw.connections, gw.connectionsAccepted], [1, 2, 2]);
	assert.equal(gw.bytesReceived, frameFor(token, 2).length, 'not a byte from the paused connection');
	silent.destroy();
	normal.destroy();
});

test('stallReadMs: after the first chunk a connection is not read for that long, then it is read normally', async (t) => {
	t.mock.timers.enable({ apis: ['setTimeout'] });
	const gw = await gateway(t, { stallReadMs: 10_000 });
	const socket = await rawClient(gw.port);
	socket.write(frameFor(token, 1));
	await until(() => gw.acceptedCount === 1);
	await new Promise((resolve) => socket.write(frameFor(token, 2), resolve));
	// Another connection's first chunk is read at once: the mock has been through its I/O since the write above.
	const other = await rawClient(gw.port);
	other.write(frameFor(token, 3));
	await until(() => gw.acceptedCount === 2);
	assert.deepEqual(gw.received.map((r) => r.ident), [1, 3], 'the stalled connection is not read');
	t.mock.timers.tick(10_000);
	await until(() => gw.acceptedCount === 3);
	assert.deepEqual(gw.received.map((r) => r.ident), [1, 3, 2], 'read again after the stall');
	socket.destroy();
	other.destroy();
});

test('frames split anywhere across reads are reassembled, in order, whole; a frame longer than a read (a command 1 frame with a 20 KB payload) too', async (t) => {
	const gw = await gateway(t);
	const socket = await rawClient(gw.port);
	const frames: Buffer[] = [];
	const expected: Array<[number, string]> = [];
	for (let i = 0; i < 300; i++) {
		const p = Buffer.from(JSON.stringify({ aps: { alert: 'x'.repeat((i * 37) % 900) }, i }));
		const f = Buffer.alloc(frameBytes(p.length));
		writeFrame(f, 0, token, 0, p, 0, p.length, 1000 + i, 0, 10);
		frames.push(f);
		expected.push([1000 + i, p.toString()]);
	}
	// Command 1 with a payload over the 2,048-byte limit: delimited by its lengths, answered with status 7.
	const big = Buffer.alloc(20_000, 0x61);
	const head = Buffer.alloc(9);
	head[0] = 1;
	head.writeUInt32BE(4242, 1);
	frames.push(Buffer.concat([head, Buffer.from([0, 32]), token, Buffer.from([big.length >> 8, big.length & 0xff]), big]));
	const all = Buffer.concat(frames);
	const closed = answer(socket);
	// Slices of 1 to 3,000 bytes, each its own write and turn, so the mock's reads end mid-frame.
	let seed = 7;
	for (let o = 0; o < all.length; ) {
		seed = (seed * 1103515245 + 12345) >>> 0;
		const n = 1 + (seed % 3000);
		socket.write(all.subarray(o, o + n));
		o += n;
		await new Promise((resolve) => setImmediate(resolve));
	}
	const reply = await closed;
	assert.deepEqual([...reply], [...encodeErrorResponse(7, 4242)]);
	assert.deepEqual(
		gw.received.map((r) => [r.ident, r.payload]),
		expected,
	);
	assert.equal(gw.framesReceived, 301);
});
