import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
	encodeErrorResponse,
	encodeFeedbackTuple,
	FeedbackDecoder,
	frameBytes,
	parseNotification,
	PROBE_FRAME_BYTES,
	writeFrame,
	writeFrames,
	writeProbeFrame,
} from '../src/frame.js';
import { ProtocolError } from '../src/errors.js';

const token = Buffer.from('0123456789abcdef'.repeat(4), 'hex');
const payload = Buffer.from('{"aps":{"alert":"hi"}}');

test('command 2 frame: all five items, 61 + payload bytes, big-endian', () => {
	const out = Buffer.alloc(frameBytes(payload.length));
	const end = writeFrame(out, 0, token, 0, payload, 0, payload.length, 0xdeadbeef, 1_893_456_000, 5);
	// 5 header + (3+32) token + (3+L) payload + (3+4) ident + (3+4) expiry + (3+1) priority = 61 + L.
	// (shared/docs/apns-protocol.md §A.4 adds this up to 58 + L, which is three bytes short.)
	assert.equal(end, 61 + payload.length);
	assert.equal(out[0], 2);
	assert.equal(out.readUInt32BE(1), end - 5);
	let o = 5;
	const items: Array<[number, Buffer]> = [];
	while (o < end) {
		const len = out.readUInt16BE(o + 1);
		items.push([out[o]!, out.subarray(o + 3, o + 3 + len)]);
		o += 3 + len;
	}
	assert.deepEqual(items.map(([id]) => id), [1, 2, 3, 4, 5]);
	assert.deepEqual(items[0]![1], token);
	assert.deepEqual(items[1]![1], payload);
	assert.equal(items[2]![1].readUInt32BE(0), 0xdeadbeef);
	assert.equal(items[3]![1].readUInt32BE(0), 1_893_456_000);
	assert.deepEqual([...items[4]![1]], [5]);
});

test('parser: reads back command 2 exactly, and waits for more bytes on a partial frame', () => {
	const out = Buffer.alloc(frameBytes(payload.length) * 2);
	let end = writeFrame(out, 0, token, 0, payload, 0, payload.length, 7, 0, 10);
	end = writeFrame(out, end, token, 0, payload, 0, payload.length, 8, 99, 5);
	const first = parseNotification(out, 0)!;
	assert.equal(first.notification.status, 0);
	assert.equal(first.notification.ident, 7);
	assert.deepEqual(first.notification.token, token);
	assert.deepEqual(first.notification.payload, payload);
	const second = parseNotification(out, first.end)!;
	assert.deepEqual([second.notification.ident, second.notification.expiry, second.notification.priority, second.end], [8, 99, 5, end]);
	for (let cut = 0; cut < first.end; cut++) assert.equal(parseNotification(out.subarray(0, cut), 0), undefined, `cut at ${cut}`);
});

test('parser: commands 0 and 1', () => {
	const simple = Buffer.concat([Buffer.from([0, 0, 32]), token, Buffer.from([0, payload.length]), payload]);
	const s = parseNotification(simple, 0)!;
	assert.deepEqual([s.notification.command, s.notification.ident, s.notification.status, s.end], [0, 0, 0, simple.length]);
	const head = Buffer.alloc(9);
	head[0] = 1;
	head.writeUInt32BE(42, 1);
	head.writeUInt32BE(1000, 5);
	const enhanced = Buffer.concat([head, Buffer.from([0, 32]), token, Buffer.from([0, payload.length]), payload]);
	const e = parseNotification(enhanced, 0)!;
	assert.deepEqual([e.notification.command, e.notification.ident, e.notification.expiry, e.notification.status], [1, 42, 1000, 0]);
	assert.deepEqual(e.notification.payload, payload);
});

