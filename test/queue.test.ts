/**
 * The queue and the binary protocol's rules on their own: no sockets, no clock (nothing in them depends
 * on time). Each test drives take / error frame / close the way the binary driver does and checks where
 * every notification ends up.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Message, NotificationQueue, type Cursor, type QueueListener, type ResendReason } from '../src/index.js';
import { SentLog, settleErrorFrame, settleUnanswered } from '../src/protocol/binary.js';
import { makeTokens } from './support/helpers.js';

interface Recorder extends QueueListener {
	identNotFound(ident: number, status: number, resent: number): void;
	failures: Array<{ token: string; ident: number; status: number; reason?: string }>;
	resends: Array<{ count: number; reason: ResendReason }>;
	notFound: Array<{ ident: number; status: number; resent: number }>;
	full: number[];
	settled: number;
	idles: number;
}

function recorder(): Recorder {
	const r: Recorder = {
		failures: [],
		resends: [],
		notFound: [],
		full: [],
		settled: 0,
		idles: 0,
		failed: (message, index, ident, status, detail) => r.failures.push({ token: message.token(index), ident, status, ...(detail === undefined ? {} : { reason: detail.reason }) }),
		resent: (count, reason) => r.resends.push({ count, reason }),
		identNotFound: (ident, status, resent) => r.notFound.push({ ident, status, resent }),
		retentionFull: (retained) => r.full.push(retained),
		delivered: (count) => (r.settled += count),
		wake: () => {},
		idle: () => r.idles++,
	};
	return r;
}

function setup(options: ConstructorParameters<typeof NotificationQueue>[0] = {}) {
	const events = recorder();
	// The queue with the binary rules the driver applies to it, as methods: the tests read as the driver acts.
	const queue = Object.assign(new NotificationQueue(options), {
		openLog: () => new SentLog(),
		probe: (log: SentLog) => log.probe(),
		errorFrame(log: SentLog, status: number, ident: number) {
			const { outcome, resent } = settleErrorFrame(queue, log, status, ident);
			if (outcome === 'notFound') {
				events.identNotFound(ident, status, resent);
			}
			return outcome;
		},
		connectionClosed: (log: SentLog, cause?: string) => settleUnanswered(queue, log, cause),
	});
	queue.setListener(events);
	const cursor = { index: 0, ident: 0, tries: 0 } as Cursor;
	/** Take up to n notifications on `log`; returns [token, ident] pairs in write order. */
	const take = (log: SentLog, n = Infinity): Array<[string, number]> => {
		const out: Array<[string, number]> = [];
		while (out.length < n && queue.take(cursor)) {
			log.ring.push(cursor.message, cursor.index, cursor.ident, cursor.tries);
			log.sinceProof++;
			out.push([cursor.message.token(cursor.index), cursor.ident]);
		}
		return out;
	};
	return { queue, events, take };
}

test('idents are 32-bit, wrap past 2^32-1 to 1 (0 is never used), and a re-sent notification keeps its ident', () => {
	const { queue, take } = setup({ initialIdent: 0xffff_fffe });
	const tokens = makeTokens(6);
	queue.push(new Message(tokens, { aps: {} }));
	const log = queue.openLog();
	const written = take(log);
	assert.deepEqual(written.map(([, ident]) => ident), [0xffff_fffe, 0xffff_ffff, 1, 2, 3, 4]);
	// Ident 1 (the third, written after the wrap) is rejected: the two before it are delivered, the three after re-sent.
	assert.equal(queue.errorFrame(log, 8, 1), 'found');
	const again = take(queue.openLog());
	assert.deepEqual(again, written.slice(3), 'what followed the rejected one is re-sent in order with its original idents');
});

test('error frame (status 8): the named one fails once, earlier ones are delivered, later ones re-sent first, in order', () => {
	const { queue, events, take } = setup();
	const tokens = makeTokens(10);
	queue.push(new Message(tokens.slice(0, 6), { aps: {} }));
	const log = queue.openLog();
	const written = take(log);
	queue.push(new Message(tokens.slice(6), { aps: {} })); // new work, queued after the writes
	queue.errorFrame(log, 8, written[2]![1]);
	assert.deepEqual(events.failures, [{ token: tokens[2], ident: written[2]![1], status: 8 }]);
	assert.equal(events.settled, 2);
	assert.deepEqual(events.resends, [{ count: 3, reason: 'error' }]);
	const next = take(queue.openLog()).map(([token]) => token);
	assert.deepEqual(next, [...tokens.slice(3, 6), ...tokens.slice(6)], 're-sends go ahead of new work');
	assert.equal(queue.errorFrame(log, 8, written[2]![1]), 'found', 'a settled log ignores a second answer');
	assert.equal(events.failures.length, 1);
});

