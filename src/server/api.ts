/**
 * The daemon's HTTP API (fastify): JSON schemas validate every body, parameter and query — unknown
 * fields and wrong types are refused, never coerced or dropped — and every refusal is a 4xx whose body
 * names the field: `{ error, message, field }`. `/v1` routes need `Authorization: Bearer <key>`;
 * `/metrics`, `/healthz` and `/openapi.json` do not. While the daemon shuts down, `/v1` answers 503.
 *
 * A stranger gets no work done: an unknown route is answered 404 and a request without the key 401
 * before a byte of its body is read; bodies are limited per route and JSON nested deeper than
 * {@link MAX_JSON_DEPTH} is refused before it is parsed.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { STATUS_CODES } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { APP_INPUT_SCHEMA, type AppInput } from './apps.js';
import { RequestError, type BroadcastInput, type NotificationInput, type PushService } from './service.js';
import type { KeyScope } from './store.js';

/** Largest request body per route, in bytes (413 past it): a batch of notifications, an app, anything else. */
export const BODY_LIMITS = { notifications: 8 * 1024 * 1024, app: 256 * 1024, other: 16 * 1024 } as const;
/** JSON nested deeper than this (objects and arrays) is refused (400) before it is parsed. */
export const MAX_JSON_DEPTH = 32;
/** Tokens in one notification entry, and entries in one request. */
export const MAX_TOKENS_PER_NOTIFICATION = 10_000;
export const MAX_NOTIFICATIONS_PER_REQUEST = 1000;

// Not `.` or `..`: a client that normalises paths could never reach such an app.
const APP_ID = { type: 'string', pattern: '^(?!\\.\\.?$)[A-Za-z0-9._-]{1,64}$' } as const;
const APP_PARAMS = { type: 'object', additionalProperties: false, required: ['appId'], properties: { appId: APP_ID } } as const;
/** A channel id in a path: base64url (RFC 4648 §5: `-` and `_` for `+` and `/`), or base64 percent-encoded (the router decodes it). */
const CHANNEL_PARAMS = { type: 'object', additionalProperties: false, required: ['appId', 'channelId'], properties: { appId: APP_ID, channelId: { type: 'string', pattern: '^[A-Za-z0-9+/_-]+={0,2}$', maxLength: 1024 } } } as const;

/** The request's Idempotency-Key and what it answers for: the same key with another body is refused (422), not answered as the first. */
function idempotencyOf(request: FastifyRequest): { key: string; fingerprint: string } | undefined {
	const key = idempotencyKey(request.raw.rawHeaders);
	return key === undefined ? undefined : { key, fingerprint: createHash('sha256').update(JSON.stringify(request.body)).digest('base64url') };
}

/** A route on one channel: `call` gets the app id and the channel id APNs made (standard base64, from its form in the path). */
function channelRoute(method: 'GET' | 'DELETE', summary: string, access: KeyScope, call: (appId: string, channelId: string) => Promise<unknown>): Route {
	return {
		method,
		url: '/v1/apps/:appId/channels/:channelId',
		summary: `${summary}; the id in the path is base64url (or percent-encoded base64)`,
		access,
		schema: { params: CHANNEL_PARAMS },
		handler: (request) => {
			const { appId, channelId } = request.params as { appId: string; channelId: string };
			return call(appId, channelId.replace(/-/g, '+').replace(/_/g, '/'));
		},
	};
}

const NOTIFICATIONS_SCHEMA = {
	type: 'object',
	additionalProperties: false,
	required: ['notifications'],
	properties: {
		notifications: {
			type: 'array',
			minItems: 1,
			maxItems: MAX_NOTIFICATIONS_PER_REQUEST,
			items: {
				type: 'object',
				additionalProperties: false,
				required: ['tokens'],
				properties: {
					tokens: { type: 'array', minItems: 1, maxItems: MAX_TOKENS_PER_NOTIFICATION, items: { type: 'string', pattern: '^[0-9a-fA-F]{64}$' } },
					aps: { type: 'object' },
					payload: { type: 'object' },
					pushType: { type: 'string', minLength: 1, maxLength: 64 },
					priority: { type: 'integer', enum: [1, 5, 10] },
					expiration: { type: 'integer', minimum: 0, description: 'UNIX seconds: APNs stores it until then (0: not at all). Not sent after then; "not now" answers are retried until then or --retry-for, whichever is first; then failed (reason Expired when APNs never answered)' },
					collapseId: { type: 'string', minLength: 1, maxLength: 64 },
					topic: { type: 'string', minLength: 1, maxLength: 255 },
				},
			},
		},
	},
} as const;