test('parser: status codes for bad frames', () => {
	const big = Buffer.alloc(2049, 0x61);
	const out = Buffer.alloc(frameBytes(big.length));
	writeFrame(out, 0, token, 0, big, 0, big.length, 1, 0, 10);
	assert.equal(parseNotification(out, 0)!.notification.status, 7, 'payload over 2048 bytes');
	const shortToken = Buffer.alloc(frameBytes(2));
	writeFrame(shortToken, 0, Buffer.alloc(32), 0, Buffer.from('{}'), 0, 2, 1, 0, 10);
	shortToken.writeUInt16BE(31, 6); // claim a 31-byte token: the item boundaries shift and the frame is unreadable
	assert.notEqual(parseNotification(shortToken, 0)!.notification.status, 0);
	const badPriority = Buffer.alloc(frameBytes(2));
	writeFrame(badPriority, 0, token, 0, Buffer.from('{}'), 0, 2, 1, 0, 7);
	assert.equal(parseNotification(badPriority, 0)!.notification.status, 128);
	const unknown = parseNotification(Buffer.from([9, 0, 0]), 0)!;
	assert.deepEqual([unknown.notification.status, unknown.end], [128, -1]);
});

test('probe frame: an empty token that the gateway must answer with status 2 naming the ident', () => {
	const out = Buffer.alloc(PROBE_FRAME_BYTES);
	assert.equal(writeProbeFrame(out, 0, 4242), PROBE_FRAME_BYTES);
	const parsed = parseNotification(out, 0)!;
	assert.deepEqual([parsed.notification.status, parsed.notification.ident, parsed.end], [2, 4242, PROBE_FRAME_BYTES]);
});

test('error response: 6 bytes, command 8, status, ident', () => {
	assert.deepEqual([...encodeErrorResponse(8, 0x01020304)], [8, 8, 1, 2, 3, 4]);
});

test('feedback tuples are reassembled however the bytes are chunked', () => {
	const tuples = [0, 1, 2].map((i) => ({ when: new Date((1_700_000_000 + i) * 1000), token: Buffer.alloc(32, i + 1) }));
	const bytes = Buffer.concat(tuples.map((t) => encodeFeedbackTuple(t.when, t.token)));
	for (const size of [1, 5, 37, 38, 39, bytes.length]) {
		const decoder = new FeedbackDecoder();
		const got: Array<{ when: Date; token: Buffer }> = [];
		for (let o = 0; o < bytes.length; o += size) {
			const { tuples: completed, error } = decoder.push(bytes.subarray(o, o + size));
			assert.equal(error, undefined);
			got.push(...completed);
		}
		assert.deepEqual(got, tuples, `chunks of ${size}`);
		assert.equal(decoder.pendingBytes, 0);
	}
	const cut = new FeedbackDecoder();
	cut.push(bytes.subarray(0, 50));
	assert.equal(cut.pendingBytes, 12);
});

