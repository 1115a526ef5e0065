/**
 * Channel management for Live Activity broadcasts (iOS 18): create, read, list and delete the channels of
 * a manager's topic on APNs' channel management host, which is not the host notifications go to
 * (docs/protocol/live-activities.md §1–2). Requests go through a {@link Requester} (one session,
 * retried with the manager's `retry` backoff up to `maxAttempts`); a refusal rejects with a
 * {@link ChannelError} carrying APNs' status and reason.
 */
import { randomUUID } from 'node:crypto';
import { ChannelError, InvalidArgumentError } from './errors.js';
import { parseJson, Requester, type Answered, type RequesterSetup } from './requester.js';

/** Whether APNs keeps a channel's most recent broadcast for devices that are offline: 0 no, 1 yes (up to 8 hours). */
export type StoragePolicy = 0 | 1;

/** A channel, as `getChannel()` reads it. */
export interface ChannelInfo {
	/** The channel id, base64, as APNs made it. */
	readonly id: string;
	readonly storagePolicy: StoragePolicy;
}

/** Options of `createChannel()`. */
export interface CreateChannelOptions {
	/**
	 * 0: APNs stores nothing for offline devices (broadcasts must then have `expiration` 0; a higher
	 * publishing budget, Apple's advice for frequent updates such as scores); 1: it keeps the most recent
	 * broadcast, up to 8 hours. It cannot be changed later. @default 0
	 */
	readonly storagePolicy?: StoragePolicy;
}

/** The default of {@link CreateChannelOptions.storagePolicy}. */
export const DEFAULT_STORAGE_POLICY: StoragePolicy = 0;

/** What the client needs from its manager: a requester's setup, for the management host, and the topic. */
export interface ChannelSetup extends RequesterSetup {
	/** The bundle ID (the manager's topic, without a push-type suffix). */
	readonly topic: string;
}

/** What a channel id must look like before it goes into a header: base64, as APNs makes them. */
const CHANNEL_ID = /^[A-Za-z0-9+/]+={0,2}$/;

/** Check a channel id given by the caller. */
export function checkChannelId(name: string, id: unknown): string {
	if (typeof id !== 'string' || !CHANNEL_ID.test(id) || id.length > 1024) throw new InvalidArgumentError(name, 'a channel id: base64, as createChannel() returned it', id);
	return id;
}

/** The channel management client of one manager. */
export class ChannelClient {
	readonly #requester: Requester;
	readonly #topic: string;

	constructor(setup: ChannelSetup) {
		this.#requester = new Requester(setup);
		this.#topic = setup.topic;
	}

	/** Create a channel; resolves to its id (the `apns-channel-id` APNs answers 201 with). */
	async create(storagePolicy: StoragePolicy): Promise<string> {
		const body = JSON.stringify({ 'message-storage-policy': storagePolicy, 'push-type': 'LiveActivity' });
		const answer = await this.#call('createChannel()', 'POST', 'channels', undefined, body, [201]);
		const id = answer.headers['apns-channel-id'];
		if (typeof id !== 'string' || !CHANNEL_ID.test(id)) throw new ChannelError({ operation: 'createChannel()', status: answer.status, reason: 'MissingChannelId', requestId: String(answer.headers['apns-request-id'] ?? ''), attempts: 1 });
		return id;
	}

	/** A channel's settings (`400 ChannelNotRegistered` when there is none). */
	async get(id: string): Promise<ChannelInfo> {
		const answer = await this.#call('getChannel()', 'GET', 'channels', id, undefined, [200]);
		const policy = (parseJson(answer.body) as { 'message-storage-policy'?: unknown } | undefined)?.['message-storage-policy'];
		if (policy !== 0 && policy !== 1) throw new ChannelError({ operation: 'getChannel()', status: answer.status, reason: 'an answer without message-storage-policy 0 or 1', requestId: String(answer.headers['apns-request-id'] ?? ''), attempts: 1 });
		return { id, storagePolicy: policy };
	}

	/** Every channel id of the topic (Apple's page says the body may be empty: then none). */
	async list(): Promise<string[]> {
		const answer = await this.#call('listChannels()', 'GET', 'all-channels', undefined, undefined, [200]);
		const channels = (parseJson(answer.body) as { channels?: unknown } | undefined)?.channels;
		return Array.isArray(channels) ? channels.filter((c): c is string => typeof c === 'string') : [];
	}

	/** Delete a channel (irreversible; broadcasts APNs stored may still be delivered). */
	async delete(id: string): Promise<void> {
		await this.#call('deleteChannel()', 'DELETE', 'channels', id, undefined, [200, 204]);
	}

	/** Let the requests running finish, then close the session. */
	close(): Promise<void> {
		return this.#requester.close();
	}

	/** End the session now; requests running reject with a ClosedError. */
	destroy(): void {
		this.#requester.destroy();
	}

	async #call(operation: string, method: string, resource: string, channelId: string | undefined, body: string | undefined, ok: readonly number[]): Promise<Answered> {
		const requestId = randomUUID();
		const headers: Record<string, string> = { 'apns-request-id': requestId };
		if (channelId !== undefined) headers['apns-channel-id'] = channelId;
		if (body !== undefined) headers['content-type'] = 'application/json';
		const outcome = await this.#requester.call({ method, path: `/1/apps/${encodeURIComponent(this.#topic)}/${resource}`, headers, body }, ok);
		if (outcome.ok) return outcome.answer;
		throw new ChannelError({ operation, status: outcome.status, reason: outcome.reason, requestId, attempts: outcome.attempts, cause: outcome.cause });
	}
}
