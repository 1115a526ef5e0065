/**
 * Live Activity broadcasts (iOS 18): one request updates or ends the activity on every device subscribed
 * to a channel. `POST /4/broadcasts/apps/{topic}` to the notification host, with `apns-channel-id`, and
 * `apns-expiration` and `apns-priority` always sent, as Apple requires (docs/protocol/live-activities.md
 * §3). A broadcast is one request, so broadcasts do not go through the notification queue: at most
 * {@link BROADCASTS_IN_FLIGHT} at a time through a {@link Requester} (retried on 429, 5xx and no answer
 * with the `retry` backoff, up to `maxAttempts`), each settled once — sent, failed with APNs' status and
 * reason, or dropped by `destroy()` — and counted, and waited for by `flushMessages()` and `close()`.
 */
import { randomUUID } from 'node:crypto';
import PQueue from 'p-queue';
import { checkChannelId } from './channels.js';
import { ClosedError, InvalidArgumentError } from './errors.js';
import { unixSeconds } from './message.js';
import { Requester, type RequesterSetup } from './requester.js';

/** Apple's limit on a broadcast's payload, in bytes. */
export const MAX_BROADCAST_PAYLOAD_BYTES = 5120;

/** Broadcast requests in flight at once, per manager. */
export const BROADCASTS_IN_FLIGHT = 100;

/** The default of {@link BroadcastOptions.priority}: APNs' own default for a Live Activity push. */
export const DEFAULT_BROADCAST_PRIORITY = 10;

/** Options of `broadcast()`. */
export interface BroadcastOptions {
	/**
	 * Until when APNs may store it for devices offline: a `Date` or UNIX seconds; 0 stores nothing (a
	 * channel made with storage policy 0 takes only 0). @default 0
	 */
	readonly expiration?: Date | number | undefined;
	/** 10: at once (counts toward the activity's push budget); 5: when the device's power allows; 1: low. @default 10 */
	readonly priority?: 1 | 5 | 10 | undefined;
	/** A UUID to send as `apns-request-id` (APNs answers with it); one is made when absent. */
	readonly apnsId?: string | undefined;
}

/** What became of a broadcast. */
export interface BroadcastResult {
	/** Accepted by APNs: its `apns-request-id`, and the `apns-unique-id` to quote to Apple. */
	readonly sent: ReadonlyArray<{ readonly channel: string; readonly apnsId: string; readonly uniqueId: string | undefined }>;
	/** Refused by APNs, or unanswered through every attempt (status 0). */
	readonly failed: ReadonlyArray<{ readonly channel: string; readonly status: number; readonly reason: string }>;
	/** Dropped by `destroy()` before it was settled (it may have reached APNs). */
	readonly dropped: ReadonlyArray<{ readonly channel: string }>;
}

/** A queued broadcast: ignore it, or `await receipt.settled`. */
export interface BroadcastReceipt {
	readonly channel: string;
	/** The `apns-request-id` it is sent with. */
	readonly apnsId: string;
	/** Resolves once it is settled (never rejects). */
	readonly settled: Promise<BroadcastResult>;
}

/** Broadcast counters since construction. */
export interface BroadcastStats {
	sent: number;
	failed: number;
	dropped: number;
	/** Attempts beyond the first (429, 5xx, no answer). */
	resent: number;
	/** Not settled yet. */
	pending: number;
}

/** What the manager hears of its broadcasts. */
export interface BroadcastEvents {
	failed(info: { channel: string; status: number; reason: string; apnsId: string }): void;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const KNOWN_OPTIONS = new Set(['expiration', 'priority', 'apnsId']);

/** The broadcasts of one manager. */
export class Broadcaster {
	readonly #requester: Requester;
	readonly #path: string;
	readonly #events: BroadcastEvents;
	readonly #queue = new PQueue({ concurrency: BROADCASTS_IN_FLIGHT });
	#destroyed = false;
	readonly stats: BroadcastStats = { sent: 0, failed: 0, dropped: 0, resent: 0, pending: 0 };