interface Route {
	readonly method: 'GET' | 'PUT' | 'POST' | 'DELETE';
	readonly url: string;
	readonly summary: string;
	/**
	 * Who may call it: `'public'` (no key), `'admin'` (the configured API key only), or a scope a scoped
	 * key must have (and the route's app must be one of its apps).
	 */
	readonly access: 'public' | 'admin' | KeyScope;
	/** Largest body (413 past it); routes without a body take {@link BODY_LIMITS}.other. */
	readonly bodyLimit?: number;
	readonly schema: { params?: object; body?: object; querystring?: object; headers?: object };
	readonly handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown> | unknown;
}

/** Build the API of `daemon` (not listening yet); with `tls` (PEM), over HTTPS only. */
export function buildApi(daemon: PushService, tls?: { readonly key: string | Buffer; readonly cert: string | Buffer }): FastifyInstance {
	const app = Fastify({
		...(tls === undefined ? {} : { https: { key: tls.key, cert: tls.cert } }),
		loggerInstance: daemon.log as FastifyBaseLogger,
		// Request lines are left out: the metrics have the latency, and the log stays about the pushes.
		logController: new LogController({ disableRequestLogging: true }),
		bodyLimit: BODY_LIMITS.other,
		// Every wait bounded: a request that has not arrived whole in a minute is dropped, and closing the
		// API does not wait for idle keep-alive connections.
		requestTimeout: 60_000,
		forceCloseConnections: true,
		// No HEAD twin of every GET: it would run the handler (a feedback page marks records handed out) and show nothing.
		exposeHeadRoutes: false,
		// Refuse what does not fit the schema: no silent removal of unknown fields, no type coercion.
		ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
		// What Node refuses before a route is known (headers over 16 KiB: 431) has the API's error shape too.
		clientErrorHandler: clientError,
	}) as unknown as FastifyInstance;
	const expected = digest(daemon.apiKey);

	// JSON only (anything else is 415), its nesting bounded before it is parsed, `__proto__` refused by name.
	app.removeAllContentTypeParsers();
	app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
		try {
			done(null, parseJson(body as string));
		} catch (error) {
			done(error as Error, undefined);
		}
	});

	app.addHook('onRequest', async (request, reply) => {
		// By the route matched, never by the raw URL: the router decodes it (/%761/apps is /v1/apps).
		const route = request.routeOptions.url;
		// Unknown: answered before its body is read (fastify would parse it for the 404 handler).
		if (route === undefined) return reply.code(404).send(notFound(request.method, request.url));
		// Open without the key: cheap, and none reads a body.
		const access = (request.routeOptions.config as { access?: Route['access'] }).access;
		if (access === 'public') return undefined;
		if (daemon.closing) return reply.code(503).header('retry-after', '5').send({ error: 'shutting_down', message: 'the daemon is shutting down; retry on its next start', field: 'request' });
		// RFC 9110: the scheme is case-insensitive.
		const given = /^bearer[ \t]+(\S+)[ \t]*$/i.exec(request.headers.authorization ?? '')?.[1];
		const unauthorized = (): FastifyReply => reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'Authorization: Bearer <API key> is required', field: 'headers/authorization' });
		if (given === undefined) return unauthorized();
		if (!timingSafeEqual(digest(given), expected)) {
			// Not the admin key: a scoped key may do what its scopes allow, for its apps only, and never manage.
			const key = await daemon.keyFor(given);
			if (key === undefined) return unauthorized();
			const appId = (request.params as { appId?: string } | undefined)?.appId;
			if (access === undefined || access === 'admin' || !key.scopes.has(access) || appId === undefined || !key.apps.has(appId)) {
				return reply.code(403).send({ error: 'forbidden', message: access === 'admin' ? `key ${key.id} is scoped: only the admin key manages apps and keys` : `key ${key.id} may not ${access ?? 'do this'} for app ${appId ?? '(none)'}`, field: 'headers/authorization' });
			}
		}
		// Nothing is accepted that could not be stored (the shared Redis is gone): the client retries.
		const unavailable = daemon.unavailable;
		if (unavailable !== undefined) return reply.code(503).header('retry-after', '1').send({ error: 'storage_unavailable', message: unavailable, field: 'request' });
		return undefined;
	});
	app.addHook('onResponse', async (request, reply) => {
		daemon.metrics.requestSeconds.observe({ method: request.method, route: request.routeOptions.url ?? 'unmatched', status: String(reply.statusCode) }, reply.elapsedTime / 1000);
	});
	app.setErrorHandler((error: Error & { validation?: Array<{ instancePath: string; keyword: string; params: Record<string, unknown>; message?: string }>; validationContext?: string; statusCode?: number; code?: string }, request, reply) => {
		if (error instanceof RequestError) return reply.code(error.status).send({ error: error.code, message: error.message, ...(error.field === undefined ? {} : { field: error.field }) });
		if (error.validation !== undefined && error.validation.length > 0) {
			const v = error.validation[0]!;
			let field = `${error.validationContext ?? 'body'}${v.instancePath}`;
			let message = v.message ?? 'is invalid';
			if (v.keyword === 'additionalProperties') {
				field += `/${String(v.params['additionalProperty'])}`;
				message = 'is not a known field';
			} else if (v.keyword === 'required') {
				field += `/${String(v.params['missingProperty'])}`;
				message = 'is required';
			}
			return reply.code(400).send({ error: 'invalid_request', message: `${field} ${message}`, field });
		}
		if (error.statusCode !== undefined && error.statusCode >= 400 && error.statusCode < 500) {
			const field = error.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'headers/content-type' : 'body';
			return reply.code(error.statusCode).send({ error: FASTIFY_CODES[error.code ?? ''] ?? 'bad_request', message: error.message, field });
		}
		request.log.error({ err: { message: error.message, code: error.code } }, 'request failed');
		return reply.code(500).send({ error: 'internal', message: 'internal error (see the daemon log)', field: 'request' });
	});
	app.setNotFoundHandler((request, reply) => reply.code(404).send(notFound(request.method, request.url)));

	const routes: Route[] = [
		{
			method: 'PUT',
			url: '/v1/apps/:appId',
			summary: 'Provision or update an app (idempotent): 200 with the app, never a secret',
			access: 'admin',
			bodyLimit: BODY_LIMITS.app,
			schema: { params: APP_PARAMS, body: APP_INPUT_SCHEMA },
			handler: async (request, reply) => {
				const { appId } = request.params as { appId: string };
				return reply.code(200).send(await daemon.putApp(appId, request.body as AppInput));
			},
		},
		{ method: 'GET', url: '/v1/apps', summary: 'List the apps', access: 'admin', schema: {}, handler: async () => ({ apps: await daemon.listApps() }) },
		{ method: 'GET', url: '/v1/apps/:appId', summary: 'One app', access: 'read', schema: { params: APP_PARAMS }, handler: (request) => daemon.getApp((request.params as { appId: string }).appId) },
		{
			method: 'DELETE',
			url: '/v1/apps/:appId',
			summary: 'Delete an app and everything it has stored (pending notifications are dropped; their count is returned)',
			access: 'admin',
			schema: { params: APP_PARAMS },
			handler: (request) => daemon.deleteApp((request.params as { appId: string }).appId),
		},
		{
			method: 'POST',
			url: '/v1/apps/:appId/notifications',
			summary: 'Accept notifications: 202 once durably stored. Idempotency-Key makes a retry return the first answer (422 if its body differs)',
			access: 'send',
			bodyLimit: BODY_LIMITS.notifications,
			schema: {
				params: APP_PARAMS,
				body: NOTIFICATIONS_SCHEMA,
				headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 255 } } },
			},
			handler: async (request, reply) => {
				const { appId } = request.params as { appId: string };
				const { notifications } = request.body as { notifications: NotificationInput[] };
				const { status, body } = await daemon.accept(appId, notifications, idempotencyOf(request));
				return reply.code(status).send(body);
			},
		},
		{
			method: 'GET',
			url: '/v1/apps/:appId/notifications/:notificationId',
			summary: 'What became of a notification: pending count, sent count, failures',
			access: 'read',
			schema: { params: { type: 'object', additionalProperties: false, required: ['appId', 'notificationId'], properties: { appId: APP_ID, notificationId: { type: 'string', pattern: '^[0-9a-f-]{36}$' } } } },
			handler: (request) => {
				const { appId, notificationId } = request.params as { appId: string; notificationId: string };
				return daemon.status(appId, notificationId);
			},
		},
		{
			method: 'GET',
			url: '/v1/apps/:appId/feedback',
			summary: 'Dead tokens (410) after `after`, oldest first; reading deletes nothing (acknowledge with POST …/feedback/ack)',
			access: 'read',
			schema: {
				params: APP_PARAMS,
				querystring: { type: 'object', additionalProperties: false, properties: { after: { type: 'string', pattern: '^[0-9]{1,15}$' }, limit: { type: 'string', pattern: '^[0-9]{1,4}$' } } },
			},
			handler: (request) => {
				const { appId } = request.params as { appId: string };
				const q = request.query as { after?: string; limit?: string };
				const limit = q.limit === undefined ? 100 : Number(q.limit);
				if (limit < 1 || limit > 1000) throw new RequestError(400, 'invalid_request', `querystring/limit must be 1 to 1000, got ${limit}`, 'querystring/limit');
				return daemon.feedback(appId, q.after === undefined ? 0 : Number(q.after), limit);
			},
		},
		{
			method: 'POST',
			url: '/v1/apps/:appId/feedback/ack',
			summary: 'Acknowledge feedback up to `upTo` (a `next` a GET returned): it may go. 409 past what was handed out',
			access: 'read',
			schema: { params: APP_PARAMS, body: { type: 'object', additionalProperties: false, required: ['upTo'], properties: { upTo: { type: 'integer', minimum: 1, maximum: Number.MAX_SAFE_INTEGER } } } },
			handler: (request) => daemon.ackFeedback((request.params as { appId: string }).appId, (request.body as { upTo: number }).upTo),
		},
		{
			method: 'POST',
			url: '/v1/apps/:appId/channels',
			summary: 'Create a Live Activity broadcast channel at APNs (storagePolicy 0: nothing stored, the default; 1: the latest kept): 201 with its id',
			access: 'send',
			schema: { params: APP_PARAMS, body: { type: 'object', additionalProperties: false, properties: { storagePolicy: { type: 'integer', enum: [0, 1] } } } },
			handler: async (request, reply) => reply.code(201).send(await daemon.createChannel((request.params as { appId: string }).appId, (request.body as { storagePolicy?: 0 | 1 } | undefined)?.storagePolicy ?? 0)),
		},
		{
			method: 'POST',
			url: '/v1/apps/:appId/broadcasts',
			summary: 'Accept a Live Activity broadcast to a channel: 202 { id } once durably stored; sent, retried and expired like a notification. Idempotency-Key as for notifications',
			access: 'send',
			schema: {
				params: APP_PARAMS,
				body: {
					type: 'object',
					additionalProperties: false,
					required: ['channelId'],
					properties: {
						channelId: { type: 'string', minLength: 1, maxLength: 1024 },
						aps: { type: 'object' },
						payload: { type: 'object' },
						expiration: { type: 'integer', minimum: 0, maximum: 4_294_967_295, description: 'UNIX seconds (default 0: not stored by APNs, what a storage-policy-0 channel requires)' },
						priority: { type: 'integer', enum: [1, 5, 10], description: 'default 10' },
					},
				},
				headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 255 } } },
			},
			handler: async (request, reply) => {
				const { appId } = request.params as { appId: string };
				const { status, body } = await daemon.broadcast(appId, request.body as BroadcastInput, idempotencyOf(request));
				return reply.code(status).send(body);
			},
		},
		{
			method: 'GET',
			url: '/v1/apps/:appId/broadcasts/:broadcastId',
			summary: 'What became of a broadcast: pending, sent, failures (APNs\' status and reason)',
			access: 'read',
			schema: { params: { type: 'object', additionalProperties: false, required: ['appId', 'broadcastId'], properties: { appId: APP_ID, broadcastId: { type: 'string', pattern: '^[0-9a-f-]{36}$' } } } },
			handler: (request) => {
				const { appId, broadcastId } = request.params as { appId: string; broadcastId: string };
				return daemon.broadcastStatus(appId, broadcastId);
			},
		},
		{
			method: 'GET',
			url: '/v1/apps/:appId/channels',
			summary: "The app's Live Activity channel ids, as APNs lists them",
			access: 'read',
			schema: { params: APP_PARAMS },
			handler: (request) => daemon.listChannels((request.params as { appId: string }).appId),
		},
		channelRoute('GET', 'A channel and its storage policy', 'read', (appId, channelId) => daemon.getChannel(appId, channelId)),
		channelRoute('DELETE', 'Delete a channel at APNs (irreversible)', 'send', (appId, channelId) => daemon.deleteChannel(appId, channelId)),
		{
			method: 'POST',
			url: '/v1/keys',
			summary: 'Create an API key scoped to apps and scopes ("send", "read"): 201 with the key, shown once (stored hashed)',
			access: 'admin',
			schema: {
				body: {
					type: 'object',
					additionalProperties: false,
					required: ['apps', 'scopes'],
					properties: { apps: { type: 'array', minItems: 1, maxItems: 1000, uniqueItems: true, items: APP_ID }, scopes: { type: 'array', minItems: 1, uniqueItems: true, items: { type: 'string', enum: ['send', 'read'] } } },
				},
			},
			handler: async (request, reply) => {
				const { apps, scopes } = request.body as { apps: string[]; scopes: KeyScope[] };
				return reply.code(201).send(await daemon.createKey(apps, scopes));
			},
		},
		{ method: 'GET', url: '/v1/keys', summary: 'The scoped API keys (never a key)', access: 'admin', schema: {}, handler: async () => ({ keys: await daemon.listKeys() }) },
		{
			method: 'DELETE',
			url: '/v1/keys/:keyId',
			summary: 'Delete a scoped API key: it stops working at once',
			access: 'admin',
			schema: { params: { type: 'object', additionalProperties: false, required: ['keyId'], properties: { keyId: { type: 'string', pattern: '^[0-9a-f-]{36}$' } } } },
			handler: (request) => daemon.deleteKey((request.params as { keyId: string }).keyId),
		},
		{
			method: 'GET',
			url: '/metrics',
			summary: 'Prometheus metrics',
			access: 'public',
			schema: {},
			handler: async (_request, reply) => reply.header('content-type', daemon.metrics.registry.contentType).send(await daemon.metrics.registry.metrics()),
		},
		{
			method: 'GET',
			url: '/healthz',
			summary: 'Health: 200 while serving, 503 while shutting down or while the storage (Redis) is unreachable',
			access: 'public',
			schema: {},
			handler: (_request, reply) => (daemon.closing ? reply.code(503).send({ status: 'shutting_down' }) : daemon.unavailable !== undefined ? reply.code(503).send({ status: 'storage_unavailable' }) : reply.send({ status: 'ok' })),
		},
	];
	for (const r of routes) app.route({ method: r.method, url: r.url, schema: r.schema, handler: r.handler, bodyLimit: r.bodyLimit ?? BODY_LIMITS.other, config: { access: r.access } });
	const openapi = openApi(routes);
	app.get('/openapi.json', { config: { access: 'public' } }, () => openapi);
	return app;
}

