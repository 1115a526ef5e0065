/**
 * A data directory and a Redis keyspace outlive the version that wrote them: each store keeps a schema
 * version, migrates what an earlier version wrote when it opens (every earlier version, one step at a
 * time), and refuses what a newer one wrote, saying so.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { test } from 'node:test';
import Database from 'better-sqlite3';
import { Redis } from 'ioredis';
import pino from 'pino';
import { Engine } from '../src/server/engine.js';
import { SecretBox } from '../src/server/secrets.js';
import { KEYSPACE_VERSION, RedisStore } from '../src/server/stores/redis.js';
import { SCHEMA_VERSION, SqliteStore } from '../src/server/stores/sqlite.js';
import { dataDir, P8, SECRET, TOPIC } from './support/daemon.js';
import { REDIS_MISSING, startRedis } from './support/redis.js';

const silent = pino({ level: 'silent' });

/** The tables of the file the first release wrote (no user_version), as it wrote them. */
const V0_SCHEMA = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE apps (num INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, settings TEXT NOT NULL, sealed TEXT, dispatched INTEGER NOT NULL DEFAULT 0, webhook_cursor INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE notifications (num INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, app INTEGER NOT NULL, body TEXT NOT NULL, total INTEGER NOT NULL, sent INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL);
CREATE TABLE pending (seq INTEGER PRIMARY KEY AUTOINCREMENT, app INTEGER NOT NULL, notification INTEGER NOT NULL, token BLOB NOT NULL);
CREATE TABLE failures (notification INTEGER NOT NULL, token TEXT NOT NULL, status INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE feedback (seq INTEGER PRIMARY KEY AUTOINCREMENT, app INTEGER NOT NULL, token TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT NOT NULL, stored_at INTEGER NOT NULL);
CREATE TABLE idempotency (app INTEGER NOT NULL, key TEXT NOT NULL, response TEXT NOT NULL, created_at INTEGER NOT NULL, PRIMARY KEY (app, key));
`;

test(`sqlite: a file from before versions were kept is migrated to version ${SCHEMA_VERSION}, its apps and pending work intact`, async (t) => {
	const dir = dataDir(t);
	const old = new Database(join(dir, 'apns-worker.db'));
	old.exec(V0_SCHEMA);
	old.prepare("INSERT INTO apps (id, settings, created_at, updated_at) VALUES ('a', '{}', 1, 1)").run();
	old.prepare("INSERT INTO notifications (id, app, body, total, created_at) VALUES ('n1', 1, ?, 2, 1)").run(JSON.stringify({ payload: { aps: {} }, options: {} }));
	for (const b of [1, 2]) old.prepare('INSERT INTO pending (app, notification, token) VALUES (1, 1, ?)').run(Buffer.alloc(32, b));
	// Feedback its readers were handed cursors for (reading then deleted what it passed).
	for (const tk of ['a', 'b']) old.prepare("INSERT INTO feedback (app, token, at, reason, stored_at) VALUES (1, ?, 1, 'Unregistered', 1)").run(tk.repeat(64));
	old.close();
	const store = new SqliteStore(dir);
	t.after(() => store.close());
	const app = await store.getApp('a');
	assert.deepEqual(await store.pending([app!]), [2]);
	assert.deepEqual((await store.status(app!, 'n1'))?.total, 2);
	// 1 → 2: a cursor a reader of the earlier version holds can be acknowledged; one past it cannot.
	assert.equal(await store.feedbackAck(app!, 3, false), false);
	assert.equal(await store.feedbackAck(app!, 2, false), true);
	assert.deepEqual(await store.feedback(app!, 0, 10), []);
	await store.close();
	const check = new Database(join(dir, 'apns-worker.db'));
	assert.equal(check.pragma('user_version', { simple: true }), SCHEMA_VERSION);
	check.close();
});

test('sqlite: a new file starts at the current version; a file written by a newer version is refused, saying so', (t) => {
	const dir = dataDir(t);
	new SqliteStore(dir).close();
	const db = new Database(join(dir, 'apns-worker.db'));
	assert.equal(db.pragma('user_version', { simple: true }), SCHEMA_VERSION);
	db.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
	db.close();
	assert.throws(() => new SqliteStore(dir), { code: 'APNS_SERVER_CONFIG', message: new RegExp(`written by a newer apns-worker \\(schema version ${SCHEMA_VERSION + 1}; this one knows up to ${SCHEMA_VERSION}\\)`) });
});

test(`redis: a keyspace from before versions were kept (version 1) is migrated to ${KEYSPACE_VERSION}, by one of two daemons opening it at once; the apps' credentials still open with the deployment's secret`, { skip: REDIS_MISSING }, async (t) => {
	const r = await startRedis();
	t.after(() => r.close());
	const client = new Redis(r.url);
	t.after(() => client.disconnect());
	// What version 1 wrote: the salt as a UUID (its text was the salt), a check value, an app sealed under them.
	const salt = randomUUID();
	const box = SecretBox.fromSecret(SECRET, Buffer.from(salt), { plainAllowed: false });
	await client.hset('aw:meta', 'secret-salt', salt, 'secret-check', box.check());
	const settings = { environment: 'production', topic: TOPIC, auth: 'token', keyId: P8.keyId, teamId: P8.teamId, gateway: { host: '127.0.0.1', port: 9 }, ca: undefined, webhook: undefined, certificate: undefined };
	const gen = randomUUID();
	await client.hset('aw:apps', 'old', JSON.stringify({ id: 'old', gen, settings: JSON.stringify(settings), sealed: box.seal(JSON.stringify({ tokenKey: P8.key }), 'old'), createdAt: '1', updatedAt: '1' }));
	await client.hset('aw:fbseq', gen, 7);
	const [a, b] = await Promise.all([0, 1].map(() => RedisStore.open({ url: r.url, retentionMs: 3_600_000, lockMs: 30_000, logger: silent })));
	t.after(() => Promise.all([a!.close(), b!.close()]));
	assert.equal(await client.get('aw:version'), String(KEYSPACE_VERSION));
	assert.equal(await client.hget('aw:meta', 'secret-salt'), Buffer.from(salt).toString('base64'), 'converted once');
	assert.equal(await client.hget('aw:fbsrv', gen), '7', '2 → 3: cursors handed out before can be acknowledged');
	const engine = await Engine.open({ store: a!, apiKey: 'k'.repeat(16), secret: SECRET, logger: silent, shutdownTimeoutMs: 0 });
	t.after(() => engine.close());
	const view = await engine.getApp('old');
	assert.equal(view['state'], 'sending', 'its credentials opened');
});

test('redis: an empty keyspace starts at the current version; one written by a newer version is refused, saying so', { skip: REDIS_MISSING }, async (t) => {
	const r = await startRedis();
	t.after(() => r.close());
	const store = await RedisStore.open({ url: r.url, retentionMs: 3_600_000, lockMs: 30_000, logger: silent });
	await store.close();
	const client = new Redis(r.url);
	t.after(() => client.disconnect());
	assert.equal(await client.get('aw:version'), String(KEYSPACE_VERSION));
	await client.set('aw:version', KEYSPACE_VERSION + 1);
	await assert.rejects(RedisStore.open({ url: r.url, retentionMs: 3_600_000, lockMs: 30_000, logger: silent }), { code: 'APNS_SERVER_CONFIG', message: new RegExp(`written by a newer apns-worker \\(keyspace version ${KEYSPACE_VERSION + 1}; this one knows up to ${KEYSPACE_VERSION}\\)`) });
});
