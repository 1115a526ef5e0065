/**
 * The public API of ApnsManager: validation at the call, lifecycle (close, destroy), flush, events,
 * reconnection. Delivery semantics under faults are in conformance.test.ts. Option and payload checks run
 * once; everything that connects runs on every backend (test/support/backends.ts).
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { ApnsManager, ClosedError, ConnectionError, InvalidArgumentError, Message, TimeoutError } from '../src/index.js';
import { BACKENDS } from './support/backends.js';
import { account, certs, closedPort, gateway, makeTokens, manager, managerOn, once } from './support/helpers.js';

test('options are checked at construction, naming the option', () => {
	const c = certs();
	const base = { protocol: 'binary', cert: c.client.cert, key: c.client.key };
	const bad: Array<[object, string]> = [
		[{ graceMs: -1 }, 'options.graceMs'],
		[{ protocol: 'spdy' }, 'options.protocol'],
		[{ environment: 'staging' }, 'options.environment'],
		[{ gateway: { port: 70_000 } }, 'options.gateway.port'],
		[{ confirmEvery: 1.5 }, 'options.confirmEvery'],
		[{ reconnect: { jitter: 2 } }, 'options.reconnect.jitter'],
		[{ errorHandler: 'nope' }, 'options.errorHandler'],
		[{ backend: 'http2' }, 'options.backend'], // HTTP/2 is a protocol, not a backend
		[{ backend: 'fibers' }, 'options.backend'],
		[{ threads: 2 }, 'options.threads'], // does nothing without backend: 'threaded'
		[{ backend: 'threaded', threads: 0 }, 'options.threads'],
		[{ minThreads: 1 }, 'options.minThreads'], // likewise
		[{ backend: 'threaded', threads: 2, minThreads: 3 }, 'options.minThreads'], // more than there are
		[{ backend: 'threaded', minThreads: 0 }, 'options.minThreads'],
		[{ initialIdent: 0 }, 'options.initialIdent'],
	];
	for (const [options, argument] of bad) {
		assert.throws(() => new ApnsManager({ ...base, ...options } as never), (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument, argument);
	}
});

test('a payload that does not encode as a JSON object is refused at the call (toJSON)', async (t) => {
	const m = manager(t, undefined);
	const [token] = makeTokens(1, 34);
	assert.throws(() => m.sendAps(token!, { alert: 'x' }, { extra: { toJSON: () => undefined } }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.extra');
	assert.throws(() => m.sendAps(token!, { alert: 'x' }, { extra: { toJSON: () => 'text' } }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'options.extra');
	assert.throws(() => new Message(token!, { aps: {}, toJSON: () => 'text' }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'payload' && /JSON object/.test(e.message));
	assert.throws(() => new Message(token!, { aps: {}, toJSON: () => undefined }), (e: unknown) => e instanceof InvalidArgumentError && e.argument === 'payload');
	assert.equal(m.pending, 0);
});

for (const backend of BACKENDS) describe(`ApnsManager lifecycle and events (${backend.name})`, () => {
	const manager = managerOn(backend); // every manager below runs on this backend
	test('bad input throws at the call, names the argument, and leaves the queue untouched', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw);
		const good = makeTokens(3, 20);
		m.sendAps(good.slice(0, 2), { alert: 'first' });
		const cases: Array<[() => void, string]> = [
			[() => m.sendAps([good[2]!, 'not-a-token'], { alert: 'x' }), 'tokens[1]'],
			[() => m.sendAps(good[2]!, { alert: 'x'.repeat(2100) }), 'aps'],
			[() => m.sendAps(good[2]!, { alert: 'x' }, { priority: 1 as 5 }), 'options.priority'],
			[() => m.sendAps(good[2]!, { alert: 'x' }, { expiration: Date.now() }), 'options.expiration'],
			[() => m.send({ tokens: good } as unknown as Message), 'message'],
			[() => m.send(new Message(good[2]!, { aps: { alert: 'y'.repeat(2100) } })), 'message'],
		];
		for (const [call, argument] of cases) {
			assert.throws(call, (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument, argument);
		}
		assert.throws(() => m.sendAps(good[2]!, { alert: 'x'.repeat(2100) }), /at most 2048 bytes once encoded, got "2\d{3} bytes"/);
		assert.equal(m.pending, 2, 'nothing from the bad calls was queued');
		m.send(new Message(good[2]!, { aps: { alert: 'third' } }));
		await m.flushMessages();
		assert.deepEqual(account(gw, good), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	});

	test('flushMessages({ timeoutMs }) rejects with the number still pending when the gateway is unreachable', async (t) => {
		const port = await closedPort();
		const m = manager(t, { host: '127.0.0.1', port });
		m.sendAps(makeTokens(25, 21), { alert: 'x' });
		await assert.rejects(m.flushMessages({ timeoutMs: 300 }), (e: unknown) => e instanceof TimeoutError && e.pending === 25 && /25 notifications still pending/.test(e.message));
		assert.equal(m.pending, 25, 'a timed-out flush drops nothing');
	});

	test('an unreachable gateway is retried with capped exponential backoff and jitter, never a connect storm', { timeout: 30_000, skip: backend.callerThreadTimers ? false : 'it moves the backoff clock with mock.timers, which does not reach a worker thread (the per-backend check of the same schedule follows)' }, async (t) => {
		const port = await closedPort();
		const policy = { initialDelayMs: 100, maxDelayMs: 800, jitter: 0.5 };
		const m = manager(t, { host: '127.0.0.1', port }, { reconnect: policy });
		// Only setTimeout is mocked: the backoff (backoff.ts Reconnect) and the connect timeout run on it. The
		// backend coalesces its work with setImmediate, which stays real, as does the socket I/O. A refused port
		// fails at once, which clears that attempt's connect timeout before the clock is moved again.
		t.mock.timers.enable({ apis: ['setTimeout'] });
		t.after(() => t.mock.timers.reset());
		const retries: Array<{ attempt: number; retryInMs: number; error: ConnectionError }> = [];
		m.on('connectError', (error, info) => retries.push({ ...info, error }));
		const nextError = (): Promise<unknown> => once(m, 'connectError');
		/** Let the backend's setImmediate-coalesced work run: an attempt that is due is counted within one turn. */
		const settle = async (): Promise<void> => {
			for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
		};
		const checkDelay = ({ attempt, retryInMs }: { attempt: number; retryInMs: number }): void => {
			const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
			assert.ok(retryInMs >= ceiling * (1 - policy.jitter) && retryInMs <= ceiling, `attempt ${attempt}: ${retryInMs} ms, ceiling ${ceiling} ms`);
		};
		// The old test watched 2.5 s of wall clock; this one walks the same 2.5 s on the mocked clock.
		const windowMs = 2500;
		/** Mocked ms since the first attempt (nothing ticks before it). */
		let clock = 0;
		try {
			const first = nextError();
			m.sendAps(makeTokens(1, 22), { alert: 'x' });
			await settle();
			assert.equal(m.stats.connectAttempts, 1, 'the first attempt is made at once');
			await first; // the refused socket keeps the event loop alive until it fails
			assert.ok(retries[0]!.error instanceof ConnectionError && /ECONNREFUSED/.test(retries[0]!.error.message), retries[0]!.error.message);
			// Each round: the last attempt failed and announced retryInMs. Bounded: every delay is at least
			// initialDelayMs·(1−jitter) = 50 ms, so at most 2500 / 50 rounds fit the window; 12 is plenty.
			for (let round = 0; ; round++) {
				assert.ok(round < 12, 'bounded: 2.5 s holds at most 9 attempts');
				const last = retries.at(-1)!;
				assert.equal(last.attempt, retries.length, 'attempts are counted consecutively (never reset by a refusal)');
				assert.equal(m.stats.connectAttempts, retries.length, 'every connect attempt failed with one connectError');
				checkDelay(last);
				if (clock + last.retryInMs > windowMs) break;
				const before: number = m.stats.connectAttempts;
				t.mock.timers.tick(last.retryInMs - 1);
				await settle();
				assert.equal(m.stats.connectAttempts, before, `no attempt ${last.retryInMs - 1} ms into a ${last.retryInMs} ms backoff`);
				assert.equal(retries.length, before);
				const next = nextError();
				t.mock.timers.tick(1);
				clock += last.retryInMs;
				await settle();
				assert.equal(m.stats.connectAttempts, before + 1, 'exactly one attempt once the backoff is over');
				await next; // that attempt is refused in turn (its socket keeps the event loop alive until then)
				assert.equal(m.stats.connectAttempts, before + 1, 'no other attempt while it was being refused');
				assert.equal(retries.length, before + 1, 'one connectError for that one attempt');
			}
			// Run the clock to the end of the window: the pending backoff lies beyond it, so nothing more happens.
			const attempts = m.stats.connectAttempts;
			t.mock.timers.tick(windowMs - clock);
			await settle();
			assert.equal(m.stats.connectAttempts, attempts, 'no attempt before the last announced delay is over');
			assert.equal(retries.length, attempts);
			// Over 2.5 s the schedule allows 6 attempts (every delay at its ceiling: 0, 100, 300, 700, 1500, 2300 ms)
			// to 9 (every delay at its floor: 0, 50, 150, 350, 750, 1150, 1550, 1950, 2350 ms): under 4 a second.
			assert.ok(attempts / (windowMs / 1000) < 4, `${attempts} attempts in ${windowMs} ms`);
			assert.ok(attempts >= 6, `${attempts} attempts in ${windowMs} ms: the backoff must not stall`);
			assert.ok(retries.some(({ attempt }) => policy.initialDelayMs * 2 ** (attempt - 1) > policy.maxDelayMs), 'the cap was reached');
			t.diagnostic(`connect attempts against a refused port: ${attempts} in ${windowMs} ms on the mocked clock; delays ${retries.map((r) => r.retryInMs).join(', ')} ms`);
		} finally {
			m.destroy();
			t.mock.timers.reset();
		}
	});

	test('an unreachable gateway: one connectError per attempt, attempts numbered in a row, every announced delay within the jittered ceiling up to the cap', async (t) => {
		// The same schedule as the mock-clock test above, on real (short) timers so it runs on every backend.
		// It checks what the backend announces and counts, not how long it waited: that is the test above.
		const port = await closedPort();
		const policy = { initialDelayMs: 5, maxDelayMs: 40, jitter: 0.5 };
		const m = manager(t, { host: '127.0.0.1', port }, { reconnect: policy });
		const ROUNDS = 8;
		const seen: Array<{ attempt: number; retryInMs: number; message: string; connectAttempts: number }> = [];
		const enough = new Promise<void>((resolve) =>
			m.on('connectError', (error, { attempt, retryInMs }) => {
				seen.push({ attempt, retryInMs, message: error instanceof ConnectionError ? error.message : `not a ConnectionError: ${String(error)}`, connectAttempts: m.stats.connectAttempts });
				if (seen.length === ROUNDS) resolve();
			}),
		);
		m.sendAps(makeTokens(1, 38), { alert: 'x' });
		await enough;
		m.destroy();
		assert.deepEqual(seen.slice(0, ROUNDS).map((s) => s.attempt), [1, 2, 3, 4, 5, 6, 7, 8], 'attempts are counted consecutively (never reset by a refusal)');
		assert.deepEqual(seen.slice(0, ROUNDS).map((s) => s.connectAttempts), [1, 2, 3, 4, 5, 6, 7, 8], 'each attempt failed with exactly one connectError');
		for (const { attempt, retryInMs, message } of seen.slice(0, ROUNDS)) {
			assert.match(message, /ECONNREFUSED/);
			const ceiling = Math.min(policy.maxDelayMs, policy.initialDelayMs * 2 ** (attempt - 1));
			// Ceilings 5, 10, 20, 40, 40, …: the delay doubles, then stays at the cap (attempts 4 to 8).
			assert.ok(retryInMs >= ceiling * (1 - policy.jitter) && retryInMs <= ceiling, `attempt ${attempt}: ${retryInMs} ms, ceiling ${ceiling} ms`);
		}
	});

	test('notifications queued while the gateway refuses connections are delivered once it is back', async (t) => {
		const gw = await gateway(t);
		await gw.refuseFor(700);
		const m = manager(t, gw, { reconnect: { initialDelayMs: 50, maxDelayMs: 200 } });
		let refused = 0;
		m.on('connectError', () => refused++);
		const tokens = makeTokens(2000, 23);
		m.sendAps(tokens, { alert: 'eventually' });
		await m.flushMessages();
		assert.ok(refused >= 1, 'at least one connect was refused');
		assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	});

	test('close() flushes, then closes; sends after close throw ClosedError; close and destroy are idempotent', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw);
		let closedEvents = 0;
		m.on('closed', () => closedEvents++);
		const tokens = makeTokens(3000, 24);
		m.sendAps(tokens, { alert: 'bye' });
		const first = m.close();
		assert.equal(m.close(), first, 'a second close() returns the same promise');
		assert.throws(() => m.sendAps(tokens[0]!, { alert: 'late' }), ClosedError);
		await first;
		assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
		m.destroy();
		m.destroy();
		assert.equal(closedEvents, 1);
		await assert.rejects(m.getFeedback(() => {}), ClosedError);
	});

	test('destroy() drops everything now and rejects pending flushes with the number dropped', async (t) => {
		const port = await closedPort();
		const m = manager(t, { host: '127.0.0.1', port });
		m.sendAps(makeTokens(10, 25), { alert: 'x' });
		const flushing = m.flushMessages();
		m.destroy();
		await assert.rejects(flushing, (e: unknown) => e instanceof ClosedError && /10 notifications pending/.test(e.message));
		assert.equal(m.pending, 0);
		assert.throws(() => m.sendAps(makeTokens(1, 25)[0]!, { alert: 'x' }), ClosedError);
	});

	test('close({ timeoutMs }) destroys and rejects when the flush cannot finish', async (t) => {
		const port = await closedPort();
		const m = manager(t, { host: '127.0.0.1', port });
		m.sendAps(makeTokens(4, 26), { alert: 'x' });
		await assert.rejects(m.close({ timeoutMs: 200 }), (e: unknown) => e instanceof TimeoutError && e.pending === 4);
		assert.equal(m.pending, 0, 'destroyed');
	});

	test('a throwing errorHandler or listener becomes an error event; delivery carries on', async (t) => {
		const tokens = makeTokens(1000, 27);
		const gw = await gateway(t, { rejectTokens: { [tokens[10]!]: 8, [tokens[500]!]: 8 } });
		const m = manager(t, gw, {
			errorHandler: () => {
				throw new Error('handler bug');
			},
		});
		m.on('deliveryError', () => {
			throw new Error('listener bug');
		});
		const errors: string[] = [];
		m.on('error', (e) => errors.push((e as Error).message));
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.deepEqual(errors, ['handler bug', 'listener bug', 'handler bug', 'listener bug']);
		assert.deepEqual(account(gw, tokens, new Set([tokens[10]!, tokens[500]!])), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	});

	test('events: connected, disconnected with a reason, delivered, idle', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw);
		const seen: string[] = [];
		m.on('connected', () => seen.push('connected'));
		m.on('disconnected', ({ reason }) => seen.push(`disconnected:${reason}`));
		let delivered = 0;
		m.on('delivered', ({ count }) => (delivered += count));
		const idle = once(m, 'idle');
		m.sendAps(makeTokens(10, 28), { alert: 'x' });
		await idle;
		await m.close();
		assert.equal(delivered, 10);
		assert.deepEqual(seen.slice(0, 2), ['connected', 'disconnected:probeAnswered']);
	});

	test('flushMessages() resolves at once when nothing is pending, and settles by probe rather than waiting out grace', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw, { graceMs: 600_000, confirmIdleMs: false });
		await m.flushMessages();
		m.sendAps(makeTokens(100, 29), { alert: 'x' });
		// Grace is 10 minutes and nothing probes when idle: only the flush's own probe can settle these. (The
		// timeout is not a measure: it turns a flush that is never heard into a failure instead of a hang.)
		await m.flushMessages({ timeoutMs: 5000 });
		assert.equal(m.stats.delivered, 100);
		assert.equal(m.stats.probesAnswered, 1);
	});

	test('async dispose closes the manager', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw);
		m.sendAps(makeTokens(5, 30), { alert: 'x' });
		await m[Symbol.asyncDispose]();
		assert.equal(gw.acceptedCount, 5);
		assert.throws(() => m.sendAps(makeTokens(1, 30)[0]!, { alert: 'x' }), ClosedError);
	});

	test('minConfirmIntervalMs keeps probe reconnects apart on a healthy stream; confirmEvery alone probes by count', async (t) => {
		const gw = await gateway(t);
		const tokens = makeTokens(20_000, 31);
		// confirmEvery 256 = the first window, so the window is fully open from the start.
		const floored = manager(t, gw, { confirmEvery: 256, minConfirmIntervalMs: 600_000 });
		floored.sendAps(tokens, { alert: 'x' });
		await floored.flushMessages();
		assert.equal(floored.stats.probesAnswered, 1, 'only the flush probes: the interval never elapsed');
		const counted = manager(t, gw, { confirmEvery: 256, minConfirmIntervalMs: 0, maxConnectsPerSecond: 0 }); // counting alone, no ceiling
		counted.sendAps(tokens, { alert: 'y' });
		await counted.flushMessages();
		assert.ok(counted.stats.probesAnswered >= Math.floor(20_000 / 256), `${counted.stats.probesAnswered} probes`);
		assert.equal(gw.acceptedCount, 40_000);
	});

	test('bad arguments to close, flushMessages and getFeedback throw at the call, name the argument, and touch nothing', async (t) => {
		const gw = await gateway(t);
		const m = manager(t, gw);
		let closed = 0;
		m.on('closed', () => closed++);
		const tokens = makeTokens(1000, 32);
		m.sendAps(tokens, { alert: 'kept' });
		const bad: Array<[() => unknown, string]> = [
			[() => m.close(null as never), 'close(options)'],
			[() => m.close({ timeoutMs: 'soon' } as never), 'close(options).timeoutMs'],
			[() => m.close({ timeoutMs: -5 }), 'close(options).timeoutMs'],
			[() => m.close({ timeoutMs: 1.5 }), 'close(options).timeoutMs'],
			[() => m.close({ timeout: 5 } as never), 'close(options).timeout'],
			[() => m.flushMessages(null as never), 'flushMessages(options)'],
			[() => m.flushMessages({ timeoutMs: Number.NaN }), 'flushMessages(options).timeoutMs'],
			[() => m.getFeedback('callback' as never), 'callback'],
		];
		for (const [call, argument] of bad) assert.throws(call, (e: unknown) => e instanceof InvalidArgumentError && e.argument === argument, argument);
		assert.equal(m.pending, 1000, 'nothing was dropped');
		assert.equal(closed, 0, 'the manager is still open');
		m.sendAps(makeTokens(1, 33), { alert: 'still accepted' });
		await m.close();
		assert.deepEqual(account(gw, [...tokens, ...makeTokens(1, 33)]), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
	});

	test('close() after destroy() resolves and emits closed no second time', async (t) => {
		const port = await closedPort();
		const m = manager(t, { host: '127.0.0.1', port });
		let closed = 0;
		m.on('closed', () => closed++);
		m.sendAps(makeTokens(3, 35), { alert: 'x' });
		m.destroy();
		await m.close();
		await m.close({ timeoutMs: 10 });
		assert.equal(closed, 1);
		assert.equal(m.pending, 0);
	});

	test('a later close({ timeoutMs }) bounds a close already under way; destroy() keeps the counts whole', async (t) => {
		const port = await closedPort();
		const m = manager(t, { host: '127.0.0.1', port });
		let closed = 0;
		m.on('closed', () => closed++);
		m.sendAps(makeTokens(7, 36), { alert: 'x' });
		const first = m.close(); // no deadline: would wait for the gateway for ever
		await assert.rejects(m.close({ timeoutMs: 100 }), (e: unknown) => e instanceof TimeoutError && e.pending === 7);
		await first; // over, by destroy's hand
		assert.equal(closed, 1);
		const s = m.stats;
		assert.deepEqual([s.queued, s.delivered + s.failed + s.dropped + s.pending, s.dropped], [7, 7, 7]);
	});

	test('the connection-rate ceiling: probes (each a hand-over to a new connection) stay within maxConnectsPerSecond; a healthy stream writes on meanwhile', async (t) => {
		const gw = await gateway(t);
		const tokens = makeTokens(2000, 37);
		// A window of 10 with no time floor would probe — and reconnect — 200 times; the ceiling allows a burst of 3.
		const m = manager(t, gw, { confirmEvery: 10, minConfirmIntervalMs: 0, maxConnectsPerSecond: 1 });
		m.sendAps(tokens, { alert: 'x' });
		await m.flushMessages();
		assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
		assert.ok(gw.connectionsAccepted <= 5, `${gw.connectionsAccepted} connections`);
		const open = manager(t, gw, { confirmEvery: 10, minConfirmIntervalMs: 0, maxConnectsPerSecond: 0 });
		const before = gw.connectionsAccepted;
		open.sendAps(tokens, { alert: 'y' });
		await open.flushMessages();
		assert.ok(gw.connectionsAccepted - before >= 100, `without a ceiling: ${gw.connectionsAccepted - before} connections`);
	});
});
