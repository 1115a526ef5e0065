/**
 * The store several daemons share (`apns-worker serve --redis URL`): apps, notification outcomes, per-job
 * progress, pending counts, feedback and idempotency answers live in Redis, and notifications travel as
 * BullMQ jobs of up to {@link UNIT_TOKENS} tokens on the queue `aw-send`, which every daemon works with
 * one BullMQ Worker. A job is a unit of work (../store.ts); its lock is the lease: a daemon that dies
 * (`kill -9`) stops renewing it, and after `lockMs` BullMQ's stalled-job check hands the job to another
 * daemon, which sends only the tokens whose outcome was not recorded. A PUT or DELETE through any daemon is
 * published on `aw:apps:changed`, and every daemon loads the app again; a daemon whose subscription was cut
 * loads them all when it is back. While Redis is unreachable the API answers 503 (nothing is accepted that
 * is not stored), ioredis reconnects with capped backoff, and outcomes wait in memory to be recorded.
 * Every key starts with `aw:`.
 *
 * | key | type | holds |
 * |---|---|---|
 * | `aw:meta` | hash | the secret's salt and check value |
 * | `aw:apps` | hash | app id → JSON of the app ({@link StoredApp}); changes are published on `aw:apps:changed` |
 * | `aw:pending` | hash | app incarnation → notifications accepted and not yet settled |
 * | `aw:n:{gen}:{id}` | hash | a notification's `total`, `sent`, `failed` |
 * | `aw:nf:{gen}:{id}` | list | its failures, JSON |
 * | `aw:p:{jobId}` | string | a job's progress: one bit per token, set once its outcome is recorded |
 * | `aw:fb:{gen}` | stream | the app's feedback, entry ids `0-{seq}` (seq is the API's cursor) |
 * | `aw:fbseq`, `aw:whc`, `aw:fbsrv` | hash | per incarnation: the last feedback seq; the webhook's cursor; how far the API handed feedback out (acknowledgements stop there) |
 * | `aw:whl:{gen}` | string | which daemon delivers the app's webhook now (expires in 30 s unless extended) |
 * | `aw:idem:{gen}:{key}` | string | the answer to a request with that Idempotency-Key (expires with the retention) |
 * | `aw:old:{gen}` | sorted set | the app's unsettled notifications (their hash keys) by when they were accepted (ms): the oldest pending's age |
 * | `aw:keys`, `aw:keyhash` | hash | scoped API keys: id → JSON (with the key's SHA-256, never the key); SHA-256 → id |
 * | `aw:wait:{app}` | set | ids of the app's jobs delayed because it could not send (promoted when a PUT starts it; expires in 10 min) |
 *
 * A notification's keys and its jobs' progress are kept while it is unsettled (each settlement and
 * each run of a job pushes their expiry 30 days away), and expire with the retention once settled (a
 * finished job's progress after an hour, unless its id came from an Idempotency-Key); a job dropped
 * because its app is gone deletes them.
 *
 * An app's `gen` is a random id made when it is created: a deleted app's leftovers (jobs in the queue,
 * outcomes) can never reach an app created later under the same id.
 *
 * Outcomes and progress are recorded by one script ({@link SETTLE}) so that they are atomic together:
 * a token whose bit is already set is not counted again — a job run twice (taken over from a daemon
 * that looked dead and was not) records each token's outcome once.
 */
import { createHash, randomUUID } from 'node:crypto';
import { DelayedError, Job, Queue, Worker } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { backoffDelay } from '../../drivers/backoff.js';
import { ServerError } from '../../errors.js';
import type { StoredBody } from '../service.js';
import { UNIT_TOKENS, type Accepted, type Idempotency, type StoredKey, type FeedbackRecord, type NewNotification, type NotificationCounts, type PushStore, type Settled, type StoreEvents, type StoredApp, type TokenFailure, type WorkHandler, type WorkSource, type WorkUnit } from '../store.js';

/** A job, as the store records its progress. */
export interface RedisJobRef {
	readonly id: string;
	readonly app: string;
	readonly gen: string;
	readonly notification: string;
	/** Tokens in the job. */
	readonly count: number;
	/** Its id was made from an Idempotency-Key (a retried request adds it again). */
	readonly keyed: boolean;
}

export const APPS_CHANNEL = 'aw:apps:changed';
/** How long a daemon's turn to deliver an app's webhook lasts unless extended (a daemon that dies gives it up so). */
const WEBHOOK_TURN_MS = 30_000;
/**
 * How long (s) a notification's state lives without news: 30 days. Refreshed by every settlement and
 * every run of one of its jobs (a stopped app's jobs run at least once a minute), so only state that no
 * job will ever touch again lapses: a queue emptied by hand, a request that failed after its jobs were
 * added and was never retried.
 */
const UNSETTLED_S = 30 * 24 * 3600;
/** How long (s) a finished job's progress is kept when its id cannot come back (no Idempotency-Key): long enough for a zombie run's late flush. */
const DONE_PROGRESS_S = 3600;

/**
 * Record a job's outcomes and progress at once. KEYS: progress, notification hash, failures list, pending
 * hash, feedback stream, feedback seq hash, apps hash. ARGV: gen, tokens in the job, retention (s), now
 * (ms), bitmap of the tokens delivered, number of failures, how long unsettled state is kept (s), app id,
 * how long the progress of a finished job is kept (s), then per failure: index, failure JSON, feedback
 * token ('' for none), when (ms), reason. Returns {newly delivered, feedback records added, then the
 * position (from 0) of each failure newly recorded}.
 *
 * Nothing is recorded for an incarnation that is gone (its app deleted, or deleted and made again):
 * DELETE_APP removed its counts and feedback, and a late flush (a run that lost its lock, outcomes
 * retried while Redis was away) must not bring them back.
 *
 * A notification's keys expire with the retention once all its tokens are settled, a job's progress once
 * all its tokens are (kept for the retention only when the job id can come back); until then each
 * settlement pushes their expiry {@link UNSETTLED_S} away.
 */
