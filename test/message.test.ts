import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError, Message } from '../src/index.js';

const TOKEN = 'AB'.repeat(32);

function rejects(fn: () => unknown, argument: string, expected: RegExp): void {
	assert.throws(fn, (error: unknown) => {
		assert.ok(error instanceof InvalidArgumentError, `expected InvalidArgumentError, got ${String(error)}`);
		assert.equal(error.code, 'APNS_INVALID_ARGUMENT');
		assert.equal(error.argument, argument);
		assert.match(error.message, expected);
		return true;
	});
}

test('tokens: 64 hex characters in any case, stored lowercase', () => {
	const m = new Message([TOKEN, 'cd'.repeat(32)], { aps: {} });
	assert.equal(m.count, 2);
	assert.deepEqual(m.tokens, ['ab'.repeat(32), 'cd'.repeat(32)]);
	assert.equal(m.tokenBytes.length, 64);
	assert.equal(new Message(TOKEN, { aps: {} }).token(0), 'ab'.repeat(32));
});

test('tokens: a bad one is named by its index, with what was expected', () => {
	rejects(() => new Message([TOKEN, 'zz'.repeat(32)], { aps: {} }), 'tokens[1]', /64 hexadecimal characters.*"zzzz/);
	rejects(() => new Message(TOKEN.slice(2), { aps: {} }), 'tokens', /64 hexadecimal characters.*length 62/);
	rejects(() => new Message([], { aps: {} }), 'tokens', /at least one/);
	rejects(() => new Message(42 as unknown as string, { aps: {} }), 'tokens', /token string or an array/);
	rejects(() => new Message([TOKEN, 7 as unknown as string], { aps: {} }), 'tokens[1]', /got 7 \(number\)/);
	// Look-alikes: Node's hex decoder reads only the low byte of wide characters, so fullwidth 'ａ' (U+FF41)
	// and 'š' (U+0161, low byte 0x61 'a') would decode as hex digits if not refused first.
	for (const bad of ['ａ'.repeat(64), `${'a'.repeat(63)}š`, `${'a'.repeat(63)}g`, `${'a'.repeat(62)} a`, `${'a'.repeat(63)}á`]) {
		rejects(() => new Message(bad, { aps: {} }), 'tokens', /64 hexadecimal characters/);
	}
});

test('payload: a JSON object, encoded once', () => {
	let calls = 0;
	const counter = { toJSON: () => ++calls };
	const m = Message.fromAps(Array.from({ length: 1000 }, () => TOKEN), { alert: 'hi' }, { extra: { counter } });
	assert.equal(calls, 1, 'a 1000-token broadcast serialises its payload once');
	assert.equal(m.encodedPayload.toString(), '{"counter":1,"aps":{"alert":"hi"}}');
	rejects(() => new Message(TOKEN, [] as unknown as Record<string, unknown>), 'payload', /JSON object/);
	const cyclic: Record<string, unknown> = {};
	cyclic['self'] = cyclic;
	rejects(() => new Message(TOKEN, cyclic), 'payload', /JSON-serialisable/);
});

test('aps: camelCase keys become Apple keys; extra keys sit next to aps', () => {
	const m = Message.fromAps(TOKEN, { alert: { title: 'T', body: 'B' }, badge: 3, sound: 'default', contentAvailable: true, mutableContent: 1, threadId: 't', category: 'c', 'custom-key': 5 }, { extra: { id: 9 } });
	assert.deepEqual(JSON.parse(m.encodedPayload.toString()), {
		id: 9,
		aps: { alert: { title: 'T', body: 'B' }, badge: 3, sound: 'default', 'content-available': 1, 'mutable-content': 1, 'thread-id': 't', category: 'c', 'custom-key': 5 },
	});
	assert.deepEqual(JSON.parse(Message.fromAps(TOKEN, { alert: 'x', contentAvailable: false }).encodedPayload.toString()), { aps: { alert: 'x' } });
	rejects(() => Message.fromAps(TOKEN, { badge: -1 }), 'aps.badge', /whole number >= 0/);
	rejects(() => Message.fromAps(TOKEN, { contentAvailable: 'yes' as unknown as boolean }), 'aps.contentAvailable', /true, false, 0 or 1/);
	rejects(() => Message.fromAps(TOKEN, { alert: 'x' }, { extra: { aps: 1 } }), 'options.extra', /other than "aps"/);
	rejects(() => Message.fromAps(TOKEN, null as unknown as Record<string, never>), 'aps', /an object/);
});

test('priority: 5 or 10, default 10', () => {
	assert.equal(new Message(TOKEN, { aps: {} }).priority, 10);
	assert.equal(new Message(TOKEN, { aps: {} }, { priority: 5 }).priority, 5);
	rejects(() => new Message(TOKEN, { aps: {} }, { priority: 7 as 5 }), 'options.priority', /1, 5 or 10.*got 7/);
});

test('expiration: a Date or UNIX seconds; none stays none (not 0); milliseconds are caught', () => {
	assert.equal(new Message(TOKEN, { aps: {} }).expiry, undefined);
	assert.equal(new Message(TOKEN, { aps: {} }, { expiration: 0 }).expiry, 0);
	assert.equal(new Message(TOKEN, { aps: {} }, { expiration: new Date('2030-01-01T00:00:00Z') }).expiry, 1_893_456_000);
	assert.equal(new Message(TOKEN, { aps: {} }, { expiration: 1_893_456_000 }).expiry, 1_893_456_000);
	rejects(() => new Message(TOKEN, { aps: {} }, { expiration: 1_893_456_000_000 }), 'options.expiration', /milliseconds given\?/);
	rejects(() => new Message(TOKEN, { aps: {} }, { expiration: new Date('nope') }), 'options.expiration', /valid Date/);
	rejects(() => new Message(TOKEN, { aps: {} }, { expiration: -5 }), 'options.expiration', /UNIX seconds >= 0/);
	rejects(() => new Message(TOKEN, { aps: {} }, { expiration: 1.5 }), 'options.expiration', /whole number/);
});

test('compact storage: 5,000 messages share arena chunks without overlap; a refused one leaves nothing behind; a large one has its own buffer', () => {
	const token = (i: number) => `${'c0'.repeat(28)}${i.toString(16).padStart(8, '0')}`;
	const messages: Message[] = [];
	for (let i = 0; i < 5000; i++) {
		if (i % 1000 === 500) assert.throws(() => new Message([token(i), 'zz'.repeat(32)], { aps: { alert: 'refused' } }), InvalidArgumentError);
		messages.push(Message.fromAps(token(i), { alert: `n${i} ${'é'.repeat(i % 7)}` }, { extra: { i } }));
	}
	messages.forEach((m, i) => {
		assert.equal(m.token(0), token(i));
		assert.deepEqual(m.payload, { i, aps: { alert: `n${i} ${'é'.repeat(i % 7)}` } });
		assert.equal(m.encodedPayload.length, m.payloadLength);
		assert.equal(m.tokenBytes.toString('hex'), token(i));
	});
	assert.ok(new Set(messages.map((m) => m.chunk)).size < 100, 'shared chunks, not a buffer each');
	// Packed back to back (8-byte aligned), the refused ones included: a refusal takes no room.
	for (let i = 1; i < messages.length; i++) {
		const [a, b] = [messages[i - 1]!, messages[i]!];
		if (a.chunk === b.chunk) assert.equal(b.start, (a.start + 32 + a.payloadLength + 7) & ~7, `message ${i}`);
	}
	const big = Message.fromAps(Array.from({ length: 3000 }, (_, i) => token(i)), { alert: 'broadcast' });
	assert.equal(big.tokenBytes.length, 3000 * 32);
	assert.equal(big.token(2999), token(2999));
	assert.notEqual(big.chunk, messages.at(-1)!.chunk);
	assert.deepEqual(big.payload, { aps: { alert: 'broadcast' } });
});

test('a token getter that builds another message meanwhile cannot take the same arena room', () => {
	const outerToken = 'aa'.repeat(32);
	const innerToken = 'bb'.repeat(32);
	let inner: Message | undefined;
	const tokens = [outerToken];
	Object.defineProperty(tokens, 0, {
		get() {
			inner ??= Message.fromAps(innerToken, { alert: 'inner' });
			return outerToken;
		},
	});
	const outer = Message.fromAps(tokens, { alert: 'outer' });
	assert.deepEqual([outer.token(0), outer.payload], [outerToken, { aps: { alert: 'outer' } }]);
	assert.deepEqual([inner!.token(0), inner!.payload], [innerToken, { aps: { alert: 'inner' } }]);
});
