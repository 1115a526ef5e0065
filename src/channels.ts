/**
 * Channel management for Live Activity broadcasts (iOS 18): create, read, list and delete the channels of
 * a manager's topic on APNs' channel management host, which is not the host notifications go to
 * (docs/protocol/live-activities.md §1–2). One HTTP/2 session, opened on first use, kept while requests
 * run and let go of (unref'd) between them; each request is retried on 429, 500, 503 and on no answer
 * with the manager's `retry` backoff (honouring `retry-after`), up to `maxAttempts`, then rejected with a
 * {@link ChannelError} carrying APNs' status and reason.
 */
import { randomUUID } from 'node:crypto';
import http2 from 'node:http2';
import { connectTls, type TlsTarget } from './credentials.js';
import { backoffDelay } from './drivers/backoff.js';
import { ChannelError, ClosedError, InvalidArgumentError } from './errors.js';
import type { ReconnectOptions } from './options.js';
import { describeHttpStatus } from './protocol/http2.js';
import type { ProviderToken } from './provider-token.js';

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

/** What the client needs from its manager. */
export interface ChannelSetup {
	readonly target: TlsTarget;
	readonly token: ProviderToken | undefined;
	/** The bundle ID (the manager's topic, without a push-type suffix). */
	readonly topic: string;
	readonly retry: Required<ReconnectOptions>;
	readonly maxAttempts: number;
	readonly connectTimeoutMs: number;
	readonly requestTimeoutMs: number;
}

interface Answered {
	readonly status: number;
	readonly headers: http2.IncomingHttpHeaders;
	readonly body: Buffer;
}

/** What a channel id must look like before it goes into a header: base64, as APNs makes them. */
const CHANNEL_ID = /^[A-Za-z0-9+/]+={0,2}$/;

/** Statuses that say "try again later". */
const RETRY = new Set([429, 500, 503]);

/** Check a channel id given by the caller. */
export function checkChannelId(name: string, id: unknown): string {
	if (typeof id !== 'string' || !CHANNEL_ID.test(id) || id.length > 1024) throw new InvalidArgumentError(name, 'a channel id: base64, as createChannel() returned it', id);
	return id;
}

/** The channel management client of one manager. */
export class ChannelClient {
	readonly #setup: ChannelSetup;
	#session: http2.ClientHttp2Session | undefined;
	#connecting: Promise<http2.ClientHttp2Session> | undefined;
	#running = 0;
	readonly #waiting = new Set<() => void>();
	readonly #sleeps = new Set<{ timer: NodeJS.Timeout; reject: (error: Error) => void }>();
	#state: 'open' | 'closing' | 'closed' = 'open';

