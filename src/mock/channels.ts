/**
 * The HTTP/2 mock's Live Activity half: channel management (`/1/apps/{bundle}/channels`,
 * `/1/apps/{bundle}/all-channels`) and broadcasts (`/4/broadcasts/apps/{bundle}`), as Apple documents
 * them (docs/protocol/live-activities.md): its own channel table, the channel limit, and Apple's answers
 * to what is wrong with a request. The mock serves them on its one address; point a manager's
 * `channelGateway` (and, for broadcasts, its `gateway`) at it.
 */
import { randomBytes } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http2';

/** A broadcast the mock accepted. */
export interface MockBroadcast {
	readonly channel: string;
	readonly bundle: string;
	readonly pushType: string;
	readonly priority: string;
	readonly expiration: string;
	/** The `apns-request-id` it answered with (the client's, or one it made). */
	readonly requestId: string;
	/** The `apns-unique-id` it answered with. */
	readonly uniqueId: string;
	readonly payload: string;
}

/** A channel in the mock's table. */
export interface MockChannel {
	readonly id: string;
	readonly bundle: string;
	readonly storagePolicy: 0 | 1;
}

/** Apple's limit: channels per app and environment. */
export const MOCK_MAX_CHANNELS = 10_000;
/** Apple's limit on a broadcast's payload, in bytes. */
export const BROADCAST_PAYLOAD_LIMIT = 5120;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** How the mock answers: a status, then a JSON body (or none) and headers. */
export type Answer = (status: number, body: Record<string, unknown> | undefined, headers?: Record<string, string>) => void;

/** The channel table and the broadcasts accepted. */
export class MockChannels {
	readonly #channels = new Map<string, MockChannel>();
	readonly #topics: ReadonlySet<string>;
	readonly #limit: number;
	readonly broadcasts: MockBroadcast[] = [];

	constructor(topics: ReadonlySet<string>, limit = MOCK_MAX_CHANNELS) {
		this.#topics = topics;
		this.#limit = limit;
	}

