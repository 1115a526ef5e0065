/**
 * An app of the daemon: what `PUT /v1/apps/{appId}` takes, how it splits into public settings (stored as
 * they are) and credentials (sealed), the manager options it makes, and the view the API returns — which
 * never holds a secret.
 */
import { createHash } from 'node:crypto';
import { ProviderToken, type ApnsManagerOptions, type CertificateInfo } from '../index.js';

/** The body of `PUT /v1/apps/{appId}`. */
export interface AppInput {
	readonly environment: 'production' | 'sandbox';
	readonly topic?: string;
	readonly token?: { readonly key: string; readonly keyId: string; readonly teamId: string };
	/** PKCS#12, base64. */
	readonly pfx?: string;
	readonly passphrase?: string;
	readonly cert?: string;
	readonly key?: string;
	readonly gateway?: { readonly host: string; readonly port: number };
	/** Live Activity channel management host; defaults to the environment's. */
	readonly channelGateway?: { readonly host: string; readonly port: number };
	readonly ca?: string;
	/** Feedback POSTed to `url`, each delivery signed with `secret` (write-only, sealed with the credentials). */
	readonly webhook?: { readonly url: string; readonly secret: string };
}

/** What of an app is stored in the clear. */
export interface AppSettings {
	readonly environment: 'production' | 'sandbox';
	readonly topic: string | undefined;
	readonly auth: 'token' | 'certificate';
	readonly keyId: string | undefined;
	readonly teamId: string | undefined;
	readonly gateway: { readonly host: string; readonly port: number } | undefined;
	/** Absent in apps stored before channels: the environment's. */
	readonly channelGateway?: { readonly host: string; readonly port: number } | undefined;
	readonly ca: string | undefined;
	/** `signed`: its deliveries carry a signature (apps stored before webhooks were signed do not). */
	readonly webhook: { readonly url: string; readonly signed?: boolean } | undefined;
	/** The certificate's facts (certificate auth), as found when it was provisioned. */
	readonly certificate: { readonly commonName: string | undefined; readonly topic: string | undefined; readonly notBefore: string; readonly notAfter: string; readonly environments: { readonly sandbox: boolean; readonly production: boolean } } | undefined;
}

/** What of an app is sealed. */
export interface AppSecrets {
	readonly tokenKey?: string;
	readonly pfx?: string;
	readonly passphrase?: string;
	readonly cert?: string;
	readonly key?: string;
	/** The webhook's signing secret. */
	readonly webhookSecret?: string;
}

/** Shortest webhook secret: 32 characters (a receiver checks an HMAC-SHA256 with it). */
export const WEBHOOK_SECRET_MIN = 32;

/** PEM text only: a string that is not PEM would be read by the library as a file path. */
const PEM = { type: 'string', minLength: 1, maxLength: 65_536, pattern: '-----BEGIN [A-Z0-9 ]+-----' } as const;

/** A host and port. */
const ADDRESS = {
	type: 'object',
	additionalProperties: false,
	required: ['host', 'port'],
	properties: { host: { type: 'string', minLength: 1, maxLength: 253 }, port: { type: 'integer', minimum: 1, maximum: 65_535 } },
} as const;

/** JSON schema of {@link AppInput} (fastify validates bodies with it: unknown fields are refused). */
export const APP_INPUT_SCHEMA = {
	type: 'object',
	additionalProperties: false,
	required: ['environment'],
	properties: {
		environment: { type: 'string', enum: ['production', 'sandbox'] },
		topic: { type: 'string', minLength: 1, maxLength: 255 },
		token: {
			type: 'object',
			additionalProperties: false,
			required: ['key', 'keyId', 'teamId'],
			properties: { key: PEM, keyId: { type: 'string', pattern: '^[A-Z0-9]{10}$' }, teamId: { type: 'string', pattern: '^[A-Z0-9]{10}$' } },
		},
		pfx: { type: 'string', minLength: 1, maxLength: 262_144, pattern: '^[A-Za-z0-9+/=\\s]+$' },
		passphrase: { type: 'string', maxLength: 1024 },
		cert: PEM,
		key: PEM,
		gateway: ADDRESS,
		channelGateway: ADDRESS,
		ca: PEM,
		webhook: {
			type: 'object',
			additionalProperties: false,
			required: ['url', 'secret'],
			properties: { url: { type: 'string', pattern: '^https?://', maxLength: 2048 }, secret: { type: 'string', minLength: WEBHOOK_SECRET_MIN, maxLength: 256 } },
		},
	},
} as const;

