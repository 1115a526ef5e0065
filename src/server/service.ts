/**
 * What the HTTP API (api.ts) needs of the daemon ({@link PushService}, which the engine implements), and
 * the pieces of its answers: a notification entry checked as the manager will check it, an app's input
 * turned into settings, sealed credentials and a working manager, the views the API returns, and the
 * defaults of `serve`.
 */
import type { Logger } from 'pino';
import { ApnsManager, InvalidArgumentError, ServerError } from '../index.js';
import { Message } from '../message.js';
import { checkHttp2Message } from '../protocol/http2.js';
import { checkChannelId } from '../channels.js';
import { MAX_BROADCAST_PAYLOAD_BYTES } from '../broadcasts.js';
import { certificateFacts, managerOptions, splitInput, type AppInput, type AppSecrets, type AppSettings, type SharedTokens } from './apps.js';
import type { Metrics } from './metrics.js';
import type { SecretBox } from './secrets.js';
import type { KeyScope } from './store.js';

/**
 * The defaults of `serve`, whatever it stores in: where the API listens, how long settled outcomes,
 * idempotency answers and unread feedback are kept, how long a graceful shutdown may flush; the embedded
 * store's directory; with Redis, a job's lock and how many jobs a daemon works at once.
 */
export const SERVE_DEFAULTS = { host: '127.0.0.1', port: 7077, dataDir: './apns-worker-data', retentionMs: 7 * 24 * 3_600_000, retryForMs: 24 * 3_600_000, shutdownTimeoutMs: 10_000, lockMs: 30_000, concurrency: 16 } as const;

/** A request the daemon refuses: the HTTP status, a stable code, and the field at fault. */
export class RequestError extends Error {
	readonly status: number;
	readonly code: string;
	readonly field: string | undefined;
	constructor(status: number, code: string, message: string, field?: string) {
		super(message);
		this.status = status;
		this.code = code;
		this.field = field;
	}
}

/** The body of `POST /v1/apps/{appId}/notifications`, one entry. */
export interface NotificationInput {
	readonly tokens: readonly string[];
	readonly aps?: Record<string, unknown>;
	readonly payload?: Record<string, unknown>;
	readonly pushType?: string;
	readonly priority?: number;
	readonly expiration?: number;
	readonly collapseId?: string;
	readonly topic?: string;
}

/** What is stored of a notification entry: the payload and the message options (`channel`: a broadcast). */
export interface StoredBody {
	readonly payload: Record<string, unknown>;
	readonly options: { pushType?: string; priority?: number; expiration?: number; collapseId?: string; topic?: string; channel?: string };
}

/** The body of `POST /v1/apps/{appId}/broadcasts`. */
export interface BroadcastInput {
	readonly channelId: string;
	readonly aps?: Record<string, unknown>;
	readonly payload?: Record<string, unknown>;
	readonly expiration?: number;
	readonly priority?: 1 | 5 | 10;
}

/**
 * A broadcast is stored as a notification to this one placeholder token, its channel in the body: the
 * stores' units, leases, rounds and outcomes serve it unchanged.
 */
export const BROADCAST_TOKEN = Buffer.alloc(32);

/** The stored body of a broadcast, checked as the manager will check it. */
export function broadcastBody(b: BroadcastInput): StoredBody {
	if (b.aps === undefined && b.payload === undefined) throw new RequestError(400, 'invalid_broadcast', 'body: aps or payload is required', 'body/aps');
	if (b.aps !== undefined && b.payload?.['aps'] !== undefined) throw new RequestError(400, 'invalid_broadcast', 'body/payload/aps: give aps once (as aps, or inside payload)', 'body/payload/aps');
	const payload = { ...b.payload, ...(b.aps === undefined ? {} : { aps: b.aps }) };
	try {
		checkChannelId('channelId', b.channelId);
	} catch {
		throw new RequestError(400, 'invalid_broadcast', `body/channelId: expected a channel id in base64, as POST …/channels returned it`, 'body/channelId');
	}
	const bytes = Buffer.byteLength(JSON.stringify(payload));
	if (bytes > MAX_BROADCAST_PAYLOAD_BYTES) throw new RequestError(400, 'invalid_broadcast', `body/payload: ${bytes} bytes of JSON, over Apple's ${MAX_BROADCAST_PAYLOAD_BYTES} for a broadcast`, 'body/payload');
	return { payload, options: { channel: b.channelId, ...(b.expiration === undefined ? {} : { expiration: b.expiration }), ...(b.priority === undefined ? {} : { priority: b.priority }) } };
}