const SETTLE = `
local live = redis.call('HGET', KEYS[7], ARGV[8])
if not live or cjson.decode(live).gen ~= ARGV[1] then return {0, 0} end
local count = tonumber(ARGV[2])
local nbytes = math.floor((count + 7) / 8)
local old = redis.call('GET', KEYS[1]) or ''
local sent = ARGV[5]
local bytes = {}
local newSent = 0
for i = 1, nbytes do
	local o = string.byte(old, i) or 0
	local s = string.byte(sent, i) or 0
	local fresh = bit.band(s, bit.bnot(o))
	while fresh ~= 0 do fresh = bit.band(fresh, fresh - 1); newSent = newSent + 1 end
	bytes[i] = bit.bor(o, s)
end
local newFailed = 0
local feedback = 0
local fresh = {}
for k = 0, tonumber(ARGV[6]) - 1 do
	local a = 10 + k * 5
	local index = tonumber(ARGV[a])
	local at = math.floor(index / 8) + 1
	local mask = bit.lshift(1, index % 8)
	if bit.band(bytes[at], mask) == 0 then
		bytes[at] = bit.bor(bytes[at], mask)
		newFailed = newFailed + 1
		fresh[newFailed] = k
		redis.call('RPUSH', KEYS[3], ARGV[a + 1])
		if ARGV[a + 2] ~= '' then
			local seq = redis.call('HINCRBY', KEYS[6], ARGV[1], 1)
			redis.call('XADD', KEYS[5], '0-' .. seq, 't', ARGV[a + 2], 'w', ARGV[a + 3], 'r', ARGV[a + 4], 's', ARGV[4])
			feedback = feedback + 1
		end
	end
end
if newSent + newFailed > 0 then
	if newSent > 0 then redis.call('HINCRBY', KEYS[2], 'sent', newSent) end
	if newFailed > 0 then redis.call('HINCRBY', KEYS[2], 'failed', newFailed) end
	local c = redis.call('HMGET', KEYS[2], 'total', 'sent', 'failed')
	local ttl = ARGV[7]
	if c[1] then
		-- Counted as pending once its acceptance is recorded (ACCEPT subtracts what settled before it).
		redis.call('HINCRBY', KEYS[4], ARGV[1], -(newSent + newFailed))
		if tonumber(c[2] or '0') + tonumber(c[3] or '0') >= tonumber(c[1]) then
			ttl = ARGV[3]
			redis.call('ZREM', 'aw:old:' .. ARGV[1], KEYS[2])
		end
	end
	redis.call('EXPIRE', KEYS[2], ttl)
	redis.call('EXPIRE', KEYS[3], ttl)
end
local done = 0
for i = 1, nbytes do
	local c = bytes[i]
	while c ~= 0 do c = bit.band(c, c - 1); done = done + 1 end
end
-- Kept a while after the last token (not deleted): a second run of the job must still see every bit.
if done >= count then
	redis.call('SET', KEYS[1], string.char(unpack(bytes)), 'EX', ARGV[9])
else
	redis.call('SET', KEYS[1], string.char(unpack(bytes)), 'EX', ARGV[7])
end
return {newSent, feedback, unpack(fresh)}
`;

/**
 * Record accepted notifications (after their jobs were added). KEYS: pending hash, apps hash, then per
 * notification its hash and its failures list; ARGV: gen, retention (s), app id, unsettled period (s),
 * now (ms), then one total each. An unsettled notification joins `aw:old:{gen}` (SETTLE takes it out).
 * Returns 0 (nothing recorded) when the app is no longer that incarnation: deleted, or deleted and made
 * again, since the request began — its jobs are then dropped by whoever takes them. A notification
 * recorded already (a retry with the same Idempotency-Key) is not counted again; one whose tokens
 * settled before this ran (its jobs were quick) is counted without them.
 */
const ACCEPT = `
local app = redis.call('HGET', KEYS[2], ARGV[3])
if not app or cjson.decode(app).gen ~= ARGV[1] then return 0 end
for k = 0, (#KEYS - 2) / 2 - 1 do
	local hash = KEYS[3 + 2 * k]
	local list = KEYS[4 + 2 * k]
	local total = tonumber(ARGV[6 + k])
	if redis.call('HSETNX', hash, 'total', total) == 1 then
		local counts = redis.call('HMGET', hash, 'sent', 'failed')
		local settled = tonumber(counts[1] or '0') + tonumber(counts[2] or '0')
		local ttl = ARGV[4]
		if settled >= total then ttl = ARGV[2] else redis.call('ZADD', 'aw:old:' .. ARGV[1], 'NX', ARGV[5], hash) end
		redis.call('EXPIRE', hash, ttl)
		redis.call('EXPIRE', list, ttl)
		redis.call('HINCRBY', KEYS[1], ARGV[1], total - settled)
	end
end
return 1
`;

/** Create or update an app. KEYS: apps; ARGV: id, settings, sealed ('' for none), now, fresh gen. Returns {json, created}. */
const PUT_APP = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
local gen = ARGV[5]
local created = ARGV[4]
local isNew = 1
if old then
	local app = cjson.decode(old)
	gen = app.gen
	created = app.createdAt
	isNew = 0
end
local app = { id = ARGV[1], gen = gen, settings = ARGV[2], createdAt = created, updatedAt = ARGV[4] }
if ARGV[3] ~= '' then app.sealed = ARGV[3] end
local json = cjson.encode(app)
redis.call('HSET', KEYS[1], ARGV[1], json)
redis.call('PUBLISH', '${APPS_CHANNEL}', ARGV[1])
return {json, isNew}
`;

/** Delete an app. KEYS: apps, pending, fbseq, webhook cursors; ARGV: id. Returns the pending count dropped (-1: no app). */
const DELETE_APP = `
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return -1 end
local gen = cjson.decode(old).gen
local dropped = tonumber(redis.call('HGET', KEYS[2], gen) or '0')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], gen)
redis.call('HDEL', KEYS[3], gen)
redis.call('HDEL', KEYS[4], gen)
redis.call('HDEL', KEYS[5], gen)
redis.call('DEL', 'aw:fb:' .. gen)
redis.call('DEL', 'aw:old:' .. gen)
-- Keys scoped to it go with it: an app made again under the id must not inherit them.
local keys = redis.call('HGETALL', 'aw:keys')
for i = 1, #keys, 2 do
	local k = cjson.decode(keys[i + 1])
	for _, a in ipairs(k.apps) do
		if a == ARGV[1] then
			redis.call('HDEL', 'aw:keys', keys[i])
			redis.call('HDEL', 'aw:keyhash', k.hash)
			break
		end
	end
