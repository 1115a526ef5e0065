/** The mock gateway itself: what it parses, what it answers, whom it lets in. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import tls from 'node:tls';
import { encodeErrorResponse, frameBytes, writeFrame } from '../src/frame.js';
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
	writeFrame(frame, 0, token, 0, payload, 78, 0, 5);
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
	writeFrame(bad, 0, token, 0, Buffer.alloc(2100, 0x20), 9, 0, 10);
	const good = Buffer.alloc(frameBytes(payload.length));
	writeFrame(good, 0, token, 0, payload, 10, 0, 10);
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
