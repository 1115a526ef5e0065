/**
 * What daemons that scale out share in Redis, besides BullMQ's queue (see redis-daemon.ts): apps,
 * notification outcomes, per-job progress, pending counts, feedback and idempotency answers. Every key
 * starts with `aw:`.
 *
 * | key | type | holds |
 * |---|---|---|
 * | `aw:meta` | hash | the secret's salt and check value |
 * | `aw:apps` | hash | app id → JSON {@link RedisApp}; changes are published on `aw:apps:changed` |
 * | `aw:pending` | hash | app incarnation → notifications accepted and not yet settled |
 * | `aw:n:{gen}:{id}` | hash | a notification's `total`, `sent`, `failed` |
 * | `aw:nf:{gen}:{id}` | list | its failures, JSON |
 * | `aw:p:{jobId}` | string | a job's progress: one bit per token, set once its outcome is recorded |
 * | `aw:fb:{gen}` | stream | the app's feedback, entry ids `0-{seq}` (seq is the API's cursor) |
 * | `aw:fbseq`, `aw:whc` | hash | per incarnation: the last feedback seq; the webhook's cursor |
 * | `aw:whl:{gen}` | string | which daemon delivers the app's webhook now (expires in 30 s unless extended) |
 * | `aw:idem:{gen}:{key}` | string | the answer to a request with that Idempotency-Key (expires with the retention) |
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
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';

/** An app as stored in `aw:apps`. */
export interface RedisApp {
	readonly id: string;
	/** Its incarnation: made at creation, kept by updates. */
	readonly gen: string;
	/** JSON of its public settings. */
	readonly settings: string;
	readonly sealed: string | undefined;
	readonly createdAt: number;
	readonly updatedAt: number;
}

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

/** One failed token, as a settlement records it. */
export interface RedisFailure {
	/** Its index in the job. */
	readonly index: number;
	readonly token: string;
	readonly status: number;
	readonly reason: string;
	/** For a 410: when APNs found the token invalid (ms); the token becomes feedback. */
	readonly feedbackAt: number | undefined;
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
 * token ('' for none), when (ms), reason. Returns {newly delivered, newly failed, feedback records added}.
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
if not live or cjson.decode(live).gen ~= ARGV[1] then return {0, 0, 0} end
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
for k = 0, tonumber(ARGV[6]) - 1 do
	local a = 10 + k * 5
	local index = tonumber(ARGV[a])
	local at = math.floor(index / 8) + 1
	local mask = bit.lshift(1, index % 8)
	if bit.band(bytes[at], mask) == 0 then
		bytes[at] = bit.bor(bytes[at], mask)
		newFailed = newFailed + 1
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
		if tonumber(c[2] or '0') + tonumber(c[3] or '0') >= tonumber(c[1]) then ttl = ARGV[3] end
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
return {newSent, newFailed, feedback}
`;

/**
 * Record accepted notifications (after their jobs were added). KEYS: pending hash, apps hash, then per
 * notification its hash and its failures list; ARGV: gen, retention (s), app id, unsettled period (s),
 * then one total each.
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
	local total = tonumber(ARGV[5 + k])
	if redis.call('HSETNX', hash, 'total', total) == 1 then
		local counts = redis.call('HMGET', hash, 'sent', 'failed')
		local settled = tonumber(counts[1] or '0') + tonumber(counts[2] or '0')
		local ttl = ARGV[4]
		if settled >= total then ttl = ARGV[2] end
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
redis.call('DEL', 'aw:fb:' .. gen)
redis.call('PUBLISH', '${APPS_CHANNEL}', ARGV[1])
return dropped
`;

type Scripted = Redis & {
	awSettle(...args: Array<string | number | Buffer>): Promise<[number, number, number]>;
	awPutApp(...args: Array<string | number>): Promise<[string, number]>;
	awDeleteApp(...args: Array<string | number>): Promise<number>;
	awAccept(numberOfKeys: number, ...args: Array<string | number>): Promise<number>;
};

/** The shared state's operations (one command, pipeline or script each). */
export class RedisStore {
	readonly #r: Scripted;
	readonly #retentionS: number;
	/** How long outcomes of a notification whose acceptance is not recorded are kept. */
	readonly #unsettledS: number;

