/**
 * The HTTP/2 mock itself, driven by a bare node:http2 client (no apns-worker code between): GOAWAY as RFC
 * 9113 §6.8 has it, and the hostile faults (resets, streams never answered, GOAWAY on connect, a TLS 1.3
 * server that refuses the client certificate after the client's handshake completed).
 */
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { test, type TestContext } from 'node:test';
import type tls from 'node:tls';
import { makeTestCertificates, startMockApnsHttp2, type MockApnsHttp2, type MockApnsHttp2Faults, type MockApnsHttp2Options } from '../src/testing.js';
import { certs, makeTokens } from './support/helpers.js';

const TOPIC = 'com.example.app';
const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;

async function mock(t: TestContext, faults: MockApnsHttp2Faults = {}, extra: Partial<MockApnsHttp2Options> = {}): Promise<MockApnsHttp2> {
	const c = certs();
	const m = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, topics: [TOPIC], faults, ...extra });
	t.after(() => m.close());
	return m;
}

/** A bare client session with the test client certificate (certificate auth: no JWT needed). */
function connect(t: TestContext, server: { port: number }, pair = certs().client): http2.ClientHttp2Session {
	const session = http2.connect(`https://127.0.0.1:${server.port}`, { cert: pair.cert, key: pair.key, ca: certs().ca.cert });
	session.on('error', () => {});
	t.after(() => session.destroy());
	return session;
}

interface Outcome {
	/** The stream id the client used. */
	id: number;
	/** Answer status, or undefined when none came. */
	status: number | undefined;
	rstCode: number | undefined;
}

/** Send one notification; resolves when the stream closes, however it ends. */
function push(session: http2.ClientHttp2Session, token: string): Promise<Outcome> {
	const stream = session.request({ ':method': 'POST', ':path': `/3/device/${token}`, 'apns-topic': TOPIC, 'apns-push-type': 'alert' });
	let status: number | undefined;
	stream.on('response', (headers) => (status = Number(headers[':status'])));
	stream.on('error', () => {});
	stream.resume();
	stream.end('{"aps":{"alert":"x"}}');
	return new Promise((resolve) => stream.on('close', () => resolve({ id: stream.id ?? 0, status, rstCode: status === undefined ? stream.rstCode : undefined })));
}

const closed = (session: http2.ClientHttp2Session): Promise<void> => new Promise((resolve) => (session.closed && session.destroyed ? resolve() : session.once('close', () => resolve())));

/** The lastStreamId of every GOAWAY the client gets, and the end of its session. */
function watch(session: http2.ClientHttp2Session): { goaways: number[]; ended: Promise<void> } {
	const goaways: number[] = [];
	session.on('goaway', (_code: number, lastStreamId: number) => goaways.push(lastStreamId));
	return { goaways, ended: closed(session) };
}

test('GOAWAY: the mock processes exactly the streams up to the lastStreamId it announced, refuses the rest, then ends the session', async (t) => {
	const server = await mock(t, { goawayAfter: 20 });
	const session = connect(t, server);
	const { goaways: seen, ended } = watch(session);
	// 200 streams written at once: many reach the mock in the same read as the 20th, before its GOAWAY is out.
	const outcomes = await Promise.all(makeTokens(200, 80).map((token) => push(session, token)));
	await ended;
	assert.equal(server.goaways.length, 1);
	const last = server.goaways[0]!.lastStreamId;
	assert.ok(seen.length > 0 && seen.every((id) => id === last), `client saw lastStreamId ${seen.join(', ')}; announced ${last}`);
	const processed = server.received.map((r) => r.stream).sort((a, b) => a - b);
	const atOrBelow = outcomes.filter((o) => o.id !== 0 && o.id <= last).map((o) => o.id).sort((a, b) => a - b);
	assert.deepEqual(processed, atOrBelow, 'processed = the streams at or below lastStreamId');
	assert.equal(processed.length, 20);
	for (const o of outcomes) {
		if (o.id !== 0 && o.id <= last) assert.equal(o.status, 200, `stream ${o.id}`);
		else assert.equal(o.status, undefined, `stream ${o.id} above lastStreamId must get no answer`);
	}
	assert.equal(server.counts.size, 20);
});

test('goawayOnConnect: GOAWAY with lastStreamId 0 at once, no stream processed, the session ends', async (t) => {
	const server = await mock(t, { goawayOnConnect: true });
	const session = connect(t, server);
	const { goaways: seen, ended } = watch(session);
	const outcomes = await Promise.all(makeTokens(5, 81).map((token) => push(session, token)));
	await ended;
	// The mock's GOAWAY and the one its session.close() adds, both naming 0.
	assert.ok(seen.length > 0 && seen.every((id) => id === 0), `lastStreamId ${seen.join(', ')}`);
	assert.deepEqual(server.goaways, [{ session: 1, lastStreamId: 0 }]);
	assert.ok(outcomes.every((o) => o.status === undefined));
	assert.equal(server.acceptedCount, 0);
	assert.equal(server.received.length, 0);
});