test('a feedback token length other than 32 breaks the stream as soon as the 6-byte header is in', () => {
	const good = encodeFeedbackTuple(new Date(1_700_000_000_000), Buffer.alloc(32, 7));
	for (const length of [0, 1, 31, 33, 1000]) {
		const bad = encodeFeedbackTuple(new Date(1_700_000_000_000), Buffer.alloc(length, 9));
		const decoder = new FeedbackDecoder();
		// Two good tuples and only the bad one's header: it must not wait for the rest of the bad tuple.
		const { tuples, error } = decoder.push(Buffer.concat([good, good, bad.subarray(0, 6)]));
		assert.equal(tuples.length, 2, `length ${length}`);
		assert.ok(error instanceof ProtocolError);
		assert.match(error.message, new RegExp(`token of ${length} bytes, not 32 \\(after 2 tuples were handed over\\)`));
		assert.equal(decoder.pendingBytes, 0);
		// Broken stays broken: nothing more comes out, the same error does.
		assert.deepEqual(decoder.push(good), { tuples: [], error });
	}
	// Split across pushes: the tuples of earlier pushes count.
	const split = new FeedbackDecoder();
	assert.equal(split.push(Buffer.concat([good, good.subarray(0, 20)])).tuples.length, 1);
	const late = split.push(Buffer.concat([good.subarray(20), Buffer.from([0, 0, 0, 0, 0, 1])]));
	assert.equal(late.tuples.length, 1);
	assert.match(late.error?.message ?? '', /token of 1 bytes, not 32 \(after 2 tuples/);
});

/** The frame as the protocol lays it out, built the slow way. */
function reference(tok: Buffer, payload: Buffer, ident: number, expiry: number, priority: number): Buffer {
	const u16 = (v: number): Buffer => Buffer.from([v >>> 8, v & 0xff]);
	const u32 = (v: number): Buffer => {
		const b = Buffer.alloc(4);
		b.writeUInt32BE(v);
		return b;
	};
	const body = Buffer.concat([Buffer.from([1]), u16(32), tok, Buffer.from([2]), u16(payload.length), payload, Buffer.from([3]), u16(4), u32(ident), Buffer.from([4]), u16(4), u32(expiry), Buffer.from([5]), u16(1), Buffer.from([priority])]);
	return Buffer.concat([Buffer.from([2]), u32(body.length), body]);
}

test('writeFrame: the same bytes on both sides of the byte-by-byte copy, at an offset into shared buffers, with idents and expiries up to 2^32-1', () => {
	const source = Buffer.alloc(7 + 32 + 2048 + 5);
	for (let i = 0; i < source.length; i++) source[i] = (i * 31 + 7) & 0xff;
	for (const length of [0, 1, 255, 256, 257, 2048]) {
		for (const [ident, expiry] of [[0, 0], [0x7fff_ffff, 0x8000_0000], [0xffff_ffff, 0xffff_ffff], [0x0102_0304, 1_893_456_000]] as const) {
			const out = Buffer.alloc(5 + frameBytes(length) + 3, 0xee);
			const end = writeFrame(out, 5, source, 7, source, 39 + 2, length, ident, expiry, 10);
			assert.equal(end, 5 + frameBytes(length));
			assert.deepEqual(out.subarray(5, end), reference(source.subarray(7, 39), source.subarray(41, 41 + length), ident, expiry, 10));
			assert.ok(out.subarray(0, 5).every((b) => b === 0xee) && out.subarray(end).every((b) => b === 0xee), 'nothing outside the frame is touched');
		}
	}
});

test('writeFrame: room is checked once, before anything is written (a frame one byte short throws, and writes nothing)', () => {
	const payload = Buffer.from('{}');
	const exact = Buffer.alloc(3 + frameBytes(2));
	assert.equal(writeFrame(exact, 3, token, 0, payload, 0, 2, 1, 0, 10), exact.length);
	for (const short of [1, 2, frameBytes(2)]) {
		const out = Buffer.alloc(3 + frameBytes(2) - short, 0xaa);
		assert.throws(() => writeFrame(out, 3, token, 0, payload, 0, 2, 1, 0, 10), RangeError);
		assert.ok(out.every((b) => b === 0xaa), 'nothing written');
	}
});

test('writeFrames: the same bytes as a writeFrame per notification (consecutive tokens and idents, across 2^32), at an offset; room for all is checked before anything is written', () => {
	const tokens = Buffer.alloc(3 + 32 * 40);
	for (let i = 0; i < tokens.length; i++) tokens[i] = (i * 13 + 5) & 0xff;
	const source = Buffer.alloc(2 + 2048);
	for (let i = 0; i < source.length; i++) source[i] = (i * 31 + 7) & 0xff;
	for (const length of [0, 2, 255, 256, 2048]) {
		for (const count of [1, 2, 3, 40]) {
			for (const ident of [1, 0xffff_fffe]) {
				const size = frameBytes(length);
				const expected = Buffer.alloc(4 + count * size + 3, 0xee);
				let at = 4;
				for (let k = 0; k < count; k++) at = writeFrame(expected, at, tokens, 3 + 32 * k, source, 2, length, (ident + k) >>> 0, 1_893_456_000, 5);
				const out = Buffer.alloc(expected.length, 0xee);
				assert.equal(writeFrames(out, 4, tokens, 3, count, source, 2, length, ident, 1_893_456_000, 5), at, `${count} of ${length} bytes`);
				assert.ok(out.equals(expected), `${count} frames of ${length} bytes from ident ${ident}`);
			}
		}
	}
	assert.equal(writeFrames(Buffer.alloc(0), 0, tokens, 0, 0, source, 0, 2, 1, 0, 10), 0, 'none: nothing to write');
	const out = Buffer.alloc(3 * frameBytes(2) - 1, 0xaa);
	assert.throws(() => writeFrames(out, 0, tokens, 0, 3, source, 0, 2, 1, 0, 10), RangeError);
	assert.ok(out.every((b) => b === 0xaa), 'nothing written');
});
