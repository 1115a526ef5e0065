/**
 * The daemon's HTTP API (fastify): JSON schemas validate every body, parameter and query — unknown
 * fields and wrong types are refused, never coerced or dropped — and every refusal is a 4xx whose body
 * names the field: `{ error, message, field }`. `/v1` routes need `Authorization: Bearer <key>`;
 * `/metrics`, `/healthz` and `/openapi.json` do not. While the daemon shuts down, `/v1` answers 503.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { APP_INPUT_SCHEMA, type AppInput } from './apps.js';
import { RequestError, type NotificationInput, type PushService } from './service.js';

/** Largest request body, in bytes (413 past it). */
export const BODY_LIMIT = 8 * 1024 * 1024;
/** Tokens in one notification entry, and entries in one request. */
export const MAX_TOKENS_PER_NOTIFICATION = 10_000;
export const MAX_NOTIFICATIONS_PER_REQUEST = 1000;

const APP_ID = { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' } as const;
const APP_PARAMS = { type: 'object', additionalProperties: false, required: ['appId'], properties: { appId: APP_ID } } as const;

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
					expiration: { type: 'integer', minimum: 0 },
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
	readonly auth: boolean;
	readonly schema: { params?: object; body?: object; querystring?: object; headers?: object };
	readonly handler: (request: FastifyRequest, reply: FastifyReply) => Promise<unknown> | unknown;
}

/** Build the API of `daemon` (not listening yet). */
export function buildApi(daemon: PushService): FastifyInstance {
	const app: FastifyInstance = Fastify({
		loggerInstance: daemon.log as FastifyBaseLogger,
		// Request lines are left out: the metrics have the latency, and the log stays about the pushes.
		logController: new LogController({ disableRequestLogging: true }),
		bodyLimit: BODY_LIMIT,
		// Every wait bounded: a request that has not arrived whole in a minute is dropped, and closing the
		// API does not wait for idle keep-alive connections.
		requestTimeout: 60_000,
		forceCloseConnections: true,
		// Refuse what does not fit the schema: no silent removal of unknown fields, no type coercion.
		ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false } },
	});
	const expected = digest(`Bearer ${daemon.apiKey}`);

	app.addHook('onRequest', async (request, reply) => {
		// By the route matched, never by the raw URL: the router decodes it (/%761/apps is /v1/apps).
		const route = request.routeOptions.url;
		if (route === undefined || !route.startsWith('/v1/')) return;
		if (daemon.closing) return reply.code(503).header('retry-after', '5').send({ error: 'shutting_down', message: 'the daemon is shutting down; retry on its next start' });
		const given = request.headers.authorization;
		if (given === undefined || !timingSafeEqual(digest(given), expected)) {
			return reply.code(401).header('www-authenticate', 'Bearer').send({ error: 'unauthorized', message: 'Authorization: Bearer <API key> is required', field: 'headers/authorization' });
		}
		// Nothing is accepted that could not be stored (the shared Redis is gone): the client retries.
		const unavailable = daemon.unavailable;
		if (unavailable !== undefined) return reply.code(503).header('retry-after', '1').send({ error: 'storage_unavailable', message: unavailable });
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
			return reply.code(error.statusCode).send({ error: (error.code ?? 'bad_request').toLowerCase(), message: error.message, field });
		}
		request.log.error({ err: { message: error.message, code: error.code } }, 'request failed');
		return reply.code(500).send({ error: 'internal', message: 'internal error (see the daemon log)' });
	});
	app.setNotFoundHandler((request, reply) => reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${request.url.split('?')[0]}` }));

	const routes: Route[] = [
		{
			method: 'PUT',
			url: '/v1/apps/:appId',
			summary: 'Provision or update an app (idempotent): 200 with the app, never a secret',
			auth: true,
			schema: { params: APP_PARAMS, body: APP_INPUT_SCHEMA },
			handler: async (request, reply) => {
				const { appId } = request.params as { appId: string };
				return reply.code(200).send(await daemon.putApp(appId, request.body as AppInput));
			},
		},
		{ method: 'GET', url: '/v1/apps', summary: 'List the apps', auth: true, schema: {}, handler: async () => ({ apps: await daemon.listApps() }) },
		{ method: 'GET', url: '/v1/apps/:appId', summary: 'One app', auth: true, schema: { params: APP_PARAMS }, handler: (request) => daemon.getApp((request.params as { appId: string }).appId) },
		{
			method: 'DELETE',
			url: '/v1/apps/:appId',
			summary: 'Delete an app and everything it has stored (pending notifications are dropped; their count is returned)',
			auth: true,
			schema: { params: APP_PARAMS },
			handler: (request) => daemon.deleteApp((request.params as { appId: string }).appId),
		},
		{
			method: 'POST',
			url: '/v1/apps/:appId/notifications',
			summary: 'Accept notifications: 202 once durably stored. Idempotency-Key makes a retry return the first answer',
			auth: true,
			schema: {
				params: APP_PARAMS,
				body: NOTIFICATIONS_SCHEMA,
				headers: { type: 'object', properties: { 'idempotency-key': { type: 'string', minLength: 1, maxLength: 255 } } },
			},
			handler: async (request, reply) => {
				const { appId } = request.params as { appId: string };
				const { notifications } = request.body as { notifications: NotificationInput[] };
				const { status, body } = await daemon.accept(appId, notifications, request.headers['idempotency-key'] as string | undefined);
				return reply.code(status).send(body);
			},
		},
		{
			method: 'GET',
			url: '/v1/apps/:appId/notifications/:notificationId',
			summary: 'What became of a notification: pending count, sent count, failures',
			auth: true,
			schema: { params: { type: 'object', additionalProperties: false, required: ['appId', 'notificationId'], properties: { appId: APP_ID, notificationId: { type: 'string', pattern: '^[0-9a-f-]{36}$' } } } },
			handler: (request) => {
				const { appId, notificationId } = request.params as { appId: string; notificationId: string };
				return daemon.status(appId, notificationId);
			},
		},
		{
			method: 'GET',
			url: '/v1/apps/:appId/feedback',
			summary: 'Dead tokens (410), oldest first; records at or before `after` were read past and are deleted',
			auth: true,
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
			method: 'GET',
			url: '/metrics',
			summary: 'Prometheus metrics',
			auth: false,
			schema: {},
			handler: async (_request, reply) => reply.header('content-type', daemon.metrics.registry.contentType).send(await daemon.metrics.registry.metrics()),
		},
		{
			method: 'GET',
			url: '/healthz',
			summary: 'Health: 200 while serving, 503 while shutting down or while the storage (Redis) is unreachable',
			auth: false,
			schema: {},
			handler: (_request, reply) => (daemon.closing ? reply.code(503).send({ status: 'shutting_down' }) : daemon.unavailable !== undefined ? reply.code(503).send({ status: 'storage_unavailable' }) : reply.send({ status: 'ok' })),
		},
	];
	for (const r of routes) app.route({ method: r.method, url: r.url, schema: r.schema, handler: r.handler });
	const openapi = openApi(routes);
	app.get('/openapi.json', () => openapi);
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
			...(r.auth ? { security: [{ bearer: [] }] } : {}),
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