test('status 10 (shutdown): the named one and all before it were delivered; only what follows is re-sent; no error', () => {
	const { queue, events, take } = setup();
	queue.push(new Message(makeTokens(5), { aps: {} }));
	const log = queue.openLog();
	const written = take(log);
	queue.errorFrame(log, 10, written[1]![1]);
	assert.deepEqual(events.failures, []);
	assert.equal(events.settled, 2);
	assert.deepEqual(events.resends, [{ count: 3, reason: 'shutdown' }]);
	assert.deepEqual(take(queue.openLog()), written.slice(2));
});

test('temporary status (1, 255): the named one is retried up to maxAttempts, then reported', () => {
	const { queue, events, take } = setup({ maxAttempts: 2 });
	const [token] = makeTokens(1);
	queue.push(new Message(token!, { aps: {} }));
	let log = queue.openLog();
	let [[, ident]] = take(log) as [[string, number]];
	queue.errorFrame(log, 1, ident);
	assert.deepEqual(events.failures, []);
	assert.deepEqual(events.resends, [{ count: 1, reason: 'temporary' }]);
	log = queue.openLog();
	[[, ident]] = take(log) as [[string, number]];
	queue.errorFrame(log, 255, ident);
	assert.deepEqual(events.failures, [{ token, ident, status: 255 }]);
	assert.equal(queue.outstanding, 0);
});

test('only answered "try again"s use up attempts: re-sends after a backtrack, a silent close or a lost HTTP/2 stream do not', () => {
	const { queue, events, take } = setup({ maxAttempts: 2 });
	const [first, second] = makeTokens(2);
	queue.push(new Message([first!, second!], { aps: {} }));
	// `second` is re-sent three times without an answer naming it: once behind a temporary failure of
	// `first`, then after two silent closes.
	let log = queue.openLog();
	let written = take(log);
	queue.errorFrame(log, 1, written[0]![1]); // first: attempt 1 of 2 answered; second backtracked
	for (let i = 0; i < 2; i++) {
		log = queue.openLog();
		written = take(log);
		assert.deepEqual(written.map(([t]) => t), [first, second]);
		queue.connectionClosed(log);
	}
	// Both still have one attempt left: `first` used one, `second` none.
	log = queue.openLog();
	written = take(log);
	queue.errorFrame(log, 255, written[1]![1]); // second: attempt 1 answered, re-sent
	assert.equal(events.failures.length, 0);
	log = queue.openLog();
	written = take(log);
	assert.deepEqual(written.map(([t]) => t), [second]);
	queue.errorFrame(log, 255, written[0]![1]); // second: attempt 2 answered → fails
	assert.deepEqual(events.failures.map((f) => f.token), [second]);
	// HTTP/2: a stream lost with its session, or cut by GOAWAY, is re-queued without using an attempt.
	queue.push(new Message(first!, { aps: {} }));
	let n = queue.takeOne()!;
	assert.equal(n.tries, 1);
	queue.requeue([n], 'sessionLost');
	n = queue.takeOne()!;
	queue.requeue([n], 'goaway');
	n = queue.takeOne()!;
	assert.equal(n.tries, 1);
	queue.requeue([n], 'retry');
	assert.equal(queue.takeOne()!.tries, 2);
});

test('an error frame naming an ident never sent on the connection: everything held is re-sent in doubt, and it is reported', () => {
	const { queue, events, take } = setup();
	const tokens = makeTokens(6);
	queue.push(new Message(tokens, { aps: {} }));
	const log = queue.openLog();
	const written = take(log);
	assert.equal(queue.errorFrame(log, 8, 0x7fff_ffff), 'notFound');
	assert.deepEqual(events.notFound, [{ ident: 0x7fff_ffff, status: 8, resent: 6 }]);
	assert.deepEqual(events.failures, []);
	assert.equal(events.settled, 0, "a worthless answer confirms nothing");
	assert.deepEqual(events.resends, [{ count: 6, reason: 'identNotFound' }]);
	assert.deepEqual([events.notFound.length, queue.stats.inDoubt], [1, 6]);
	assert.deepEqual(take(queue.openLog()), written);
});