	constructor(setup: ChannelSetup) {
		this.#setup = setup;
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

	/** Let the requests running finish (each is bounded by its attempts), then close the session. */
	async close(): Promise<void> {
		if (this.#state !== 'open') return;
		this.#state = 'closing';
		// No new attempt after a backoff: a request waiting for one ends now.
		for (const s of this.#sleeps) {
			clearTimeout(s.timer);
			s.reject(new ClosedError('The manager closed while a channel request waited to be tried again'));
		}
		this.#sleeps.clear();
		while (this.#running > 0) await new Promise<void>((resolve) => this.#waiting.add(resolve));
		this.#state = 'closed';
		this.#session?.close();
		this.#session = undefined;
	}

	/** End the session now; requests running reject with {@link ClosedError}. */
	destroy(): void {
		this.#state = 'closed';
		for (const s of this.#sleeps) {
			clearTimeout(s.timer);
			s.reject(new ClosedError());
		}
		this.#sleeps.clear();
		this.#session?.destroy();
		this.#session = undefined;
	}

	async #call(operation: string, method: string, resource: string, channelId: string | undefined, body: string | undefined, ok: readonly number[]): Promise<Answered> {
		if (this.#state !== 'open') throw new ClosedError();
		const requestId = randomUUID();
		this.#running++;
		try {
			for (let attempt = 1; ; attempt++) {
				let status = 0;
				let reason: string;
				let retryAfterMs = 0;
				let cause: unknown;
				try {
					const answer = await this.#request(method, resource, channelId, body, requestId);
					if (ok.includes(answer.status)) return answer;
					status = answer.status;
					reason = (parseJson(answer.body) as { reason?: unknown } | undefined)?.reason as string | undefined ?? describeHttpStatus(status);
					const after = Number(answer.headers['retry-after']);
					if (Number.isFinite(after) && after >= 0) retryAfterMs = Math.min(after * 1000, this.#setup.retry.maxDelayMs);
				} catch (error) {
					if (error instanceof ClosedError) throw error;
					cause = error;
					reason = error instanceof RequestTimeout ? 'RequestTimeout' : 'ConnectionLost';
				}
				const expiredToken = status === 403 && reason === 'ExpiredProviderToken' && this.#setup.token !== undefined;
				if (expiredToken) this.#setup.token!.expired();
				const again = status === 0 || RETRY.has(status) || expiredToken;
				if (!again || attempt >= this.#setup.maxAttempts || this.#state !== 'open') {
					throw new ChannelError({ operation, status, reason, requestId, attempts: attempt, cause });
				}
				await this.#sleep(Math.max(backoffDelay(attempt, this.#setup.retry), retryAfterMs));
			}
		} finally {
			if (--this.#running === 0) {
				this.#session?.unref();
				for (const resolve of this.#waiting) resolve();
				this.#waiting.clear();
			}
		}
	}

	#sleep(ms: number): Promise<void> {
		return new Promise<void>((resolve, reject) => {
			const entry = {
				timer: setTimeout(() => {
					this.#sleeps.delete(entry);
					resolve();
				}, ms),
				reject,
			};
			this.#sleeps.add(entry);
		});
	}

	/** One request on the session (opened if need be), answered or not within `requestTimeoutMs`. */
	async #request(method: string, resource: string, channelId: string | undefined, body: string | undefined, requestId: string): Promise<Answered> {
		const session = await this.#open();
		session.ref();
		const { token, topic, requestTimeoutMs } = this.#setup;
		const headers: http2.OutgoingHttpHeaders & { [key: symbol]: readonly string[] } = {
			':method': method,
			':path': `/1/apps/${encodeURIComponent(topic)}/${resource}`,
			'apns-request-id': requestId,
		};
		if (channelId !== undefined) headers['apns-channel-id'] = channelId;
		if (body !== undefined) headers['content-type'] = 'application/json';
		if (token !== undefined) headers['authorization'] = `bearer ${token.current()}`;
		headers[http2.sensitiveHeaders] = ['authorization'];
		return new Promise<Answered>((resolve, reject) => {
			const stream = session.request(headers, { endStream: body === undefined });
			let status = 0;
			let answerHeaders: http2.IncomingHttpHeaders = {};
			const chunks: Buffer[] = [];
			const timer = setTimeout(() => {
				stream.close(http2.constants.NGHTTP2_CANCEL);
				reject(new RequestTimeout(`No answer within ${requestTimeoutMs} ms (requestTimeoutMs)`));
			}, requestTimeoutMs);
			stream.on('response', (h) => {
				status = Number(h[':status']);
				answerHeaders = h;
			});
			stream.on('data', (c: Buffer) => chunks.push(c));
			stream.on('error', () => {}); // 'close' decides
			stream.on('close', () => {
				clearTimeout(timer);
				if (status === 0) reject(this.#state === 'closed' ? new ClosedError() : new Error(`The stream closed without an answer (${stream.rstCode ?? 'no code'})`));
				else resolve({ status, headers: answerHeaders, body: Buffer.concat(chunks) });
			});
			if (body !== undefined) stream.end(body);
		});
	}

	/** The session, connected (one connect at a time; a failed one is not kept). */
	#open(): Promise<http2.ClientHttp2Session> {
		if (this.#session !== undefined && !this.#session.closed && !this.#session.destroyed) return Promise.resolve(this.#session);
		this.#connecting ??= new Promise<http2.ClientHttp2Session>((resolve, reject) => {
			const { target, connectTimeoutMs } = this.#setup;
			const session = http2.connect(`https://${target.host}:${target.port}`, { createConnection: () => connectTls(target, { ALPNProtocols: ['h2'] }) });
			const timer = setTimeout(() => session.destroy(new Error(`No connection within ${connectTimeoutMs} ms (connectTimeoutMs)`)), connectTimeoutMs);
			const gone = (): void => {
				if (this.#session === session) this.#session = undefined;
			};
			session.once('connect', () => {
				clearTimeout(timer);
				this.#session = session;
				this.#connecting = undefined;
				resolve(session);
			});
			session.on('error', (error: Error) => {
				clearTimeout(timer);
				gone();
				if (this.#connecting !== undefined && this.#session !== session) {
					this.#connecting = undefined;
					reject(error);
				}
			});
			session.on('goaway', gone);
			session.on('close', () => {
				clearTimeout(timer);
				gone();
				if (this.#connecting !== undefined && this.#session !== session) {
					this.#connecting = undefined;
					reject(new Error('The connection closed before it was ready'));
				}
			});
		});
		return this.#connecting;
	}
}

/** A request not answered in time (retried like any unanswered request). */
class RequestTimeout extends Error {}

function parseJson(body: Buffer): unknown {
	if (body.length === 0) return undefined;
	try {
		return JSON.parse(body.toString('utf8')) as unknown;
	} catch {
		return undefined;
	}
}