	constructor(client: Redis, retentionMs: number) {
		client.defineCommand('awSettle', { numberOfKeys: 7, lua: SETTLE });
		client.defineCommand('awPutApp', { numberOfKeys: 1, lua: PUT_APP });
		client.defineCommand('awDeleteApp', { numberOfKeys: 4, lua: DELETE_APP });
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

	async getApp(id: string): Promise<RedisApp | undefined> {
		const json = await this.#r.hget('aw:apps', id);
		return json === null ? undefined : toApp(json);
	}

	/** The ids of every app (each is read in its own load, in turn: see redis-daemon.ts). */
	async appIds(): Promise<string[]> {
		return this.#r.hkeys('aw:apps');
	}

	/** Create or update an app (its gen kept), and tell every daemon. */
	async putApp(id: string, settings: string, sealed: string | undefined, now: number): Promise<{ app: RedisApp; created: boolean }> {
		const [json, created] = await this.#r.awPutApp('aw:apps', id, settings, sealed ?? '', now, randomUUID());
		return { app: toApp(json), created: created === 1 };
	}

	/** Delete an app and what it had (its notifications' outcomes go as its jobs are dropped); the pending count dropped, or undefined when there was no app. */
	async deleteApp(id: string): Promise<number | undefined> {
		const dropped = await this.#r.awDeleteApp('aw:apps', 'aw:pending', 'aw:fbseq', 'aw:whc', id);
		return dropped < 0 ? undefined : dropped;
	}

	/**
	 * Record accepted notifications, once their jobs are in the queue: their totals, and the app's pending
	 * count. Recording the same notification again changes nothing; if this fails, the client retries.
	 * False, with nothing recorded, when app `app` is no longer incarnation `gen`.
	 */
	async accepted(app: string, gen: string, notifications: ReadonlyArray<{ id: string; total: number }>): Promise<boolean> {
		const keys = notifications.flatMap((n) => notificationKeys(gen, n.id));
		return (await this.#r.awAccept(keys.length + 2, 'aw:pending', 'aw:apps', ...keys, gen, this.#retentionS, app, this.#unsettledS, ...notifications.map((n) => n.total))) === 1;
	}

	/** The answer given to an earlier request with this Idempotency-Key. */
	async idempotent(gen: string, key: string): Promise<string | undefined> {
		return (await this.#r.get(`aw:idem:${gen}:${key}`)) ?? undefined;
	}

	/** Remember the answer to an Idempotency-Key; the answer that is kept (an earlier one wins). */
	async remember(gen: string, key: string, response: string): Promise<string> {
		const k = `aw:idem:${gen}:${key}`;
		const [set, kept] = await exec(this.#r.pipeline().set(k, response, 'EX', this.#retentionS, 'NX').get(k));
		return set === 'OK' ? response : ((kept as string | null) ?? response);
	}

	async pending(gens: readonly string[]): Promise<number[]> {
		if (gens.length === 0) return [];
		return (await this.#r.hmget('aw:pending', ...gens)).map((v) => Math.max(0, Number(v ?? 0)));
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
	async settle(job: RedisJobRef, sent: Uint8Array, failures: readonly RedisFailure[], now: number): Promise<{ sent: number; failed: number; feedback: number }> {
		const args: Array<string | number | Buffer> = [...jobKeys(job), 'aw:pending', `aw:fb:${job.gen}`, 'aw:fbseq', 'aw:apps'];
		// A job id made from an Idempotency-Key comes back when the request is retried: its progress must outlive that.
		const doneS = job.keyed ? this.#retentionS : Math.min(this.#retentionS, DONE_PROGRESS_S);
		args.push(job.gen, job.count, this.#retentionS, now, Buffer.from(sent.buffer, sent.byteOffset, sent.byteLength), failures.length, this.#unsettledS, job.app, doneS);
		for (const f of failures) args.push(f.index, JSON.stringify({ token: f.token, status: f.status, reason: f.reason }), f.feedbackAt === undefined ? '' : f.token, f.feedbackAt ?? 0, f.reason);
		const [s, f, fb] = await this.#r.awSettle(...args);
		return { sent: s, failed: f, feedback: fb };
	}

	/**
	 * Feedback after `after`, at most `limit`; what is at or below `after` was read past and is deleted —
	 * with a webhook, only once the webhook has it too.
	 */
	async feedback(gen: string, after: number, limit: number, webhook: boolean): Promise<Array<{ seq: number; token: string; when: number; reason: string }>> {
		const upTo = webhook ? Math.min(after, Number((await this.#r.hget('aw:whc', gen)) ?? 0)) : after;
		if (upTo > 0) await this.#r.xtrim(`aw:fb:${gen}`, 'MINID', `0-${upTo + 1}`);
		return this.#read(gen, after, limit);
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

function toApp(json: string): RedisApp {
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