test('silent close: everything the connection still holds is re-sent and counted as in doubt', () => {
	const { queue, events, take } = setup();
	queue.push(new Message(makeTokens(4), { aps: {} }));
	const log = queue.openLog();
	const written = take(log);
	queue.connectionClosed(log);
	assert.deepEqual(events.resends, [{ count: 4, reason: 'silentClose' }]);
	assert.equal(queue.stats.inDoubt, 4);
	assert.deepEqual(take(queue.openLog()), written);
});

test('probe answer confirms everything written before it on that connection', () => {
	const { queue, events, take } = setup();
	queue.push(new Message(makeTokens(4), { aps: {} }));
	const log = queue.openLog();
	take(log);
	const ident = queue.probe(log);
	assert.equal(queue.errorFrame(log, 2, ident), 'probe');
	assert.equal(events.settled, 4);
	assert.equal(queue.outstanding, 0);
	assert.equal(events.idles, 1);
});

test('nothing is settled by time: a written notification stays retained until the gateway answers', () => {
	const { queue, events, take } = setup();
	queue.push(new Message(makeTokens(3), { aps: {} }));
	const log = queue.openLog();
	take(log);
	assert.deepEqual([queue.retained, queue.outstanding, events.settled], [3, 3, 0]);
	assert.equal(log.answered, 0);
	assert.equal(queue.errorFrame(log, 8, queue.probe(log)), 'probe');
	assert.deepEqual([queue.retained, queue.outstanding, events.settled, log.answered], [0, 0, 3, 3]);
});

test('a notification alone on a connection that ends unanswered uses an attempt; out of attempts it is reported ConnectionLost', () => {
	const { queue, events, take } = setup({ maxAttempts: 3 });
	const [bad, other] = makeTokens(2);
	queue.push(new Message([bad!, other!], { aps: {} }));
	// Lost together with another: nothing can be pinned on either, nothing is counted.
	let log = queue.openLog();
	take(log);
	queue.connectionClosed(log, 'reset');
	assert.deepEqual(events.resends.at(-1), { count: 2, reason: 'silentClose' });
	// Alone (the backend isolates after unanswered ends): each loss counts.
	for (let attempt = 1; attempt <= 3; attempt++) {
		log = queue.openLog();
		assert.deepEqual(take(log, 1).map(([t]) => t), [bad]);
		queue.connectionClosed(log, 'reset by peer');
	}
	assert.deepEqual(events.resends.slice(-2), [{ count: 1, reason: 'unanswered' }, { count: 1, reason: 'unanswered' }]);
	assert.deepEqual(events.failures.map((f) => [f.token, f.status, f.reason]), [[bad, 0, 'ConnectionLost']]);
	assert.equal(queue.stats.inDoubt, 2 + 2, 'every unanswered re-send is in doubt');
	log = queue.openLog();
	assert.deepEqual(take(log).map(([t]) => t), [other], 'the other one was never counted against');
	assert.equal(queue.outstanding, 1);
});

test('HTTP/2 re-sends: retry, unanswered and refused count an attempt; goaway and sessionLost do not; unanswered and sessionLost are in doubt', () => {
	const { queue } = setup();
	queue.push(new Message(makeTokens(1), { aps: {} }));
	let n = queue.takeOne()!;
	const tries: number[] = [n.tries];
	for (const reason of ['goaway', 'sessionLost', 'retry', 'unanswered', 'refused'] as const) {
		queue.requeue([n], reason);
		n = queue.takeOne()!;
		tries.push(n.tries);
	}
	assert.deepEqual(tries, [1, 1, 1, 2, 3, 4]);
	assert.equal(queue.stats.inDoubt, 2);
	assert.equal(queue.exhausted(n), false);
	queue.requeue([n], 'retry');
	assert.equal(queue.exhausted(queue.takeOne()!), true, 'maxAttempts 5 used up');
});