/** A bad app, found beyond what the schema checks: the field and what is wrong. */
export class AppInputError extends Error {
	readonly field: string;
	constructor(field: string, message: string) {
		super(`${field}: ${message}`);
		this.field = field;
	}
}

/** Split an input into what is stored in the clear and what is sealed. @throws {@link AppInputError} */
export function splitInput(input: AppInput): { settings: Omit<AppSettings, 'certificate'>; secrets: AppSecrets } {
	const kinds = [input.token !== undefined, input.pfx !== undefined, input.cert !== undefined || input.key !== undefined].filter(Boolean).length;
	if (kinds === 0) throw new AppInputError('body', 'credentials are required: token, pfx (with passphrase), or cert and key');
	if (kinds > 1) throw new AppInputError('body', 'give one kind of credentials: token, pfx, or cert and key');
	if ((input.cert === undefined) !== (input.key === undefined)) throw new AppInputError(input.cert === undefined ? 'body/cert' : 'body/key', 'cert and key go together');
	if (input.passphrase !== undefined && input.pfx === undefined && input.key === undefined) throw new AppInputError('body/passphrase', 'a passphrase goes with pfx or an encrypted key');
	if (input.token !== undefined && input.topic === undefined) throw new AppInputError('body/topic', 'required with token authentication (the bundle ID)');
	if (input.webhook !== undefined) checkWebhookUrl(input.webhook.url);
	const settings = {
		environment: input.environment,
		topic: input.topic,
		auth: input.token === undefined ? ('certificate' as const) : ('token' as const),
		keyId: input.token?.keyId,
		teamId: input.token?.teamId,
		gateway: input.gateway,
		...(input.channelGateway === undefined ? {} : { channelGateway: input.channelGateway }),
		ca: input.ca,
		webhook: input.webhook === undefined ? undefined : { url: input.webhook.url, signed: true },
	};
	const secrets: AppSecrets = {
		...(input.token === undefined ? {} : { tokenKey: input.token.key }),
		...(input.pfx === undefined ? {} : { pfx: input.pfx }),
		...(input.passphrase === undefined ? {} : { passphrase: input.passphrase }),
		...(input.cert === undefined ? {} : { cert: input.cert }),
		...(input.key === undefined ? {} : { key: input.key }),
		...(input.webhook === undefined ? {} : { webhookSecret: input.webhook.secret }),
	};
	return { settings, secrets };
}

/** A webhook URL: http(s), and no user info (it would be stored, shown and logged in the clear). @throws {@link AppInputError} */
function checkWebhookUrl(text: string): void {
	let url: URL;
	try {
		url = new URL(text);
	} catch {
		throw new AppInputError('body/webhook/url', 'is not a URL');
	}
	if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new AppInputError('body/webhook/url', 'must be http:// or https://');
	if (url.username !== '' || url.password !== '') throw new AppInputError('body/webhook/url', 'must not carry credentials (user:password@): the receiver checks the signature made with webhook.secret instead');
}

/**
 * Provider tokens by team, key ID and key: apps of one team that use the same .p8 key share one token
 * (Apple refuses new tokens for a key more often than every 20 minutes).
 */
export class SharedTokens {
	readonly #tokens = new Map<string, ProviderToken>();

	get(key: string, keyId: string, teamId: string): ProviderToken {
		const id = `${teamId}/${keyId}/${createHash('sha256').update(key).digest('hex')}`;
		let token = this.#tokens.get(id);
		if (token === undefined) {
			token = new ProviderToken({ key: Buffer.from(key), keyId, teamId });
			this.#tokens.set(id, token);
		}
		return token;
	}
}