/** An OpenAPI 3.1 description, from the same schemas the routes validate with. */
function openApi(routes: readonly Route[]): object {
	const paths: Record<string, Record<string, object>> = {};
	for (const r of routes) {
		const path = r.url.replace(/:(\w+)/g, '{$1}');
		const parameters: object[] = [];
		const params = r.schema.params as { properties?: Record<string, object> } | undefined;
		for (const [name, schema] of Object.entries(params?.properties ?? {})) parameters.push({ name, in: 'path', required: true, schema });
		const query = r.schema.querystring as { properties?: Record<string, object> } | undefined;
		for (const [name, schema] of Object.entries(query?.properties ?? {})) parameters.push({ name, in: 'query', required: false, schema });
		if (r.url.endsWith('/notifications') && r.method === 'POST') parameters.push({ name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', maxLength: 255 } });
		(paths[path] ??= {})[r.method.toLowerCase()] = {
			summary: r.summary,
			...(r.access === 'public' ? {} : { security: [{ bearer: [] }] }),
			...(r.access === 'public' ? {} : { 'x-access': r.access }),
			...(parameters.length > 0 ? { parameters } : {}),
			...(r.schema.body === undefined ? {} : { requestBody: { required: true, content: { 'application/json': { schema: r.schema.body } } } }),
			responses: { default: { description: 'JSON; errors are { error, message, field }' } },
		};
	}
	return { openapi: '3.1.0', info: { title: 'apns-worker serve', version: '1' }, components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } }, paths };
}