test('the retention cap pauses taking, reports once per episode, and lifts when room is made', () => {
	const { queue, events, take } = setup({ maxRetained: 3 });
	queue.push(new Message(makeTokens(5), { aps: {} }));
	const log = queue.openLog();
	assert.equal(take(log).length, 3);
	assert.equal(take(log).length, 0);
	assert.deepEqual(events.full, [3], 'reported once');
	assert.equal(queue.unsent, 2, 'nothing was dropped');
	queue.errorFrame(log, 8, queue.probe(log)); // the answer settles the three
	assert.equal(take(queue.openLog()).length, 2);
	assert.equal(queue.stats.retentionFull, 1);
});

test('outstanding counts every notification until it is delivered or failed', () => {
	const { queue, take } = setup();
	queue.push(new Message(makeTokens(3), { aps: {} }));
	assert.equal(queue.outstanding, 3);
	const log = queue.openLog();
	const written = take(log, 2);
	assert.deepEqual([queue.unsent, queue.retained, queue.outstanding], [1, 2, 3]);
	queue.errorFrame(log, 8, written[1]![1]);
	assert.deepEqual([queue.unsent, queue.retained, queue.outstanding], [1, 0, 1]);
	assert.equal(queue.clear(), 1);
	assert.equal(queue.outstanding, 0);
});

test('DueQueue: hands items over in due order, in batches, with one timer; clear drops the rest', async () => {
	const { DueQueue } = await import('../src/drivers/schedule.js');
	const batches: number[][] = [];
	let done!: () => void;
	const finished = new Promise<void>((resolve) => (done = resolve));
	const total = 20_000;
	let seen = 0;
	// The clock stands still while the items are added, so item i falls due exactly delay(i) after the others' base.
	let frozen: number | undefined = performance.now();
	const q = new DueQueue<number>(
		(items) => {
			batches.push(items);
			seen += items.length;
			if (seen === total) done();
		},
		() => frozen ?? performance.now(),
	);
	const delay = (i: number): number => ((i * 7919) % total) / 1000; // scrambled, up to 20 ms
	for (let i = 0; i < total; i++) q.add(i, delay(i));
	frozen = undefined;
	assert.equal(q.size, total);
	await finished;
	const flat = batches.flat();
	assert.equal(new Set(flat).size, total, 'each item exactly once');
	for (let i = 1; i < flat.length; i++) assert.ok(delay(flat[i - 1]!) <= delay(flat[i]!), `item ${flat[i]} handed over after an item due later`);
	assert.ok(batches.length < total, `${batches.length} batches for ${total} items`);
	assert.equal(q.size, 0);
	q.add(1, 60_000);
	q.add(2, 2 ** 40); // longer than a timer can hold: clamped, never a 1 ms busy loop
	assert.equal(q.size, 2);
	q.clear();
	assert.equal(q.size, 0);
});

test('a probe answered with ident 0 and status 2 or 5 (the gateway could not read its ident) is still the probe answer', () => {
	for (const status of [2, 5]) {
		const { queue, events, take } = setup();
		queue.push(new Message(makeTokens(3), { aps: {} }));
		const log = queue.openLog();
		take(log);
		queue.probe(log);
		assert.equal(queue.errorFrame(log, status, 0), 'probe');
		assert.deepEqual([events.settled, queue.outstanding], [3, 0]);
	}
	// Without a probe written, ident 0 proves nothing.
	const { queue, take } = setup();
	queue.push(new Message(makeTokens(2), { aps: {} }));
	const log = queue.openLog();
	take(log);
	assert.equal(queue.errorFrame(log, 2, 0), 'notFound');
});

test('ConnectRate: a burst of 3× the rate, then nothing until a token is due; 0 turns it off', async () => {
	const { ConnectRate } = await import('../src/drivers/backoff.js');
	let due = 0;
	const rate = new ConnectRate(20, () => due++);
	let allowed = 0;
	for (let i = 0; i < 100; i++) if (rate.take()) allowed++;
	assert.equal(allowed, 60, 'the burst');
	await new Promise<void>((resolve) => {
		const poll = setInterval(() => {
			if (due > 0) {
				clearInterval(poll);
				resolve();
			}
		}, 5);
	});
	assert.equal(due, 1, 'one wake-up, however many were refused');
	assert.equal(rate.take(), true, 'a token is there when the wake-up comes');
	rate.cancel();
	const off = new ConnectRate(0, () => assert.fail('never due'));
	for (let i = 0; i < 1000; i++) assert.equal(off.take(), true);
});