/**
 * Attempts a notification gets from an app's manager in one round: with the library's retry backoff
 * (1 s, then 2 s, up to half less for jitter) a round rides out a blip of a few seconds. A token that is
 * still answered "not now" (429, 500, 503, no answer) is not failed: the engine hands its unit out again
 * for another round, backed off, until the notification's expiration or `--retry-for` (engine.ts).
 */
export const DAEMON_MAX_ATTEMPTS = 3;

/**
 * The manager options of an app (HTTP/2). Errors from the credentials surface when the manager is made
 * (CredentialsError), which the API turns into a 400.
 */
export function managerOptions(settings: Omit<AppSettings, 'certificate'>, secrets: AppSecrets, tokens: SharedTokens): ApnsManagerOptions {
	return {
		protocol: 'http2',
		environment: settings.environment,
		...(settings.topic === undefined ? {} : { topic: settings.topic }),
		...(settings.gateway === undefined ? {} : { gateway: settings.gateway }),
		...(settings.channelGateway === undefined ? {} : { channelGateway: settings.channelGateway }),
		// As Buffers: never taken for file paths, whatever was stored.
		...(settings.ca === undefined ? {} : { ca: Buffer.from(settings.ca) }),
		...(secrets.tokenKey === undefined ? {} : { token: tokens.get(secrets.tokenKey, settings.keyId!, settings.teamId!) }),
		...(secrets.pfx === undefined ? {} : { pfx: Buffer.from(secrets.pfx, 'base64') }),
		...(secrets.passphrase === undefined ? {} : { passphrase: secrets.passphrase }),
		...(secrets.cert === undefined ? {} : { cert: Buffer.from(secrets.cert) }),
		...(secrets.key === undefined ? {} : { key: Buffer.from(secrets.key) }),
		maxAttempts: DAEMON_MAX_ATTEMPTS,
		// The daemon stores each 410 from its receipt: a buffer kept for getFeedback(), which it never
		// calls, would only grow (to 200,000 records an app).
		maxFeedbackRecords: 0,
		// Outcomes come back through receipts; this only keeps the library from warning that no one listens.
		errorHandler: () => {},
	};
}

/** The certificate facts of a manager, as stored. */
export function certificateFacts(info: CertificateInfo | undefined): AppSettings['certificate'] {
	if (info === undefined) return undefined;
	return { commonName: info.commonName, topic: info.topic, notBefore: info.notBefore.toISOString(), notAfter: info.notAfter.toISOString(), environments: info.environments };
}

/**
 * What the API returns for an app: its settings and state, never a secret. `sending`: it has a manager;
 * `stopped`: why it has none (its credentials do not load); neither: it is starting.
 */
export function appView(
	id: string,
	settings: AppSettings,
	state: {
		createdAt: number;
		updatedAt: number;
		pending: number;
		sending: boolean;
		stopped: string | undefined;
		/** A connection to APNs is open now. */
		connected: boolean;
		/** The last failure that was the app's (a connection refused, a key APNs refuses), not one token's. */
		lastError: { status: number; reason: string; at: string } | undefined;
		/** Age of its oldest notification not yet settled, in s. */
		oldestPendingSeconds: number | undefined;
	},
): Record<string, unknown> {
	return {
		id,
		environment: settings.environment,
		topic: settings.topic ?? settings.certificate?.topic ?? null,
		auth: settings.auth,
		...(settings.auth === 'token' ? { keyId: settings.keyId, teamId: settings.teamId } : {}),
		...(settings.certificate === undefined ? {} : { certificate: settings.certificate }),
		gateway: settings.gateway ?? null,
		channelGateway: settings.channelGateway ?? null,
		webhook: settings.webhook === undefined ? null : { url: settings.webhook.url, signed: settings.webhook.signed === true },
		pending: state.pending,
		oldestPendingSeconds: state.oldestPendingSeconds ?? null,
		connected: state.connected,
		lastError: state.lastError ?? null,
		createdAt: new Date(state.createdAt).toISOString(),
		updatedAt: new Date(state.updatedAt).toISOString(),
		state: state.sending ? 'sending' : state.stopped !== undefined ? 'stopped' : 'starting',
		...(state.stopped === undefined ? {} : { stoppedBecause: state.stopped }),
	};
}