function digest(value: string): Buffer {
	return createHash('sha256').update(value).digest();
}

/** Our names for fastify's refusals (the API's `error` codes). */
const FASTIFY_CODES: Readonly<Record<string, string>> = {
	FST_ERR_CTP_BODY_TOO_LARGE: 'body_too_large',
	FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
	FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
	FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'bad_request',
};

function notFound(method: string, url: string): object {
	return { error: 'not_found', message: `no route ${method} ${url.split('?')[0]}`, field: 'url' };
}

/** The Idempotency-Key header, if given once; several are refused (a proxy joining them would make one key of two). */
function idempotencyKey(raw: readonly string[]): string | undefined {
	const values: string[] = [];
	for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'idempotency-key') values.push(raw[i + 1]!);
	if (values.length > 1) throw new RequestError(400, 'invalid_request', `headers/idempotency-key was given ${values.length} times: give one`, 'headers/idempotency-key');
	return values[0];
}

/**
 * JSON of a request body: nesting deeper than {@link MAX_JSON_DEPTH} refused before parsing (a scan,
 * strings skipped), and a `__proto__` key refused by name, with where it is.
 */
export function parseJson(text: string): unknown {
	let depth = 0;
	for (let i = 0, inString = false; i < text.length; i++) {
		const c = text.charCodeAt(i);
		if (inString) {
			if (c === 92) i++;
			else if (c === 34) inString = false;
		} else if (c === 34) inString = true;
		else if (c === 123 || c === 91) {
			if (++depth > MAX_JSON_DEPTH) throw new RequestError(400, 'invalid_json', `body is nested more than ${MAX_JSON_DEPTH} deep`, 'body');
		} else if (c === 125 || c === 93) depth--;
	}
	let value: unknown;
	try {
		value = JSON.parse(text);
	} catch (error) {
		throw new RequestError(400, 'invalid_json', `body is not valid JSON: ${(error as Error).message}`, 'body');
	}
	// Walked every time: a key spelled with escapes (\u005f_proto__) is __proto__ once parsed.
	const at = protoKey(value, 'body');
	if (at !== undefined) throw new RequestError(400, 'invalid_request', `${at} is not allowed as a key`, at);
	return value;
}

/** Where in `value` a `__proto__` key is (a path like body/aps/__proto__), if anywhere. */
function protoKey(value: unknown, path: string): string | undefined {
	if (value === null || typeof value !== 'object') return undefined;
	for (const [k, v] of Object.entries(value)) {
		if (k === '__proto__') return `${path}/__proto__`;
		const inner = protoKey(v, `${path}/${k}`);
		if (inner !== undefined) return inner;
	}
	return undefined;
}

/** An answer to what Node refused before any route (headers too large, a malformed request), in the API's shape. */
function clientError(error: Error & { code?: string }, socket: import('node:net').Socket): void {
	if (socket.destroyed || !socket.writable) return;
	const [status, code, message, field] =
		error.code === 'HPE_HEADER_OVERFLOW' ? [431, 'headers_too_large', 'the request headers are larger than 16 KiB', 'headers'] : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'request_timeout', 'the request did not arrive whole in time', 'request'] : [400, 'bad_request', 'not a valid HTTP request', 'request'];
	const body = JSON.stringify({ error: code, message, field });
	socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}