test('Reconnect: after a settlement the first failure retries at once, the next ones back off; without one, backoff from the first', async () => {
	const { Reconnect } = await import('../src/drivers/backoff.js');
	const policy = { initialDelayMs: 100, maxDelayMs: 1000, jitter: 0.5 };
	const fresh = new Reconnect(policy, () => {});
	const first = fresh.failed().retryInMs;
	assert.ok(first >= 50 && first <= 100, `never worked: ${first} ms`);
	fresh.cancel();
	const worked = new Reconnect(policy, () => {});
	worked.succeeded();
	assert.deepEqual(worked.failed(), { attempt: 1, retryInMs: 0 });
	const second = worked.failed();
	assert.ok(second.attempt === 2 && second.retryInMs >= 50 && second.retryInMs <= 100, `second: ${second.retryInMs} ms`);
	const third = worked.failed().retryInMs;
	assert.ok(third >= 100 && third <= 200, `third: ${third} ms`);
	worked.cancel();
});

test('takeRun hands out exactly what take would, in the same order (runs of one message, never across the ident wrap; re-sends one at a time); the retention cap holds and is reported once', () => {
	let seed = 7;
	const random = (n: number): number => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) % n);
	for (const [initialIdent, maxRetained] of [[1, 1_000_000], [0xffff_fff0, 1_000_000], [1, 37]] as const) {
		const one = setup({ initialIdent, maxRetained });
		const runs = setup({ initialIdent, maxRetained });
		for (const s of [one, runs]) for (const n of [5, 1, 40, 3]) s.queue.push(new Message(makeTokens(n, n), { aps: {} }));
		const logOne = one.queue.openLog();
		const logRuns = runs.queue.openLog();
		const byOne = one.take(logOne);
		const byRuns: Array<[string, number, number]> = [];
		const cursor = { index: 0, ident: 0, tries: 0 } as Cursor;
		assert.equal(runs.queue.takeRun(cursor, 0), 0, 'max 0: nothing');
		for (;;) {
			const n = runs.queue.takeRun(cursor, 1 + random(12));
			if (n === 0) break;
			logRuns.ring.pushRun(cursor.message, cursor.index, cursor.ident, cursor.tries, n);
			for (let k = 0; k < n; k++) byRuns.push([cursor.message.token(cursor.index + k), cursor.ident + k, cursor.tries]);
		}
		assert.deepEqual(byRuns.map(([t, i]) => [t, i]), byOne, `initialIdent ${initialIdent}, maxRetained ${maxRetained}`);
		assert.ok(byRuns.every(([, ident]) => ident >= 1 && ident <= 0xffff_ffff), 'no run crosses the wrap');
		assert.deepEqual(runs.events.full, one.events.full, 'the cap is reported as by take');
		assert.deepEqual([runs.queue.stats, runs.queue.retained, runs.queue.unsent], [one.queue.stats, one.queue.retained, one.queue.unsent]);
		// Rejected in the middle: what followed comes back as re-sends, handed out one at a time, same idents.
		const mid = byOne[Math.floor(byOne.length / 2)]![1];
		one.queue.errorFrame(logOne, 8, mid);
		runs.queue.errorFrame(logRuns, 8, mid);
		const again = one.take(one.queue.openLog());
		const againRuns: Array<[string, number]> = [];
		for (let n = runs.queue.takeRun(cursor, 50); n > 0; n = runs.queue.takeRun(cursor, 50)) {
			if (againRuns.length < byOne.length - byOne.findIndex(([, i]) => i === mid) - 1) assert.equal(n, 1, 'a re-send is handed out alone');
			for (let k = 0; k < n; k++) againRuns.push([cursor.message.token(cursor.index + k), cursor.ident + k]);
		}
		assert.deepEqual(againRuns, again);
		assert.deepEqual(runs.queue.stats, one.queue.stats);
	}
});