end
redis.call('PUBLISH', '${APPS_CHANNEL}', ARGV[1])
return dropped
`;

type Scripted = Redis & {
	awSettle(...args: Array<string | number | Buffer>): Promise<number[]>;
	awPutApp(...args: Array<string | number>): Promise<[string, number]>;
	awDeleteApp(...args: Array<string | number>): Promise<number>;
	awAccept(numberOfKeys: number, ...args: Array<string | number>): Promise<number>;
};

/** The shared state's operations (one command, pipeline or script each). */
export class RedisData {
	readonly #r: Scripted;
	readonly #retentionS: number;
	/** How long outcomes of a notification whose acceptance is not recorded are kept. */
	readonly #unsettledS: number;

	constructor(client: Redis, retentionMs: number) {
		client.defineCommand('awSettle', { numberOfKeys: 7, lua: SETTLE });
		client.defineCommand('awPutApp', { numberOfKeys: 1, lua: PUT_APP });
		client.defineCommand('awDeleteApp', { numberOfKeys: 5, lua: DELETE_APP });
		client.defineCommand('awAccept', { lua: ACCEPT });
		this.#r = client as Scripted;
		this.#retentionS = Math.max(1, Math.ceil(retentionMs / 1000));
		this.#unsettledS = Math.max(this.#retentionS, UNSETTLED_S);
	}

	/** `field` of `aw:meta`, set to `value` first if it has none (the first daemon's value wins). */
	async metaOnce(field: string, value: () => string): Promise<string> {
		const existing = await this.#r.hget('aw:meta', field);
		if (existing !== null) return existing;
		await this.#r.hsetnx('aw:meta', field, value());
		return (await this.#r.hget('aw:meta', field))!;
	}

	async getMeta(field: string): Promise<string | undefined> {
		return (await this.#r.hget('aw:meta', field)) ?? undefined;
	}

	async getApp(id: string): Promise<StoredApp | undefined> {
		const json = await this.#r.hget('aw:apps', id);
		return json === null ? undefined : toApp(json);
	}

	async putKey(key: StoredKey): Promise<void> {
		await exec(this.#r.multi().hset('aw:keys', key.id, JSON.stringify(key)).hset('aw:keyhash', key.hash, key.id));
	}

	async keyByHash(hash: string): Promise<StoredKey | undefined> {
		const id = await this.#r.hget('aw:keyhash', hash);
		const json = id === null ? null : await this.#r.hget('aw:keys', id);
		return json === null ? undefined : (JSON.parse(json) as StoredKey);
	}

	async keys(): Promise<StoredKey[]> {
		return Object.values(await this.#r.hgetall('aw:keys'))
			.map((json) => JSON.parse(json) as StoredKey)
			.sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : 1));
	}

	/** Delete a key and its hash's entry at once. */
	async deleteKey(id: string): Promise<boolean> {
		const script = "local k = redis.call('HGET', KEYS[1], ARGV[1]) if not k then return 0 end redis.call('HDEL', KEYS[2], cjson.decode(k).hash) redis.call('HDEL', KEYS[1], ARGV[1]) return 1";
		return (await this.#r.eval(script, 2, 'aw:keys', 'aw:keyhash', id)) === 1;
	}

	/**
	 * Replace apps' sealed credentials (each only if it still holds `before`) and `aw:meta` fields in one
	 * MULTI, watched: false when an app or the settings changed meanwhile. Every daemon is told.
	 */
	async reseal(apps: ReadonlyArray<{ readonly id: string; readonly before: string; readonly after: string }>, meta: Readonly<Record<string, string>>, now: number): Promise<boolean> {
		// A connection of its own: WATCH holds for the connection, and the shared one carries other commands.
		const c = this.#r.duplicate({ lazyConnect: true });
		try {
			// Commands wait for nothing on these connections (no offline queue): connected first, bounded.
			let timer: NodeJS.Timeout | undefined;
			await Promise.race([c.connect(), new Promise((_resolve, reject) => (timer = setTimeout(() => reject(new Error(`Redis did not answer a new connection in ${RESEAL_CONNECT_MS / 1000} s`)), RESEAL_CONNECT_MS)))]).finally(() => clearTimeout(timer));
			await c.watch('aw:apps', 'aw:meta');
			const current = apps.length === 0 ? [] : await c.hmget('aw:apps', ...apps.map((a) => a.id));
			const m = c.multi();
			for (let i = 0; i < apps.length; i++) {
				const json = current[i];
				const a = JSON.parse(json ?? 'null') as { sealed?: string; updatedAt: string } | null;
				if (a === null || a.sealed !== apps[i]!.before) {
					await c.unwatch();
					return false;
				}
				m.hset('aw:apps', apps[i]!.id, JSON.stringify({ ...a, sealed: apps[i]!.after, updatedAt: String(now) }));
			}
			for (const [field, value] of Object.entries(meta)) m.hset('aw:meta', field, value);
			for (const a of apps) m.publish(APPS_CHANNEL, a.id);
			return (await m.exec()) !== null;
		} finally {
			c.disconnect();
		}
	}

	/** The ids of every app (each is read in its own load, in turn: see redis-daemon.ts). */
	async appIds(): Promise<string[]> {
		return this.#r.hkeys('aw:apps');
	}

	/** Create or update an app (its gen kept), and tell every daemon. */
	async putApp(id: string, settings: string, sealed: string | undefined, now: number): Promise<{ app: StoredApp; created: boolean }> {
		const [json, created] = await this.#r.awPutApp('aw:apps', id, settings, sealed ?? '', now, randomUUID());
		return { app: toApp(json), created: created === 1 };
	}

	/** Delete an app and what it had (its notifications' outcomes go as its jobs are dropped); the pending count dropped, or undefined when there was no app. */
	async deleteApp(id: string): Promise<number | undefined> {
		const dropped = await this.#r.awDeleteApp('aw:apps', 'aw:pending', 'aw:fbseq', 'aw:whc', 'aw:fbsrv', id);
		return dropped < 0 ? undefined : dropped;
	}

	/**
	 * Record accepted notifications, once their jobs are in the queue: their totals, and the app's pending
	 * count. Recording the same notification again changes nothing; if this fails, the client retries.
	 * False, with nothing recorded, when app `app` is no longer incarnation `gen`.
	 */
	async accepted(app: string, gen: string, notifications: ReadonlyArray<{ id: string; total: number }>): Promise<boolean> {
		const keys = notifications.flatMap((n) => notificationKeys(gen, n.id));
		return (await this.#r.awAccept(keys.length + 2, 'aw:pending', 'aw:apps', ...keys, gen, this.#retentionS, app, this.#unsettledS, Date.now(), ...notifications.map((n) => n.total))) === 1;
	}

	/** The answer given to an earlier request with this Idempotency-Key. */
	async idempotent(gen: string, key: string): Promise<string | undefined> {
		return (await this.#r.get(`aw:idem:${gen}:${key}`)) ?? undefined;
	}

	/** Remember the answer to an Idempotency-Key; the answer that is kept (an earlier one wins), and whether it is this one. */
	async remember(gen: string, key: string, response: string): Promise<{ kept: string; first: boolean }> {
		const k = `aw:idem:${gen}:${key}`;
		const [set, kept] = await exec(this.#r.pipeline().set(k, response, 'EX', this.#retentionS, 'NX').get(k));
		return set === 'OK' ? { kept: response, first: true } : { kept: (kept as string | null) ?? response, first: false };
	}

	async pending(gens: readonly string[]): Promise<number[]> {
		if (gens.length === 0) return [];
		return (await this.#r.hmget('aw:pending', ...gens)).map((v) => Math.max(0, Number(v ?? 0)));
	}

	/**
	 * When each incarnation's oldest unsettled notification was accepted (ms), or undefined when none is.
	 * An entry whose notification's state expired unsettled (30 days without news) is dropped on the way.
	 */
	async oldestPending(gens: readonly string[]): Promise<Array<number | undefined>> {
		return Promise.all(
			gens.map(async (gen) => {
				for (let i = 0; i < 100; i++) {
					const [member, score] = await this.#r.zrange(`aw:old:${gen}`, '0', '0', 'WITHSCORES');
					if (member === undefined) return undefined;
					if ((await this.#r.exists(member)) === 1) return Number(score);
					await this.#r.zrem(`aw:old:${gen}`, member);
				}
				return undefined;
			}),
		);
	}

	async status(gen: string, id: string): Promise<{ total: number; sent: number; failed: number; failures: Array<{ token: string; status: number; reason: string }> } | undefined> {
		const [countsKey, failuresKey] = notificationKeys(gen, id);
		const [counts, failures] = await exec(this.#r.pipeline().hmget(countsKey, 'total', 'sent', 'failed').lrange(failuresKey, 0, -1));
		const [total, sent, failed] = counts as Array<string | null>;
		if (total === null || total === undefined) return undefined;
		return { total: Number(total), sent: Number(sent ?? 0), failed: Number(failed ?? 0), failures: (failures as string[]).map((f) => JSON.parse(f) as { token: string; status: number; reason: string }) };
	}

	/** A job's progress bitmap (undefined before its first settlement). */
	async progress(jobId: string): Promise<Buffer | undefined> {
		return (await this.#r.getBuffer(progressKey(jobId))) ?? undefined;
	}

	/** A job of a notification ran (and cannot send yet): its state is kept another {@link UNSETTLED_S}. */
	/** Job `id` of app `app` waits out a delay because its app cannot send (see {@link RedisStore} resume). */
	async waiting(app: string, id: string): Promise<void> {
		await exec(this.#r.pipeline().sadd(`aw:wait:${app}`, id).expire(`aw:wait:${app}`, WAITING_S));
	}

	/** The jobs of `app` that wait out such a delay, forgotten as they are read. */
	async takeWaiting(app: string): Promise<string[]> {
		const [ids] = await exec(this.#r.multi().smembers(`aw:wait:${app}`).del(`aw:wait:${app}`));
		return ids as string[];
	}

	async touchJob(job: JobKeyed): Promise<void> {
		const p = this.#r.pipeline();
		for (const key of jobKeys(job)) p.expire(key, this.#unsettledS);
		await exec(p);
	}

	/** Forget a job dropped with its app (deleted, or made again): its progress and its notification's outcomes. */
	async forgetJob(job: JobKeyed): Promise<void> {
		await this.#r.del(...jobKeys(job));
	}

	/** Record outcomes of a job's tokens; what was newly recorded (a token already recorded is not counted again). */
	async settle(job: RedisJobRef, sent: Uint8Array, failures: readonly TokenFailure[], now: number): Promise<Settled> {
		const args: Array<string | number | Buffer> = [...jobKeys(job), 'aw:pending', `aw:fb:${job.gen}`, 'aw:fbseq', 'aw:apps'];
		// A job id made from an Idempotency-Key comes back when the request is retried: its progress must outlive that.
		const doneS = job.keyed ? this.#retentionS : Math.min(this.#retentionS, DONE_PROGRESS_S);
		args.push(job.gen, job.count, this.#retentionS, now, Buffer.from(sent.buffer, sent.byteOffset, sent.byteLength), failures.length, this.#unsettledS, job.app, doneS);
		for (const f of failures) args.push(f.index, JSON.stringify({ token: f.token, status: f.status, reason: f.reason }), f.feedbackAt === undefined ? '' : f.token, f.feedbackAt ?? 0, f.reason);
		const [s, fb, ...fresh] = await this.#r.awSettle(...args);
		return { sent: s!, failed: fresh.map((k) => failures[k]!), feedback: fb! };
	}

	/** Feedback after `after`, at most `limit`, oldest first. */
	readFeedback(gen: string, after: number, limit: number): Promise<Array<{ seq: number; token: string; when: number; reason: string }>> {
		return this.#read(gen, after, limit);
	}

	/** The API handed out feedback of `gen` from `after` up to `seq`: the mark moves to `seq` if `after` is at or below it. */
	async feedbackServed(gen: string, after: number, seq: number): Promise<void> {
		const script = "local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') if tonumber(ARGV[2]) <= c and c < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end";
		await this.#r.eval(script, 1, 'aw:fbsrv', gen, after, seq);
	}

	/**
	 * Delete the feedback at or below `upTo` (with a webhook, only what the webhook has too), if the API
	 * handed it out; false, deleting nothing, if not. One script: checked and cut at once.
	 */
	async feedbackAck(gen: string, upTo: number, webhook: boolean): Promise<boolean> {
		const script = `
