/**
 * Live Activity payloads: `liveActivityAps()` builds the `aps` of a start, an update or an end from
 * camelCase input and refuses mistakes at the call, naming the field; a push-to-start reaches the mock
 * as Apple describes it (push type liveactivity, the topic's suffix, the payload's keys).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { InvalidArgumentError, liveActivityAps, type LiveActivityContent } from '../src/index.js';
import { makeTokens } from './support/helpers.js';
import { liveManager, liveMock, TOPIC } from './support/live.js';

const NOW = Date.UTC(2026, 11, 7, 12, 0, 0);
const ALERT = { title: 'Kick-off', body: 'The match has started', sound: 'default' };

test('liveActivityAps: start, update and end as Apple lists the keys; times as UNIX seconds; timestamp defaults to now', () => {
	assert.deepEqual(liveActivityAps({ event: 'update', contentState: { score: '1-0' }, relevanceScore: 50 }, NOW), { timestamp: NOW / 1000, event: 'update', 'content-state': { score: '1-0' }, 'relevance-score': 50 });
	assert.deepEqual(liveActivityAps({ event: 'end', contentState: { score: '2-1' }, timestamp: 1_800_000_000, dismissalDate: new Date(NOW + 3_600_000), staleDate: 1_800_000_100 }, NOW), {
		timestamp: 1_800_000_000,
		event: 'end',
		'content-state': { score: '2-1' },
		'stale-date': 1_800_000_100,
		'dismissal-date': NOW / 1000 + 3600,
	});
	assert.deepEqual(liveActivityAps({ event: 'start', contentState: { score: '0-0' }, attributesType: 'MatchAttributes', attributes: { home: 'A', away: 'B' }, alert: ALERT, inputPushChannel: 'dHJ5IG1lIG91dA==' }, NOW), {
		timestamp: NOW / 1000,
		event: 'start',
		'content-state': { score: '0-0' },
		alert: ALERT,
		'attributes-type': 'MatchAttributes',
		attributes: { home: 'A', away: 'B' },
		'input-push-channel': 'dHJ5IG1lIG91dA==',
	});
	assert.equal(liveActivityAps({ event: 'start', contentState: {}, attributesType: 'T', attributes: {}, alert: ALERT, inputPushToken: true }, NOW)['input-push-token'], 1);
});

test('liveActivityAps: each mistake is an InvalidArgumentError naming the field', () => {
	const start = { event: 'start', contentState: {}, attributesType: 'T', attributes: {}, alert: ALERT } as const;
	const cases: Array<[unknown, string]> = [
		[{ event: 'begin', contentState: {} }, 'content.event'],
		[{ event: 'update' }, 'content.contentState'],
		[{ event: 'update', contentState: [] }, 'content.contentState'],
		[{ event: 'update', contentState: {}, dismissalDate: 1 }, 'content.dismissalDate'],
		[{ event: 'end', contentState: {}, attributes: {} }, 'content.attributes'],
		[{ event: 'update', contentState: {}, timestamp: NOW }, 'content.timestamp'],
		[{ event: 'update', contentState: {}, staleDate: new Date(Number.NaN) }, 'content.staleDate'],
		[{ event: 'update', contentState: {}, relevanceScore: Number.POSITIVE_INFINITY }, 'content.relevanceScore'],
		[{ event: 'update', contentState: {}, alert: { title: 'x' } }, 'content.alert.body'],
		[{ event: 'update', contentState: {}, alert: { title: 'x', body: 'y', badge: 1 } }, 'content.alert.badge'],
		[{ ...start, alert: undefined }, 'content.alert'],
		[{ ...start, attributesType: '' }, 'content.attributesType'],
		[{ ...start, inputPushChannel: 'not a channel!' }, 'content.inputPushChannel'],
		[{ ...start, inputPushToken: 1 }, 'content.inputPushToken'],
		[{ ...start, inputPushChannel: 'QUJD', inputPushToken: true }, 'content.inputPushToken'],
	];
	for (const [content, field] of cases) {
		assert.throws(() => liveActivityAps(content as LiveActivityContent, NOW), (e: unknown) => e instanceof InvalidArgumentError && e.argument === field, `${JSON.stringify(content)} → ${field}`);
	}
});

test('push-to-start: sendAps(liveActivityAps({ event: "start" }), { pushType: "liveactivity" }) reaches the mock with the liveactivity topic and the keys as built', async (t) => {
	const mock = await liveMock(t);
	const apns = liveManager(t, mock);
	const tokens = makeTokens(3, 0x11);
	const aps = liveActivityAps({ event: 'start', contentState: { score: '0-0' }, attributesType: 'MatchAttributes', attributes: { home: 'A' }, alert: ALERT, inputPushToken: true }, NOW);
	const result = await apns.sendAps(tokens, aps, { pushType: 'liveactivity', priority: 10 }).settled;
	assert.deepEqual([result.sent.length, result.failed], [3, []]);
	assert.deepEqual(mock.received.map((r) => [r.token, r.topic, r.pushType, r.priority]), tokens.map((tk) => [tk, `${TOPIC}.push-type.liveactivity`, 'liveactivity', '10']));
	assert.deepEqual(JSON.parse(mock.received[0]!.payload), { aps });
});
