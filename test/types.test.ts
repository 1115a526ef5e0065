/**
 * Type-level tests: `npm test` compiles this file, so a wrong event payload type or a misspelt event
 * name is a build failure (each `@ts-expect-error` must see an error, or tsc fails too).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ApnsManager, ConnectionError, DeliveryError, Feedback, SendResult } from '../src/index.js';

function typeChecks(m: ApnsManager): void {
	m.on('deliveryError', (e: DeliveryError) => e.status satisfies number);
	m.on('feedback', (f: Feedback) => f.when satisfies Date);
	m.on('connectError', (e: ConnectionError, info) => [e.code, info.retryInMs satisfies number]);
	m.on('resent', ({ count, reason }) => [count satisfies number, reason satisfies 'error' | 'shutdown' | 'temporary' | 'retry' | 'unanswered' | 'refused' | 'goaway' | 'silentClose' | 'sessionLost' | 'identNotFound' | 'workerLost']);
	m.on('disconnected', ({ reason }) => reason satisfies 'errorFrame' | 'probeAnswered' | 'silentClose' | 'goaway' | 'protocolError' | 'timeout' | 'closed' | 'destroyed' | 'threadExit');
	m.on('threadReady', ({ thread, startMs }) => [thread satisfies number, startMs satisfies number]);
	// @ts-expect-error: no such event
	m.on('deliveryErorr', () => {});
	// @ts-expect-error: deliveryError carries a DeliveryError, not a string
	m.on('deliveryError', (e: string) => e);
	// @ts-expect-error: priority is 5 or 10
	m.sendAps('00', {}, { priority: 7 });
	// Receipts: not a promise (no floating promise in fire-and-forget code); settled is one.
	const receipt = m.sendAps('00', { alert: 'x' });
	// @ts-expect-error: a receipt has no then
	void receipt.then;
	void receipt.settled.then((r: SendResult) => [r.sent[0]?.apnsId satisfies string | undefined, r.failed[0]?.reason satisfies string | undefined, r.dropped satisfies string[]]);
}

test('typed events compile (see the file: the checks run in tsc)', () => {
	assert.equal(typeof typeChecks, 'function');
});