/** A notification's outcome so far, as `GET …/notifications/{id}` answers it. */
export interface NotificationView {
	readonly id: string;
	readonly pending: number;
	readonly sent: number;
	readonly failed: ReadonlyArray<{ token: string; status: number; reason: string }>;
}

/** A page of feedback, as `GET …/feedback` answers it. */
export interface FeedbackPage {
	readonly feedback: Array<{ token: string; when: string; reason: string }>;
	readonly next: number;
}

/** The operations behind the `/v1` routes (a result or a promise of one; refusals are {@link RequestError}s). */
export interface PushService {
	readonly log: Logger;
	readonly metrics: Metrics;
	readonly apiKey: string;
	/** Shutting down: `/v1` answers 503. */
	readonly closing: boolean;
	/** Why the storage cannot be used now (`/v1` answers 503 with it), or undefined when it can. */
	readonly unavailable: string | undefined;
	putApp(id: string, input: AppInput): Promise<Record<string, unknown>>;
	getApp(id: string): Record<string, unknown> | Promise<Record<string, unknown>>;
	listApps(): Array<Record<string, unknown>> | Promise<Array<Record<string, unknown>>>;
	deleteApp(id: string): Promise<{ dropped: number }>;
	/** `idempotency`: the request's Idempotency-Key and a digest of its body. */
	accept(id: string, notifications: readonly NotificationInput[], idempotency: { readonly key: string; readonly fingerprint: string } | undefined): { status: number; body: unknown } | Promise<{ status: number; body: unknown }>;
	status(id: string, notificationId: string): NotificationView | Promise<NotificationView>;
	feedback(id: string, after: number, limit: number): FeedbackPage | Promise<FeedbackPage>;
	ackFeedback(id: string, upTo: number): Promise<{ acknowledged: number }>;
	/** Accept a broadcast (stored durably, sent like a notification): 202 `{ id }`. */
	broadcast(id: string, input: BroadcastInput, idempotency: { readonly key: string; readonly fingerprint: string } | undefined): Promise<{ status: number; body: unknown }>;
	/** What became of a broadcast. */
	broadcastStatus(id: string, broadcastId: string): Promise<{ id: string; pending: number; sent: number; failed: Array<{ status: number; reason: string }> }>;
	/** Live Activity channels of app `id`, through its manager (APNs' channel management): nothing is stored. */
	createChannel(id: string, storagePolicy: 0 | 1): Promise<{ channelId: string; storagePolicy: 0 | 1 }>;
	listChannels(id: string): Promise<{ channels: string[] }>;
	getChannel(id: string, channelId: string): Promise<{ channelId: string; storagePolicy: 0 | 1 }>;
	deleteChannel(id: string, channelId: string): Promise<{ deleted: string }>;
	/** The scoped key `key` is (not the admin key: the API checks that itself), or undefined. */
	keyFor(key: string): Promise<ScopedKey | undefined>;
	createKey(apps: readonly string[], scopes: readonly KeyScope[]): Promise<KeyView & { key: string }>;
	listKeys(): Promise<KeyView[]>;
	deleteKey(id: string): Promise<{ deleted: string }>;
}

/** What a scoped key may do. */
export interface ScopedKey {
	readonly id: string;
	readonly apps: ReadonlySet<string>;
	readonly scopes: ReadonlySet<KeyScope>;
}

/** A scoped key as the API shows it: never the key, nor its hash. */
export interface KeyView {
	readonly id: string;
	readonly apps: readonly string[];
	readonly scopes: readonly KeyScope[];
	readonly createdAt: string;
}

/** A notification's outcome as the API answers it (pending is never below 0, whatever the counts). */
export function notificationView(id: string, counts: { total: number; sent: number; failed: number }, failures: NotificationView['failed']): NotificationView {
	return { id, pending: Math.max(0, counts.total - counts.sent - counts.failed), sent: counts.sent, failed: failures };
}

/** A page of feedback records as the API answers it: `next` is the last record's number, or `after` when there is none. */
export function feedbackPage(records: ReadonlyArray<{ seq: number; token: string; when: number; reason: string }>, after: number): FeedbackPage {
	return { feedback: records.map((r) => ({ token: r.token, when: new Date(r.when).toISOString(), reason: r.reason })), next: records.length > 0 ? records[records.length - 1]!.seq : after };
}

