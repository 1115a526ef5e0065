/**
 * The daemon's app rules without the process around them: shared provider tokens, sealed secrets, signed
 * webhooks. (What every store does is in store-conformance.test.ts.)
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { DAEMON_MAX_ATTEMPTS, managerOptions, SharedTokens } from '../src/server/apps.js';
import { SecretBox } from '../src/server/secrets.js';
import { signature } from '../src/server/webhook.js';
import { verified } from '../examples/verify-webhook.js';

test('apps: a daemon manager makes short rounds of attempts (the engine retries "not now" answers round after round, until the deadline)', () => {
	const settings = { environment: 'production' as const, topic: 'a.b', auth: 'certificate' as const, keyId: undefined, teamId: undefined, gateway: undefined, ca: undefined, webhook: undefined };
	const options = managerOptions(settings, {}, new SharedTokens());
	assert.equal(options.maxAttempts, DAEMON_MAX_ATTEMPTS);
	assert.equal(DAEMON_MAX_ATTEMPTS, 3);
	assert.equal(options.maxFeedbackRecords, 0, 'the daemon stores 410s from receipts; its managers keep none in memory');
});

test('apps: one provider token per team key, shared by the apps that use it', () => {
	const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
	const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
	const tokens = new SharedTokens();
	const a = tokens.get(key, 'KEY1234567', 'TEAM123456');
	assert.equal(tokens.get(key, 'KEY1234567', 'TEAM123456'), a);
	assert.notEqual(tokens.get(other, 'KEY1234567', 'TEAM123456'), a, 'another key');
	assert.notEqual(tokens.get(key, 'KEY1234567', 'TEAM654321'), a, 'another team');
});

test('secrets: sealed values open only with the same secret and for the same app; plaintext only when asked for', () => {
	const salt = Buffer.alloc(16, 7);
	const box = SecretBox.fromSecret('a-secret-of-enough-length', salt);
	const sealed = box.seal('-----BEGIN PRIVATE KEY-----', 'app1');
	assert.ok(!sealed.includes('PRIVATE'));
	assert.equal(box.open(sealed, 'app1'), '-----BEGIN PRIVATE KEY-----');
	assert.throws(() => box.open(sealed, 'app2'), { code: 'APNS_SERVER_SECRET' });
	assert.throws(() => SecretBox.fromSecret('another-secret-of-length', salt).open(sealed, 'app1'), { code: 'APNS_SERVER_SECRET' });
	assert.throws(() => SecretBox.insecure().open(sealed, 'app1'), { code: 'APNS_SERVER_SECRET' });
	assert.throws(() => SecretBox.fromSecret('short', salt), { code: 'APNS_SERVER_CONFIG' });
	assert.ok(box.verify(box.check()));
	assert.ok(!SecretBox.fromSecret('another-secret-of-length', salt).verify(box.check()));
	// Stored while insecure: readable by the SQLite daemon, refused where everything must be sealed (Redis).
	const plain = SecretBox.insecure().seal('-----BEGIN PRIVATE KEY-----', 'app1');
	assert.equal(box.open(plain, 'app1'), '-----BEGIN PRIVATE KEY-----');
	assert.throws(() => SecretBox.fromSecret('a-secret-of-enough-length', salt, { plainAllowed: false }).open(plain, 'app1'), { code: 'APNS_SERVER_SECRET' });
});

test('webhooks: a delivery\'s signature (t=…,v1=HMAC-SHA256(secret, "t.body")) passes the receiver\'s check (examples/verify-webhook.ts); another secret, a changed body, an old one or none does not', () => {
	const secret = 'webhook-secret-0123456789abcdefghij';
	const body = JSON.stringify({ app: 'shop', feedback: [{ seq: 1, token: 'ab'.repeat(32), when: '2026-01-01T00:00:00.000Z', reason: 'Unregistered' }] });
	const now = Math.floor(Date.now() / 1000);
	assert.ok(verified(secret, signature(secret, now, body), body));
	assert.ok(!verified(`${secret}x`, signature(secret, now, body), body), 'another secret');
	assert.ok(!verified(secret, signature(secret, now, body), body.replace('shop', 'shoq')), 'a changed body');
	assert.ok(!verified(secret, signature(secret, now - 600, body), body), 'ten minutes old: a replay');
	assert.ok(!verified(secret, undefined, body), 'no header');
	assert.ok(!verified(secret, `t=${now},v1=zz`, body), 'not hex');
});