local served = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local upTo = tonumber(ARGV[2])
if upTo > served then return 0 end
local cut = upTo
if ARGV[3] == '1' then cut = math.min(cut, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')) end
if cut > 0 then redis.call('XTRIM', KEYS[3], 'MINID', '0-' .. (cut + 1)) end
return 1`;
		return (await this.#r.eval(script, 3, 'aw:fbsrv', 'aw:whc', `aw:fb:${gen}`, gen, upTo, webhook ? '1' : '0')) === 1;
	}

	/** Feedback after the webhook's cursor (not deleted: the API's readers may not have read it). */
	async webhookBatch(gen: string, limit: number): Promise<Array<{ seq: number; token: string; when: number; reason: string }>> {
		return this.#read(gen, Number((await this.#r.hget('aw:whc', gen)) ?? 0), limit);
	}

	/** Take or extend `owner`'s turn to deliver the webhook of `gen` (30 s, extended per batch); false while another owner has it. */
	async webhookClaim(gen: string, owner: string): Promise<boolean> {
		const script = "local v = redis.call('GET', KEYS[1]) if v and v ~= ARGV[1] then return 0 end redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1";
		return (await this.#r.eval(script, 1, `aw:whl:${gen}`, owner, WEBHOOK_TURN_MS)) === 1;
	}

	/** Give `owner`'s turn up, if it still has it. */
	async webhookRelease(gen: string, owner: string): Promise<void> {
		await this.#r.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end", 1, `aw:whl:${gen}`, owner);
	}

	/** The webhook has everything up to `seq` (the cursor only moves forward: two daemons may deliver). */
	async webhookDelivered(gen: string, seq: number): Promise<void> {
		await this.#r.eval("if tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end", 1, 'aw:whc', gen, seq);
	}

	/**
	 * Drop feedback stored before `before` that no one read (with a webhook, only what it has). Entries are
	 * in the order they were stored, so the cut is a prefix: pages are read until an entry is young enough.
	 */
	async pruneFeedback(gen: string, before: number, webhook: boolean): Promise<number> {
		const key = `aw:fb:${gen}`;
		let cut = 0;
		for (let page = 0; page < 100; page++) {
			const entries = await this.#r.xrange(key, `(0-${cut}`, '+', 'COUNT', 1000);
			let young = false;
			for (const [id, fields] of entries) {
				const stored = Number(fields[fields.indexOf('s') + 1]);
				if (stored >= before) {
					young = true;
					break;
				}
				cut = Number(id.slice(2));
			}
			if (young || entries.length < 1000) break;
		}
		if (webhook) cut = Math.min(cut, Number((await this.#r.hget('aw:whc', gen)) ?? 0));
		return cut > 0 ? this.#r.xtrim(key, 'MINID', `0-${cut + 1}`) : 0;
	}

	async #read(gen: string, after: number, limit: number): Promise<Array<{ seq: number; token: string; when: number; reason: string }>> {
		const entries = await this.#r.xrange(`aw:fb:${gen}`, `(0-${after}`, '+', 'COUNT', limit);
		return entries.map(([id, fields]) => {
			const f = new Map<string, string>();
			for (let i = 0; i < fields.length; i += 2) f.set(fields[i]!, fields[i + 1]!);
			return { seq: Number(id.slice(2)), token: f.get('t')!, when: Number(f.get('w')), reason: f.get('r')! };
		});
	}
}

/** What names a job's keys. */
type JobKeyed = Pick<RedisJobRef, 'id' | 'gen' | 'notification'>;

/** A notification's counts hash and failures list. */
function notificationKeys(gen: string, id: string): [string, string] {
	return [`aw:n:${gen}:${id}`, `aw:nf:${gen}:${id}`];
}

function progressKey(jobId: string): string {
	return `aw:p:${jobId}`;
}

/** A job's progress, then its notification's counts and failures (the order SETTLE takes them in). */
function jobKeys(job: JobKeyed): [string, string, string] {
	return [progressKey(job.id), ...notificationKeys(job.gen, job.notification)];
}

function toApp(json: string): StoredApp {
	// Times are kept as strings: Lua's JSON encoder would round large numbers.
	const a = JSON.parse(json) as { id: string; gen: string; settings: string; sealed?: string; createdAt: string; updatedAt: string };
	return { id: a.id, gen: a.gen, settings: a.settings, sealed: a.sealed, createdAt: Number(a.createdAt), updatedAt: Number(a.updatedAt) };
}

/** Run a pipeline; its replies, or the first error. */
async function exec(p: ReturnType<Redis['pipeline']>): Promise<unknown[]> {
	const replies = (await p.exec()) ?? [];
	return replies.map(([error, value]) => {
		if (error !== null) throw error;
		return value;
	});
}

// ---------------------------------------------------------------------------------------------------------------------
// The store: connections, BullMQ, and the PushStore operations over RedisData.

/** Options of {@link RedisStore.open}. */
export interface RedisStoreOptions {
	/** `redis://[user:password@]host:port[/db]` (or `rediss://` for TLS). */
	readonly url: string;
	/** How long outcomes, idempotency answers and unread feedback are kept, in ms. */
	readonly retentionMs: number;
	/** A job's lock: a daemon that stops renewing it (killed) has its jobs taken over after about this long, in ms. */
	readonly lockMs: number;
	readonly logger: Logger;
}

/** A job's data (short keys: it is stored once per job). */
export interface JobData {
	/** App id. */
	readonly a: string;
	/** App incarnation. */
	readonly g: string;
	/** Notification id. */
	readonly n: string;
	/** The tokens, 32 bytes each, concatenated, base64. */
	readonly t: string;
	readonly b: StoredBody;
}

/** The BullMQ queue every daemon works. */
export const QUEUE_NAME = 'aw-send';
/** How long a daemon waits for Redis at start before it gives up (exit 2). */
const CONNECT_TIMEOUT_MS = 10_000;
/** Reconnects: 0.1 s doubling to 5 s, up to a fifth less for jitter, for as long as it takes. */
const RECONNECT = { initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 } as const;
/**
 * How long (s) the list of an app's jobs waiting out a delay because it cannot send lives without news:
 * longer than any such delay (at most 60 s), so it never outlives the jobs it names by much.
 */
const WAITING_S = 600;
/** How long re-sealing waits for its own connection to Redis. */
const RESEAL_CONNECT_MS = 5000;
/** A job that failed (Redis away for this daemon's commands) is tried again: 1 s doubling to 60 s. */
const JOB_RETRY = { initialDelayMs: 1000, maxDelayMs: 60_000, jitter: 0.2 } as const;
/** Attempts of a job: it never fails for good (it is retried, backed off, until its tokens are settled or its app deleted). */
const ATTEMPTS = 1_000_000_000;
/** A Redis command unanswered this long fails (a half-open connection): the API answers 503. */
const COMMAND_TIMEOUT_MS = 5000;
/**
 * A connection with commands waiting and nothing received this long is cut and made again (a half-open
 * link: /healthz answers 503 meanwhile). Both of the worker's connections (BullMQ duplicates the one it is
 * given for its blocking reads) take one longer than BullMQ's longest block (10 s). Commands and socket
 * timeouts go together: a command that failed is not sent again (see open()), and only its own timeout
 * settles it then.
 */
const SOCKET_TIMEOUT_MS = { commands: 10_000, worker: 15_000 } as const;
/** How often an idle daemon pings Redis: a link that died silently is noticed without traffic. */
const HEARTBEAT_MS = 5000;
/** How long a job waits for this daemon's command connection before it is given back (a blip passes; an outage does not hold jobs). */
const READY_WAIT_MS = 5000;
/** A job taken while this daemon's worker closes waits this long for another daemon (or the next start). */
const GIVE_BACK_MS = 250;
/** Bounds of the last steps of a shutdown: the queue's close, after which every connection is cut. */
const CLOSE_MS = 1000;

/** A job given back because this daemon could not reach Redis for its commands: retried, backed off, by any daemon (the outage is logged, not each job). */
class RedisAway extends Error {
	override readonly name = 'RedisAway';
}

/** A job given back unfinished because its manager closed (an update, a shutdown): retried at once, by any daemon. */
class HandedBack extends Error {
	override readonly name = 'HandedBack';
}

/** A job to be tried again after `retryInMs` where it could not be delayed (Redis away). */
class Later extends Error {
	override readonly name = 'Later';
	readonly retryInMs: number;
	constructor(retryInMs: number) {
		super(`tried again in ${retryInMs} ms`);
		this.retryInMs = retryInMs;
	}
}

/** A unit as this store hands it out: a BullMQ job. */
interface RedisUnit extends WorkUnit {
	readonly ref: RedisJobRef;
}

/** The Redis store (see the module comment). */
export class RedisStore implements PushStore {
	readonly name = 'Redis';
	readonly shared = true;
	readonly where: string;
	readonly #log: Logger;
	readonly #lockMs: number;
	readonly #data: RedisData;
	readonly #cmd: Redis;
	readonly #sub: Redis;
	/** The connection jobs are added on (POSTs). */
	readonly #queueConn: Redis;
	readonly #workerConn: Redis;
	/** Every connection, closed last (BullMQ does not close connections it was given). */
	readonly #connections: Redis[];
	readonly #queue: Queue<JobData>;
	/** Per app id: when resume() was last called for it (performance.now()). */
	readonly #resumed = new Map<string, number>();
	#worker: Worker<JobData> | undefined;
	#workerStopped: string | undefined;
	#heartbeat: NodeJS.Timeout | undefined;
	/** Resolved when the command connection is back (a job waits on it a while rather than fail at once). */
	#readyWait: Promise<void> | undefined;
	#closed = false;

	private constructor(options: RedisStoreOptions, connections: { cmd: Redis; sub: Redis; queue: Redis; worker: Redis }) {
		this.where = `Redis (${redisWhere(options.url)})`;
		this.#log = options.logger;
		this.#lockMs = options.lockMs;
		this.#cmd = connections.cmd;
		this.#sub = connections.sub;
		this.#queueConn = connections.queue;
		this.#workerConn = connections.worker;
		this.#connections = Object.values(connections);
		this.#data = new RedisData(this.#cmd, options.retentionMs);
		this.#queue = new Queue<JobData>(QUEUE_NAME, {
			connection: connections.queue,
			// One stack trace kept: BullMQ appends one per retry otherwise, without limit.
			defaultJobOptions: { attempts: ATTEMPTS, backoff: { type: 'apns-worker' }, removeOnComplete: true, removeOnFail: false, stackTraceLimit: 1 },
		});
		(this.#queue as unknown as NodeJS.EventEmitter).on('error', (error: Error) => this.#log.warn({ redis: this.where, err: { message: error.message } }, 'Redis (queue) error'));
	}

	/**
	 * Connect to Redis (the command connection at once: an unreachable Redis is an error now).
	 * @throws {@link ServerError} `APNS_SERVER_CONFIG` (Redis unreachable, a bad URL).
	 */
	static async open(options: RedisStoreOptions): Promise<RedisStore> {
		const where = redisWhere(options.url);
		const base: RedisOptions = { retryStrategy: (times) => backoffDelay(times, RECONNECT), connectionName: 'apns-worker' };
		// Commands fail at once while disconnected (the API answers 503) instead of waiting in a queue, and a
		// command that failed is never sent again after a reconnection: a DELETE the client was told failed
		// (503) must not delete the app it made again meanwhile.
		const commands: RedisOptions = { ...base, enableOfflineQueue: false, maxRetriesPerRequest: 1, autoResendUnfulfilledCommands: false, commandTimeout: COMMAND_TIMEOUT_MS, socketTimeout: SOCKET_TIMEOUT_MS.commands };
		let cmd: Redis;
		try {
			cmd = new Redis(options.url, { ...commands, lazyConnect: true });
		} catch (error) {
			throw new ServerError('APNS_SERVER_CONFIG', `--redis: ${(error as Error).message}`, { cause: error });
		}
		cmd.on('error', () => {}); // reported through `unavailable`, the 503s and the logs of what failed
		let timer: NodeJS.Timeout | undefined;
		try {
			await Promise.race([cmd.connect(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer in ${CONNECT_TIMEOUT_MS / 1000} s`)), CONNECT_TIMEOUT_MS)))]);
		} catch (error) {
			cmd.disconnect();
			throw new ServerError('APNS_SERVER_CONFIG', `cannot reach Redis at ${where}: ${(error as Error).message}`, { cause: error });
		} finally {
			clearTimeout(timer);
		}
		try {
			await migrate(cmd, where);
		} catch (error) {
			cmd.disconnect();
			throw error;
		}
		const sub = new Redis(options.url, { ...base, socketTimeout: SOCKET_TIMEOUT_MS.commands, lazyConnect: true });
		const queue = new Redis(options.url, commands);
		// BullMQ's workers block on Redis and must retry for ever (its documented setting).
		const worker = new Redis(options.url, { ...base, maxRetriesPerRequest: null, socketTimeout: SOCKET_TIMEOUT_MS.worker });
		for (const c of [sub, queue, worker]) c.on('error', () => {});
		return new RedisStore(options, { cmd, sub, queue, worker });
	}

	get unavailable(): string | undefined {
		if (this.#workerStopped !== undefined) return 'this daemon no longer works the queue (see its log): use another';
		return this.#cmd.status === 'ready' && this.#queueConn.status === 'ready' ? undefined : 'Redis is unreachable: nothing can be stored; retry';
	}

	reseal(apps: ReadonlyArray<{ readonly id: string; readonly before: string; readonly after: string }>, meta: Readonly<Record<string, string>>, now: number): Promise<boolean> {
		return this.#data.reseal(apps, meta, now);
	}

	putKey(key: StoredKey): Promise<void> {
		return this.#data.putKey(key);
	}

	keyByHash(hash: string): Promise<StoredKey | undefined> {
		return this.#data.keyByHash(hash);
	}

	keys(): Promise<StoredKey[]> {
		return this.#data.keys();
	}

	deleteKey(id: string): Promise<boolean> {
		return this.#data.deleteKey(id);
	}

	metaOnce(key: string, make: () => string): Promise<string> {
		return this.#data.metaOnce(key, make);
	}

	meta(key: string): Promise<string | undefined> {
		return this.#data.getMeta(key);
	}

	putApp(id: string, settings: string, sealed: string | undefined, now: number): Promise<{ app: StoredApp; created: boolean }> {
		return this.#data.putApp(id, settings, sealed, now);
	}

	getApp(id: string): Promise<StoredApp | undefined> {
		return this.#data.getApp(id);
	}

	appIds(): Promise<string[]> {
		return this.#data.appIds();
	}

	deleteApp(id: string): Promise<number | undefined> {
		return this.#data.deleteApp(id);
	}

	async accept(app: StoredApp, notifications: readonly NewNotification[], now: number, idempotency: Idempotency | undefined): Promise<(Accepted & { fresh: boolean }) | undefined> {
		const gen = app.gen;
		const idempotencyKey = idempotency?.key;
		if (idempotencyKey !== undefined) {
			const earlier = await this.idempotent(app, idempotencyKey);
			if (earlier !== undefined) return { ...earlier, fresh: false };
		}
		// With a key, ids and job ids follow from it: a retry after a failure between the two writes below
		// re-adds the same jobs, which BullMQ ignores while they are still queued, and records nothing twice.
		const keyed = idempotencyKey === undefined ? undefined : createHash('sha256').update(`${gen}\0${idempotencyKey}`).digest('hex');
		const ids = notifications.map((_, i) => (keyed === undefined ? randomUUID() : uuidFrom(keyed, i)));
		// The job's timestamp is when it was accepted: its retry window starts then (WorkUnit.acceptedAt).
		const jobs: Array<{ name: string; data: JobData; opts: { timestamp: number; jobId?: string } }> = [];
		const bytes = UNIT_TOKENS * 32;
		notifications.forEach((n, i) => {
			for (let first = 0; first < n.tokens.length; first += bytes) {
				jobs.push({ name: 'send', data: { a: app.id, g: gen, n: ids[i]!, t: n.tokens.subarray(first, first + bytes).toString('base64'), b: n.body }, opts: { timestamp: now, ...(keyed === undefined ? {} : { jobId: keyedJobId(keyed, i, first / 32) }) } });
			}
		});
		const accepted = notifications.reduce((sum, n) => sum + n.tokens.length / 32, 0);
		// Jobs first: a notification counted as pending always has its jobs (see ACCEPT).
		await this.#queue.addBulk(jobs);
		// Deleted (or deleted and made again) meanwhile: nothing was accepted; those jobs are dropped.
		if (!(await this.#data.accepted(app.id, gen, notifications.map((n, i) => ({ id: ids[i]!, total: n.tokens.length / 32 }))))) return undefined;
		const answer: Accepted = { accepted, ids, ...(idempotency === undefined ? {} : { fingerprint: idempotency.fingerprint }) };
		if (idempotencyKey === undefined) return { ...answer, fresh: true };
		// Two requests with one key at once: the first answer stored is everyone's (and only it is fresh).
		const { kept, first } = await this.#data.remember(gen, idempotencyKey, JSON.stringify(answer));
		return { ...(JSON.parse(kept) as Accepted), fresh: first };
	}

	async idempotent(app: StoredApp, key: string): Promise<Accepted | undefined> {
		const answer = await this.#data.idempotent(app.gen, key);
		return answer === undefined ? undefined : (JSON.parse(answer) as Accepted);
	}

	pending(apps: readonly StoredApp[]): Promise<number[]> {
		return this.#data.pending(apps.map((a) => a.gen));
	}

	oldestPending(apps: readonly StoredApp[]): Promise<Array<number | undefined>> {
		return this.#data.oldestPending(apps.map((a) => a.gen));
	}

	status(app: StoredApp, notification: string): Promise<NotificationCounts | undefined> {
		return this.#data.status(app.gen, notification);
	}

	work(handler: WorkHandler, options: { readonly concurrency: number; readonly error: (error: Error) => void }): WorkSource {
		let stopping = false;
		const worker = new Worker<JobData>(QUEUE_NAME, (job, token) => this.#process(job, token, handler, stopping), {
			connection: this.#workerConn,
			autorun: false,
			concurrency: options.concurrency,
			lockDuration: this.#lockMs,
			stalledInterval: this.#lockMs,
			// A job is never failed for stalling: its tokens are settled or reported, never dropped.
			maxStalledCount: ATTEMPTS,
			removeOnComplete: { count: 0 },
			settings: {
				backoffStrategy: (attempts, _type, error) => (error instanceof Later ? error.retryInMs : error?.name === 'HandedBack' ? 0 : backoffDelay(attempts, JOB_RETRY)),
			},
		});
		this.#worker = worker;
		(worker as unknown as NodeJS.EventEmitter).on('error', (error: Error) => this.#log.warn({ redis: this.where, err: { message: error.message } }, 'Redis (worker) error'));
		worker.on('stalled', (jobId) => this.#log.warn({ job: jobId }, 'a job stalled (its daemon stopped renewing it): it is taken over'));
		worker.on('failed', (job, error) => {
			if (!['HandedBack', 'RedisAway', 'Later'].includes(error.name)) options.error(new Error(`job ${job?.id} not finished (${error.message}): retried`));
		});
		worker.run().catch((error: unknown) => {
			// A daemon that no longer works the queue must not look healthy: /healthz and /v1 answer 503.
			this.#workerStopped = (error as Error).message;
			this.#log.error({ err: { message: this.#workerStopped } }, 'the BullMQ worker stopped: this daemon sends nothing; restart it');
		});
		return {
			stop: (deadline) => {
				stopping = true;
				return until(worker.close(), deadline);
			},
			resume: (id) => {
				// Jobs running now come back to wait; those that started before this are not delayed (#process).
				this.#resumed.set(id, performance.now());
				this.#promote(id).catch((error: unknown) => this.#log.warn({ app: id, err: { message: (error as Error).message } }, 'cannot hand out the jobs of a restarted app early: they wait out their delay'));
			},
		};
	}

	/** Promote `app`'s jobs that wait out a delay because it could not send: due now. */
	async #promote(app: string): Promise<void> {
		for (const id of await this.#data.takeWaiting(app)) {
			// Run meanwhile, or promoted by another daemon told of the same PUT: the same outcome.
			await (await Job.fromId(this.#queue, id))?.promote().catch(() => {});
		}
	}

	/**
	 * One job as a unit of work. Every way out but "its tokens are settled" and "its app is gone" goes
	 * back to BullMQ: delayed (backed off, no failed attempt counted), handed back (at once), or thrown
	 * (Redis away for this daemon: retried, backed off, by any daemon).
	 */
	async #process(job: Job<JobData>, lock: string | undefined, handler: WorkHandler, stopping: boolean): Promise<void> {
		const d = job.data;
		if (stopping) {
			// Taken while the worker closes (BullMQ's loop may still fetch one): given back for the others.
			await job.moveToDelayed(Date.now() + GIVE_BACK_MS, lock);
			throw new DelayedError();
		}
		if (this.#cmd.status !== 'ready') {
			// Never sent after a wait its lock may not have outlived; the wait keeps this daemon from taking job after job meanwhile.
			await this.#ready(READY_WAIT_MS);
			throw new RedisAway(`Redis was unreachable when job ${job.id} was taken: given back`);
		}
		const tokens = Buffer.from(d.t, 'base64');
		const count = tokens.length / 32;
		const ref: RedisJobRef = { id: job.id!, app: d.a, gen: d.g, notification: d.n, count, keyed: isKeyedJobId(job.id!) };
		const settled = new Uint8Array(Math.ceil(count / 8));
		// Read every time: a job run again (taken over, handed back, or re-added by a retried request with
		// the same Idempotency-Key) sends only what is not recorded. (A throw retries the job.)
		const progress = await this.#data.progress(job.id!);
		if (progress !== undefined) settled.set(progress.subarray(0, settled.length));
		const unit: RedisUnit = { app: d.a, gen: d.g, notification: d.n, body: d.b, acceptedAt: job.timestamp, tokens, settled, again: job.stalledCounter > 0 || (progress !== undefined && job.attemptsStarted <= 1), attempts: Math.max(0, job.attemptsStarted - 1), ref };
		const startedAt = performance.now();
		const result = await handler(unit);
		if (result === 'done') return;
		if (result === 'gone') {
			// Its app deleted, or deleted and made again: so is the job, and what it had recorded.
			await this.#data.forgetJob(ref);
			return;
		}
		if (result === 'handedBack') throw new HandedBack(`job ${job.id} handed back unsent (its manager closed)`);
		// Its app was restarted while this ran (it could not send then): tried again at once.
		const delay = (this.#resumed.get(d.a) ?? -1) >= startedAt ? 0 : result.retryInMs;
		try {
			// Kept another 30 days while it waits; delayed without counting a failed attempt.
			await this.#data.touchJob(ref);
			if (result.untouched === true && delay > 0) await this.#data.waiting(d.a, job.id!);
			await job.moveToDelayed(Date.now() + delay, lock);
		} catch {
			throw new Later(delay);
		}
		throw new DelayedError();
	}

	/** Until the command connection is ready, at most `ms` (or until the store closes). */
	async #ready(ms: number): Promise<void> {
		if (this.#cmd.status === 'ready' || this.#closed) return;
		this.#readyWait ??= new Promise<void>((resolve) => {
			const done = (): void => {
				this.#cmd.off('ready', done);
				this.#readyWait = undefined;
				resolve();
			};
			this.#cmd.on('ready', done);
		});
		await until(this.#readyWait, performance.now() + ms);
	}

	settle(unit: WorkUnit, sent: Uint8Array, failures: readonly TokenFailure[], now: number): Promise<Settled> {
		return this.#data.settle((unit as RedisUnit).ref, sent, failures, now);
	}

	feedback(app: StoredApp, after: number, limit: number): Promise<FeedbackRecord[]> {
		return this.#data.readFeedback(app.gen, after, limit);
	}

	feedbackServed(app: StoredApp, after: number, seq: number): Promise<void> {
		return this.#data.feedbackServed(app.gen, after, seq);
	}

	feedbackAck(app: StoredApp, upTo: number, webhook: boolean): Promise<boolean> {
		return this.#data.feedbackAck(app.gen, upTo, webhook);
	}

	webhookBatch(app: StoredApp, limit: number): Promise<FeedbackRecord[]> {
		return this.#data.webhookBatch(app.gen, limit);
	}

	webhookDelivered(app: StoredApp, seq: number): Promise<void> {
		return this.#data.webhookDelivered(app.gen, seq);
	}

	webhookClaim(app: StoredApp, owner: string): Promise<boolean> {
		return this.#data.webhookClaim(app.gen, owner);
	}

	webhookRelease(app: StoredApp, owner: string): Promise<void> {
		return this.#data.webhookRelease(app.gen, owner);
	}

	/** Outcomes and idempotency answers expire by themselves (key TTLs); unread feedback is cut here. */
	async prune(before: number, apps: ReadonlyArray<{ app: StoredApp; webhook: boolean }>): Promise<number> {
		let pruned = 0;
		for (const { app, webhook } of apps) pruned += await this.#data.pruneFeedback(app.gen, before, webhook);
		return pruned;
	}

	async watch(events: StoreEvents): Promise<void> {
		this.#cmd.on('ready', () => events.back());
		this.#cmd.on('close', () => events.lost());
		this.#sub.on('message', (_channel: string, id: string) => events.appChanged(id));
		// Every (re)connection: subscribe, then load every app (what was published meanwhile was missed).
		this.#sub.on('ready', () => {
			this.#sub.subscribe(APPS_CHANNEL).then(() => events.appChanged(undefined), () => {});
		});
		await this.#sub.connect();
		// A command with no answer for SOCKET_TIMEOUT_MS cuts the link: this makes sure there is one to wait.
		this.#heartbeat = setInterval(() => {
			// (The subscriber too: a silent one would miss every app change until the next resync.)
			for (const c of [this.#cmd, this.#queueConn, this.#sub]) if (c.status === 'ready') c.ping().catch(() => {});
		}, HEARTBEAT_MS);
		this.#heartbeat.unref();
	}

	/**
	 * Bounded: then every connection is cut, the worker's own blocking one included (its close may still
	 * wait on a Redis that went away), which ends whatever still waits on Redis.
	 */
	async close(): Promise<void> {
		this.#closed = true;
		clearInterval(this.#heartbeat);
		// (A second close() of BullMQ's only returns the first one's promise.)
		await until(this.#queue.close().catch(() => {}), performance.now() + CLOSE_MS);
		await until(this.#worker?.disconnect().catch(() => {}) ?? Promise.resolve(), performance.now() + CLOSE_MS);
		for (const c of this.#connections) c.disconnect();
	}
}

/**
 * The keyspace's version (`aw:version`), and how each earlier one becomes the next. A keyspace with data
 * and no version key is version 1 (from before versions were kept); an empty one starts at the current.
 */
export const KEYSPACE_VERSION = 3;
const MIGRATIONS: ReadonlyArray<(r: Redis) => Promise<void>> = [
	// 0 → 1: no data to change (unreachable: an empty keyspace starts at the current version).
	async (r) => void (await r.set('aw:version', 1)),
	// 1 → 2: the secret's salt in the one format every store keeps it in (base64 of its bytes); version 1
	// kept a UUID whose text was the salt. One MULTI with the version: never converted twice.
	async (r) => {
		const salt = await r.hget('aw:meta', 'secret-salt');
		const m = r.multi();
		if (salt !== null) m.hset('aw:meta', 'secret-salt', Buffer.from(salt, 'utf8').toString('base64'));
		await exec(m.set('aw:version', 2));
	},
	// 2 → 3: how far the API handed out each app's feedback (acknowledgements stop there). Readers of an
	// earlier version were handed cursors up to anything stored so far: every seq assigned yet.
	async (r) => {
		const seqs = await r.hgetall('aw:fbseq');
		const m = r.multi();
		for (const [gen, seq] of Object.entries(seqs)) m.hset('aw:fbsrv', gen, seq);
		await exec(m.set('aw:version', 3));
	},
];
/** How long a daemon waits for another to migrate the keyspace before it gives up. */
const MIGRATION_WAIT_MS = 60_000;

/**
 * Bring the keyspace up to {@link KEYSPACE_VERSION}, one version at a time, under a lock (one daemon
 * migrates; the others wait for it); refuse a keyspace written by a newer version.
 */
async function migrate(r: Redis, where: string): Promise<void> {
	const current = async (): Promise<number> => {
		const v = await r.get('aw:version');
		if (v !== null) {
			if (!/^[0-9]{1,9}$/.test(v)) throw new ServerError('APNS_SERVER_CONFIG', `Redis at ${where} has aw:version ${JSON.stringify(v.slice(0, 40))}, which is not a keyspace version: is another program using this Redis database? Give apns-worker a database of its own (redis://host:port/N)`);
			return Number(v);
		}
		const used = (await r.exists('aw:meta', 'aw:apps')) > 0;
		// Empty: this daemon's version from the start (another daemon may set it first: the same value).
		if (!used && (await r.set('aw:version', KEYSPACE_VERSION, 'NX')) !== null) return KEYSPACE_VERSION;
		return used ? 1 : current();
	};
	const deadline = performance.now() + MIGRATION_WAIT_MS;
	const me = randomUUID();
	for (;;) {
		const version = await current();
		if (version > KEYSPACE_VERSION) throw new ServerError('APNS_SERVER_CONFIG', `Redis at ${where} was written by a newer apns-worker (keyspace version ${version}; this one knows up to ${KEYSPACE_VERSION}): upgrade this daemon`);
		if (version === KEYSPACE_VERSION) return;
		if ((await r.set('aw:migrating', me, 'PX', MIGRATION_WAIT_MS, 'NX')) !== null) {
			try {
				for (let v = await current(); v < KEYSPACE_VERSION; v++) await MIGRATIONS[v]!(r);
			} finally {
				await r.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end", 1, 'aw:migrating', me);
			}
			return;
		}
		if (performance.now() > deadline) throw new ServerError('APNS_SERVER_CONFIG', `Redis at ${where} is being migrated by another daemon, which has not finished in ${MIGRATION_WAIT_MS / 1000} s`);
		await new Promise((resolve) => setTimeout(resolve, 100));
	}
}

/** `promise`, or nothing once `deadline` (performance.now() time) has come. */
async function until(promise: Promise<unknown>, deadline: number): Promise<void> {
	let timer: NodeJS.Timeout | undefined;
	await Promise.race([promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - performance.now()))))]);
	clearTimeout(timer);
}

/** The job id of tokens `first`… of entry `i` of a request with an Idempotency-Key (`keyed`: its hash): a retry adds the same jobs. */
function keyedJobId(keyed: string, i: number, first: number): string {
	return `${keyed.slice(0, 32)}.${i}.${first}`;
}

/** Whether `id` was made by {@link keyedJobId} (BullMQ's own ids are numbers). */
function isKeyedJobId(id: string): boolean {
	return id.includes('.');
}

/** A UUID-shaped id from a hash and an index (ids of a request with an Idempotency-Key). */
function uuidFrom(hash: string, i: number): string {
	const h = createHash('sha256').update(`${hash}:${i}`).digest('hex');
	return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** `host:port/db` of a Redis URL (never its password). */
export function redisWhere(url: string): string {
	try {
		const u = new URL(url);
		return `${u.protocol}//${u.hostname}:${u.port || '6379'}${u.pathname.length > 1 ? u.pathname : ''}`;
	} catch {
		return 'the Redis URL given';
	}
}