/** The stored body of one notification entry, checked as the manager will check it. */
export function storedBody(n: NotificationInput, i: number): StoredBody {
	const at = `body/notifications/${i}`;
	if (n.aps === undefined && n.payload === undefined) throw new RequestError(400, 'invalid_notification', `${at}: aps or payload is required`, at);
	if (n.aps !== undefined && n.payload?.['aps'] !== undefined) throw new RequestError(400, 'invalid_notification', `${at}/payload/aps: give aps once (as aps, or inside payload)`, `${at}/payload/aps`);
	const payload = { ...n.payload, ...(n.aps === undefined ? {} : { aps: n.aps }) };
	const options = {
		...(n.pushType === undefined ? {} : { pushType: n.pushType }),
		...(n.priority === undefined ? {} : { priority: n.priority }),
		...(n.expiration === undefined ? {} : { expiration: n.expiration }),
		...(n.collapseId === undefined ? {} : { collapseId: n.collapseId }),
		...(n.topic === undefined ? {} : { topic: n.topic }),
	};
	try {
		// One token is enough to check the payload and options (the schema checked every token).
		checkHttp2Message(new Message(n.tokens[0]!, payload, options as ConstructorParameters<typeof Message>[2]), 'payload');
	} catch (error) {
		if (!(error instanceof InvalidArgumentError)) throw error;
		const field = `${at}/${error.argument.replace(/^options\./, '')}`;
		throw new RequestError(400, 'invalid_notification', `${at}: ${error.message}`, field);
	}
	return { payload, options };
}

/** One message of a stored body to `tokens` (hex). */
export function storedMessage(tokens: string[], body: StoredBody): Message {
	return new Message(tokens, body.payload, body.options as ConstructorParameters<typeof Message>[2]);
}

/** An app input made ready to store: its settings, its sealed credentials, and a manager that loaded them. */
export interface PreparedApp {
	readonly settings: AppSettings;
	readonly sealed: string | undefined;
	readonly manager: ApnsManager;
}

/**
 * Check an app's input by making its manager (the credentials load, or a 400 names the field), and seal
 * its credentials with `box` (403 when there is none to seal them with).
 */
export function prepareApp(id: string, input: AppInput, box: SecretBox | undefined, tokens: SharedTokens): PreparedApp {
	let split: ReturnType<typeof splitInput>;
	try {
		split = splitInput(input);
	} catch (error) {
		throw new RequestError(400, 'invalid_app', (error as Error).message, (error as { field?: string }).field);
	}
	const hasSecrets = Object.keys(split.secrets).length > 0;
	if (hasSecrets && box === undefined) throw new RequestError(403, 'no_secret', 'this daemon stores no credentials: start it with APNS_WORKER_SECRET set (or, knowingly, with --insecure-plaintext-secrets)');
	let manager: ApnsManager;
	try {
		manager = new ApnsManager(managerOptions(split.settings, split.secrets, tokens));
	} catch (error) {
		const field = error instanceof InvalidArgumentError ? `body/${error.argument.replace(/^options\./, '')}` : credentialField(split.secrets);
		throw new RequestError(400, 'invalid_credentials', (error as Error).message, field);
	}
	const settings: AppSettings = { ...split.settings, certificate: certificateFacts(manager.certificate) };
	return { settings, sealed: hasSecrets ? box!.seal(JSON.stringify(split.secrets), id) : undefined, manager };
}

/** A stored app's manager: its credentials opened with `box`. @throws when they cannot be (the app stays stopped). */
export function openApp(id: string, settings: AppSettings, sealed: string | undefined, box: SecretBox | undefined, tokens: SharedTokens, log: Logger): ApnsManager {
	return watched(id, new ApnsManager(managerOptions(settings, openSecrets(id, sealed, box), tokens)), log);
}

/** A stored app's sealed secrets, opened with `box`. @throws when they cannot be. */
export function openSecrets(id: string, sealed: string | undefined, box: SecretBox | undefined): AppSecrets {
	if (sealed === undefined) return {};
	if (box === undefined) throw new ServerError('APNS_SERVER_SECRET', 'stored credentials cannot be opened without APNS_WORKER_SECRET');
	return JSON.parse(box.open(sealed, id)) as AppSecrets;
}

/** Log what a manager reports that no receipt carries (it cannot reach APNs). */
export function watched(id: string, manager: ApnsManager, log: Logger): ApnsManager {
	manager.on('connectError', (error, info) => log.warn({ app: id, attempt: info.attempt, retryInMs: info.retryInMs, err: { message: error.message } }, 'cannot reach APNs'));
	return manager;
}

/** Which field a credentials error is about. */
function credentialField(secrets: AppSecrets): string {
	if (secrets.tokenKey !== undefined) return 'body/token/key';
	if (secrets.pfx !== undefined) return 'body/pfx';
	return 'body/cert';
}