	/** @param setup - the notification host's target, and the manager's token, retry and timeouts. */
	constructor(setup: RequesterSetup, topic: string, events: BroadcastEvents) {
		this.#requester = new Requester(setup);
		this.#path = `/4/broadcasts/apps/${encodeURIComponent(topic)}`;
		this.#events = events;
	}

	/**
	 * Queue a broadcast. Checks everything first: a bad argument throws, naming it, and nothing is queued.
	 * @throws {@link InvalidArgumentError}
	 */
	send(channelId: string, payload: Readonly<Record<string, unknown>>, options: BroadcastOptions = {}): BroadcastReceipt {
		const channel = checkChannelId('channelId', channelId);
		if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new InvalidArgumentError('payload', 'a JSON object such as { aps: liveActivityAps(…) }', payload);
		let body: Buffer;
		try {
			body = Buffer.from(JSON.stringify(payload), 'utf8');
		} catch (error) {
			throw new InvalidArgumentError('payload', `a JSON-serialisable object (${(error as Error).message})`, payload);
		}
		if (body.length > MAX_BROADCAST_PAYLOAD_BYTES) throw new InvalidArgumentError('payload', `at most ${MAX_BROADCAST_PAYLOAD_BYTES} bytes of JSON (Apple's limit for a broadcast)`, `${body.length} bytes`);
		if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object { expiration?, priority?, apnsId? }', options);
		for (const key of Object.keys(options)) if (!KNOWN_OPTIONS.has(key)) throw InvalidArgumentError.unknownOption(`options.${key}`, 'broadcast() takes expiration, priority and apnsId');
		const expiration = options.expiration === undefined ? 0 : unixSeconds('options.expiration', options.expiration);
		const priority = options.priority ?? DEFAULT_BROADCAST_PRIORITY;
		if (priority !== 1 && priority !== 5 && priority !== 10) throw new InvalidArgumentError('options.priority', '10, 5 or 1', priority);
		if (options.apnsId !== undefined && (typeof options.apnsId !== 'string' || !UUID.test(options.apnsId))) throw new InvalidArgumentError('options.apnsId', 'a UUID such as 123e4567-e89b-12d3-a456-4266554400a0', options.apnsId);
		const apnsId = (options.apnsId ?? randomUUID()).toLowerCase();
		const headers = { 'apns-channel-id': channel, 'apns-push-type': 'liveactivity', 'apns-expiration': String(expiration), 'apns-priority': String(priority), 'apns-request-id': apnsId };
		this.stats.pending++;
		const settled = this.#queue.add(async (): Promise<BroadcastResult> => {
			try {
				if (this.#destroyed) return this.#dropped(channel);
				const outcome = await this.#requester.call({ method: 'POST', path: this.#path, headers, body }, [200]);
				this.stats.resent += outcome.attempts - 1;
				if (outcome.ok) {
					this.stats.sent++;
					const unique = outcome.answer.headers['apns-unique-id'];
					return { sent: [{ channel, apnsId, uniqueId: typeof unique === 'string' ? unique : undefined }], failed: [], dropped: [] };
				}
				this.stats.failed++;
				this.#events.failed({ channel, status: outcome.status, reason: outcome.reason, apnsId });
				return { sent: [], failed: [{ channel, status: outcome.status, reason: outcome.reason }], dropped: [] };
			} catch (error) {
				if (error instanceof ClosedError) return this.#dropped(channel);
				throw error;
			} finally {
				this.stats.pending--;
			}
		}) as Promise<BroadcastResult>;
		return { channel, apnsId, settled };
	}

	/** Resolves once every broadcast queued is settled. */
	idle(): Promise<void> {
		return this.#queue.onIdle();
	}

	/** Settle every broadcast queued (each within its attempts), then close the session. */
	async close(): Promise<void> {
		await this.#queue.onIdle();
		await this.#requester.close();
	}

	/** Drop what is not settled (each receipt says `dropped`) and end the session now. */
	destroy(): void {
		this.#destroyed = true;
		this.#requester.destroy();
	}

	#dropped(channel: string): BroadcastResult {
		this.stats.dropped++;
		return { sent: [], failed: [], dropped: [{ channel }] };
	}
}