	/** Every channel, in creation order. */
	get channels(): readonly MockChannel[] {
		return [...this.#channels.values()];
	}

	/** Whether `path` is one of these routes. */
	static handles(path: string): boolean {
		return path.startsWith('/1/apps/') || path.startsWith('/4/broadcasts/apps/');
	}

	/**
	 * Answer a request to one of these routes (already authenticated). `transient` gives the mock's
	 * device-send faults a say for a broadcast (by channel id): a status to answer instead, if any.
	 */
	handle(headers: IncomingHttpHeaders, payload: Buffer, answer: Answer, transient: (channel: string) => [number, string] | undefined): void {
		const method = String(headers[':method'] ?? '');
		const path = String(headers[':path'] ?? '');
		const requestId = typeof headers['apns-request-id'] === 'string' ? headers['apns-request-id'] : undefined;
		if (requestId !== undefined && !UUID.test(requestId)) return answer(400, { reason: 'BadMessageId' });
		const base: Record<string, string> = requestId === undefined ? {} : { 'apns-request-id': requestId };
		const reply: Answer = (status, body, more = {}) => answer(status, body, { ...base, ...more });
		const m = /^\/(1\/apps|4\/broadcasts\/apps)\/([^/]+)(\/channels|\/all-channels)?$/.exec(path);
		if (m === null) return reply(404, { reason: 'BadPath' });
		const bundle = decodeURIComponent(m[2]!);
		if (bundle.includes('.push-type.')) return reply(400, { reason: 'TopicDisallowed' });
		if (!this.#topics.has(bundle)) return reply(403, { reason: 'TopicMismatch' });
		if (m[1] === '4/broadcasts/apps') {
			if (m[3] !== undefined) return reply(404, { reason: 'BadPath' });
			if (method !== 'POST') return reply(405, { reason: 'MethodNotAllowed' });
			return this.#broadcast(bundle, headers, payload, reply, requestId, transient);
		}
		if (m[3] === '/all-channels') {
			if (method !== 'GET') return reply(405, { reason: 'MethodNotAllowed' });
			return reply(200, { channels: this.channels.filter((c) => c.bundle === bundle).map((c) => c.id) });
		}
		if (m[3] !== '/channels') return reply(404, { reason: 'BadPath' });
		if (method === 'POST') return this.#create(bundle, payload, reply);
		if (method !== 'GET' && method !== 'DELETE') return reply(405, { reason: 'MethodNotAllowed' });
		const found = this.#find(bundle, headers, reply);
		if (found === undefined) return;
		if (method === 'GET') return reply(200, { 'message-storage-policy': found.storagePolicy, 'push-type': 'LiveActivity' });
		this.#channels.delete(found.id);
		return reply(204, undefined);
	}

	#create(bundle: string, payload: Buffer, reply: Answer): void {
		let body: unknown;
		try {
			body = JSON.parse(payload.toString('utf8'));
		} catch {
			return reply(400, { reason: 'BadRequestPayload' });
		}
		if (typeof body !== 'object' || body === null || Array.isArray(body)) return reply(400, { reason: 'BadRequestPayload' });
		const fields = body as Record<string, unknown>;
		if (Object.keys(fields).some((k) => k !== 'message-storage-policy' && k !== 'push-type')) return reply(400, { reason: 'BadRequestParams' });
		if (fields['push-type'] === undefined) return reply(400, { reason: 'MissingPushType' });
		if (typeof fields['push-type'] !== 'string' || fields['push-type'].toLowerCase() !== 'liveactivity') return reply(400, { reason: 'InvalidPushType' });
		const policy = fields['message-storage-policy'];
		if (policy !== 0 && policy !== 1) return reply(400, { reason: 'BadRequestParams' });
		if (this.channels.filter((c) => c.bundle === bundle).length >= this.#limit) return reply(400, { reason: 'CannotCreateChannelConfig' });
		const id = randomBytes(16).toString('base64');
		this.#channels.set(id, { id, bundle, storagePolicy: policy });
		return reply(201, undefined, { 'apns-channel-id': id });
	}

	/** The channel named by the request's `apns-channel-id`, or undefined once the error is answered. */
	#find(bundle: string, headers: IncomingHttpHeaders, reply: Answer): MockChannel | undefined {
		const id = headers['apns-channel-id'];
		if (typeof id !== 'string' || id.length === 0) {
			reply(400, { reason: 'MissingChannelId' });
			return undefined;
		}
		if (!BASE64.test(id) || id.length > 256) {
			reply(400, { reason: 'BadChannelId' });
			return undefined;
		}
		const found = this.#channels.get(id);
		if (found === undefined || found.bundle !== bundle) {
			reply(400, { reason: 'ChannelNotRegistered' });
			return undefined;
		}
		return found;
	}

	#broadcast(bundle: string, headers: IncomingHttpHeaders, payload: Buffer, reply: Answer, requestId: string | undefined, transient: (channel: string) => [number, string] | undefined): void {
		const pushType = headers['apns-push-type'];
		if (typeof pushType !== 'string') return reply(400, { reason: 'MissingPushType' });
		if (pushType.toLowerCase() !== 'liveactivity') return reply(400, { reason: 'InvalidPushType' });
		const channel = this.#find(bundle, headers, reply);
		if (channel === undefined) return;
		const priority = headers['apns-priority'];
		if (typeof priority !== 'string' || !['1', '5', '10'].includes(priority)) return reply(400, { reason: 'BadPriority' });
		const expiration = headers['apns-expiration'];
		if (typeof expiration !== 'string' || !/^\d+$/.test(expiration)) return reply(400, { reason: 'BadExpirationDate' });
		// A channel that stores nothing takes only 0.
		if (channel.storagePolicy === 0 && expiration !== '0') return reply(400, { reason: 'BadExpirationDate' });
		if (payload.length === 0) return reply(400, { reason: 'PayloadEmpty' });
		if (payload.length > BROADCAST_PAYLOAD_LIMIT) return reply(413, { reason: 'PayloadTooLarge' });
		const fault = transient(channel.id);
		if (fault !== undefined) return reply(fault[0], { reason: fault[1] });
		const uniqueId = randomBytes(16).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
		const request = requestId ?? randomBytes(16).toString('hex').replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, '$1-$2-$3-$4-$5');
		this.broadcasts.push({ channel: channel.id, bundle, pushType, priority, expiration, requestId: request, uniqueId, payload: payload.toString('utf8') });
		return reply(200, undefined, { 'apns-request-id': request, 'apns-unique-id': uniqueId });
	}
}
