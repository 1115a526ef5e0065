/**
 * The daemon's store and app rules without the process around them: retention, cursors that survive
 * deletes, shared provider tokens, sealed secrets.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { test } from 'node:test';
import { DAEMON_MAX_ATTEMPTS, managerOptions, SharedTokens } from '../src/server/apps.js';
import { SecretBox } from '../src/server/secrets.js';
import { Store } from '../src/server/store.js';
import { dataDir } from './support/daemon.js';

const HOUR = 3_600_000;
const token = (i: number): Buffer => Buffer.alloc(32, i);

test('store: prune drops settled notifications (and their failures) older than the retention, keeps unsettled ones and newer ones', (t) => {
	const store = new Store(dataDir(t));
	t.after(() => store.close());
	const { app } = store.putApp('a', '{}', undefined, 0);
	store.accept(app.num, [{ id: 'old-settled', body: '{}', tokens: [token(1), token(2)] }], 1 * HOUR);
	store.accept(app.num, [{ id: 'old-pending', body: '{}', tokens: [token(3)] }], 1 * HOUR);
	store.accept(app.num, [{ id: 'new-settled', body: '{}', tokens: [token(4)] }], 10 * HOUR);
	const rows = store.claim(app.num, 0, 10);
	assert.equal(rows.length, 4);
	const num = (id: string): number => rows.find((r) => store.notificationBody(r.notification)?.id === id)!.notification;
	store.settle({
		seqs: [rows[0]!.seq, rows[1]!.seq, rows[3]!.seq],
		counts: new Map([[num('old-settled'), { sent: 1, failed: 1 }], [num('new-settled'), { sent: 1, failed: 0 }]]),
		failures: [{ notification: num('old-settled'), token: token(2).toString('hex'), status: 400, reason: 'BadDeviceToken' }],
		feedback: [],
	});
	assert.equal(store.prune(5 * HOUR), 1, 'one notification pruned');
	assert.equal(store.status(app.num, 'old-settled'), undefined);
	assert.deepEqual(store.status(app.num, 'old-pending')?.total, 1, 'unsettled: kept whatever its age');
	assert.deepEqual(store.status(app.num, 'new-settled')?.sent, 1);
	assert.equal(store.pendingCount(app.num), 1);
});

test('store: unread feedback is pruned by when it was stored, not by when APNs says the token went', (t) => {
	const store = new Store(dataDir(t));
	t.after(() => store.close());
	const { app } = store.putApp('a', '{}', undefined, 0);
	store.settle({ seqs: [], counts: new Map(), failures: [], feedback: [{ app: app.num, token: 'aa', when: 0, reason: 'Unregistered' }] });
	store.prune(Date.now() - HOUR);
	assert.deepEqual(store.feedback(app.num, 0, 10, false).map((r) => r.token), ['aa'], 'kept: stored just now, however old its news');
	store.prune(Date.now() + HOUR);
	assert.deepEqual(store.feedback(app.num, 0, 10, false), [], 'past the retention');
});

test('store: feedback its webhook has not yet received is kept past the retention; once received, it is pruned', (t) => {
	const store = new Store(dataDir(t));
	t.after(() => store.close());
	const { app } = store.putApp('hooked', '{}', undefined, 0);
	const record = (tk: string) => store.settle({ seqs: [], counts: new Map(), failures: [], feedback: [{ app: app.num, token: tk, when: 0, reason: 'Unregistered' }] });
	record('aa');
	record('bb');
	const [first] = store.webhookBatch(app.num, 1);
	store.webhookDelivered(app.num, first!.seq);
	store.prune(Date.now() + HOUR, [app.num]);
	assert.deepEqual(store.webhookBatch(app.num, 10).map((r) => r.token), ['bb'], 'the undelivered one is kept');
	assert.deepEqual(store.feedback(app.num, 0, 10, true).map((r) => r.token), ['bb'], 'the delivered one is gone');
});

test('store: pending and feedback numbers are never reused, so a cursor stays valid when the rows before it are gone', (t) => {
	const store = new Store(dataDir(t));
	t.after(() => store.close());
	const { app } = store.putApp('a', '{}', undefined, 0);
	store.accept(app.num, [{ id: 'n1', body: '{}', tokens: [token(1)] }], 0);
	const [first] = store.claim(app.num, 0, 10);
	store.settle({ seqs: [first!.seq], counts: new Map(), failures: [], feedback: [{ app: app.num, token: 'aa', when: 0, reason: 'Unregistered' }] });
	store.accept(app.num, [{ id: 'n2', body: '{}', tokens: [token(2)] }], 0);
	const next = store.claim(app.num, first!.seq, 10);
	assert.equal(next.length, 1, 'the new row is after the cursor');
	const [fb] = store.feedback(app.num, 0, 10, false);
	store.feedback(app.num, fb!.seq, 10, false);
	store.settle({ seqs: [], counts: new Map(), failures: [], feedback: [{ app: app.num, token: 'bb', when: 0, reason: 'Unregistered' }] });
	assert.deepEqual(store.feedback(app.num, fb!.seq, 10, false).map((r) => r.token), ['bb']);
});

test('apps: a daemon manager retries "try again" answers for minutes, not seconds, before it records a failure', () => {
	const settings = { environment: 'production' as const, topic: 'a.b', auth: 'certificate' as const, keyId: undefined, teamId: undefined, gateway: undefined, ca: undefined, webhook: undefined };
	const options = managerOptions(settings, {}, new SharedTokens());
	assert.equal(options.maxAttempts, DAEMON_MAX_ATTEMPTS);
	assert.ok(DAEMON_MAX_ATTEMPTS > 5, 'more than the library default');
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

test('store: notification and app numbers are never reused (a cached body or a late outcome cannot reach a newer row)', (t) => {
	const store = new Store(dataDir(t));
	t.after(() => store.close());
	const first = store.putApp('a', '{}', undefined, 0).app;
	store.accept(first.num, [{ id: 'n1', body: '{"v":1}', tokens: [token(1)] }], 0);
	const [row] = store.claim(first.num, 0, 10);
	store.settle({ seqs: [row!.seq], counts: new Map([[row!.notification, { sent: 1, failed: 0 }]]), failures: [], feedback: [] });
	store.prune(HOUR);
	store.accept(first.num, [{ id: 'n2', body: '{"v":2}', tokens: [token(2)] }], 2 * HOUR);
	const [next] = store.claim(first.num, row!.seq, 10);
	assert.notEqual(next!.notification, row!.notification);
	store.deleteApp(first);
	assert.notEqual(store.putApp('b', '{}', undefined, 0).app.num, first.num);
});