test('resetStreams: RST_STREAM with the code asked for, for the listed tokens only; nothing recorded for them', async (t) => {
	const [bad, good] = makeTokens(2, 82);
	for (const [code, expected] of [['REFUSED_STREAM', NGHTTP2_REFUSED_STREAM], ['INTERNAL_ERROR', NGHTTP2_INTERNAL_ERROR], ['CANCEL', NGHTTP2_CANCEL]] as const) {
		const server = await mock(t, { resetStreams: { code, tokens: [bad!] } });
		const session = connect(t, server);
		const [reset, answered] = await Promise.all([push(session, bad!), push(session, good!)]);
		assert.deepEqual([reset.status, reset.rstCode], [undefined, expected], code);
		assert.equal(answered.status, 200);
		assert.deepEqual([server.resets, server.requests, server.answered, server.acceptedCount], [1, 2, 1, 1]);
		assert.equal(server.counts.get(bad!), undefined);
		session.destroy();
	}
	const server = await mock(t, { resetStreams: { code: 'CANCEL' } });
	const outcomes = await Promise.all(makeTokens(3, 83).map((token) => push(connect(t, server), token)));
	assert.ok(outcomes.every((o) => o.rstCode === NGHTTP2_CANCEL), 'no token list: every stream');
	assert.equal(server.resets, 3);
});

test('neverAnswer: the listed streams stay open, counted as requests but never answered; PINGs are still answered', async (t) => {
	const [silent, good] = makeTokens(2, 84);
	const server = await mock(t, { neverAnswer: [silent!] });
	const session = connect(t, server);
	let silentClosed = false;
	void push(session, silent!).then(() => (silentClosed = true));
	assert.equal((await push(session, good!)).status, 200);
	await new Promise<void>((resolve, reject) => session.ping((error) => (error === null ? resolve() : reject(error))));
	assert.equal(silentClosed, false, 'still open after a later stream and a PING round trip');
	assert.deepEqual([server.requests, server.answered, server.acceptedCount], [2, 1, 1]);
});

test('neverAnswerAfter: the first N requests the mock sees are answered, across sessions; none after, however they arrive; PINGs still are', async (t) => {
	const tokens = makeTokens(5, 86);
	const server = await mock(t, { neverAnswerAfter: 3 });
	// Three requests at once, each on a session of its own, then two on a fourth: the 4th and 5th the mock sees go unanswered.
	const first = await Promise.all(tokens.slice(0, 3).map((token) => push(connect(t, server), token)));
	assert.deepEqual(first.map((o) => o.status), [200, 200, 200]);
	const second = connect(t, server);
	await new Promise((resolve) => second.once('connect', resolve)); // a PING before it is cancelled
	let answered = false;
	void Promise.race(tokens.slice(3).map((token) => push(second, token))).then(() => (answered = true));
	while (server.requests < 5) await new Promise((resolve) => setImmediate(resolve));
	await new Promise<void>((resolve, reject) => second.ping((error) => (error === null ? resolve() : reject(error))));
	assert.equal(answered, false, 'still open after a PING round trip that followed them');
	assert.deepEqual([server.requests, server.answered, server.acceptedCount], [5, 3, 3]);
});

test('statusEvery: retry-after is sent as given, however large', async (t) => {
	const server = await mock(t, { statusEvery: { every: 1, status: 503, retryAfterSeconds: 99_999_999 } });
	const session = connect(t, server);
	const stream = session.request({ ':method': 'POST', ':path': `/3/device/${makeTokens(1, 85)[0]}`, 'apns-topic': TOPIC });
	stream.end('{"aps":{}}');
	const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', (h) => resolve(h)));
	stream.destroy();
	assert.deepEqual([headers[':status'], headers['retry-after']], [503, '99999999']);
});

test('requireClientCert: a TLS 1.3 server refusing the client certificate lets the session connect, then ends it', async (t) => {
	// The mock trusts another CA than the one that signed the client certificate.
	const other = makeTestCertificates();
	const server = await mock(t, {}, { ca: other.ca.cert, requireClientCert: true });
	const session = connect(t, server);
	const events: string[] = [];
	session.on('connect', (_s, socket: tls.TLSSocket) => events.push(`connect ${socket.getProtocol()}`));
	const outcome = push(session, makeTokens(1, 86)[0]!);
	await closed(session);
	events.push('close');
	// Node's server checks the certificate once the handshake is done and destroys the socket: the client
	// sees a clean end, no TLS alert and no session error.
	assert.deepEqual(events, ['connect TLSv1.3', 'close'], 'the client finished its handshake, then lost the session');
	assert.equal((await outcome).status, undefined);
	assert.deepEqual([server.connectionsAccepted, server.sessions, server.requests], [1, 0, 0]);
});
