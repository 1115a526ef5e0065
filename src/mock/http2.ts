/**
 * A validating mock of APNs' HTTP/2 API on 127.0.0.1 (after Pushy's validating mock server): TLS with
 * HTTP/2, provider-token (JWT) verification or client-certificate verification, checks of the path,
 * method, headers, topic and payload size, and faults on demand. Accepted notifications get 200 with an
 * `apns-id`; rejections get Apple's status and `{"reason": …}`.
 */
import { createPublicKey, randomUUID, verify, type KeyObject } from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { PemPair } from './certs.js';
import { MockChannels, type Answer, type MockBroadcast, type MockChannel } from './channels.js';

/** Faults the mock injects; change them while it runs with `setFaults`. */
export interface MockApnsHttp2Faults {
	/** Answer 410 Unregistered (with this timestamp, or now) for these tokens. */
	readonly unregistered?: ReadonlyMap<string, Date> | readonly string[];
	/** Answer 400 BadDeviceToken for these tokens. */
	readonly badTokens?: readonly string[];
	/**
	 * Answer every N-th request with this status (429 TooManyRequests, 500 InternalServerError, 503
	 * ServiceUnavailable); `every: 1` is a total outage. `retryAfterSeconds`, when given, is sent as the
	 * `retry-after` header as it is, whatever the number (e.g. 99999999, far beyond a 32-bit timer).
	 */
	readonly statusEvery?: { readonly every: number; readonly status: 429 | 500 | 503; readonly retryAfterSeconds?: number };
	/** Answer these tokens' first `times` requests with this status, then accept (a passing fault). */
	readonly transient?: { readonly tokens: readonly string[]; readonly status: 429 | 500 | 503; readonly times: number };
	/**
	 * Send GOAWAY (NO_ERROR) on a session when its N-th stream arrives, naming that stream's id as
	 * lastStreamId. As RFC 9113 §6.8 has it, the session then finishes the streams up to that id, refuses
	 * every stream above it without processing it (RST_STREAM REFUSED_STREAM, counted in `resets`), and
	 * closes once the streams it kept are done.
	 */
	readonly goawayAfter?: number;
	/**
	 * Hostile, with `goawayAfter`: behave as this mock did before it was fixed — send the GOAWAY a tick
	 * late, keep processing and answering streams above the lastStreamId it announced, and never close the
	 * session. A client sees those streams refused by its own HTTP/2 stack and re-sends them, so the mock
	 * records them twice. Only for reproducing what clients did against that behaviour.
	 */
	readonly goawayKeepsProcessing?: boolean;
	/**
	 * Hostile: send GOAWAY (NO_ERROR, lastStreamId 0) as soon as a session opens, process no stream
	 * (any that arrives is refused with RST_STREAM REFUSED_STREAM), and close the session.
	 */
	readonly goawayOnConnect?: boolean;
	/**
	 * Hostile: reset every stream (or only these tokens' streams) with RST_STREAM and this error code
	 * instead of answering. Nothing is accepted or recorded; counted in `resets`.
	 */
	readonly resetStreams?: { readonly code: 'REFUSED_STREAM' | 'INTERNAL_ERROR' | 'CANCEL'; readonly tokens?: readonly string[] };
	/**
	 * Hostile: never answer (every stream when `true`, or only these tokens' streams). The stream stays
	 * open until the client gives up or the mock closes; PINGs are still answered (node:http2 does that
	 * itself), so the session looks alive.
	 */
	readonly neverAnswer?: boolean | readonly string[];
	/**
	 * Hostile: answer the first N requests the mock sees (across sessions), then never answer another — a
	 * load balancer whose backend went away. Streams stay open; PINGs are still answered.
	 */
	readonly neverAnswerAfter?: number;
	/**
	 * Hostile: when a request for this token (hex) arrives, drop its connection (the TCP socket is
	 * destroyed: no RST_STREAM, no GOAWAY, nothing answered; the session's other requests in flight are cut
	 * off with it). Applies to every session, so a client that re-sends it loses a session every time.
	 */
	readonly killSessionOnToken?: string;
	/** Answer 400 IdleTimeout to the first request for each of these tokens (then accept it). */
	readonly idleTimeoutTokens?: readonly string[];
	/** Delay each response this long, in ms. */
	readonly responseDelayMs?: number;
	/** Answer the next `times` channel management requests (create, read, list, delete) with `status`, before anything else is checked. */
	readonly managementErrors?: { readonly status: 429 | 500 | 503; readonly times: number };
}

/** Options of {@link startMockApnsHttp2}. */
export interface MockApnsHttp2Options {
	readonly server: PemPair;
	/** CA that client certificates must be signed by (certificate auth). Without it, token auth only. */
	readonly ca?: string;
	/**
	 * With `ca`: refuse a client without a certificate signed by it in the TLS handshake itself
	 * (requestCert and rejectUnauthorized), instead of answering its requests 403. Token-auth clients
	 * without a certificate are refused too. With TLS 1.3 the client's side of the handshake completes
	 * before the server has checked its certificate, so a refused client sees its session `'connect'`,
	 * then the close (Node's server destroys the socket: no alert, no session error, its streams end with
	 * no answer). Start the mock with a `ca` that did not sign the client certificate to test how a client
	 * copes with a server that refuses its certificate; `connectionsAccepted` counts those connections,
	 * `sessions` does not.
	 * @default false
	 */
	readonly requireClientCert?: boolean;
	/** Token auth: the keys the mock trusts, by key ID, with their team. */
	readonly keys?: ReadonlyArray<{ readonly keyId: string; readonly teamId: string; readonly publicKey: string | KeyObject }>;
	/** Topics (bundle IDs) that may be pushed to; suffixed push types are derived. */
	readonly topics: readonly string[];
	/** Token auth: tokens older than this many seconds get 403 ExpiredProviderToken. @default 3600 */
	readonly maxTokenAgeSeconds?: number;
	/** SETTINGS_MAX_CONCURRENT_STREAMS the server announces. @default 1000 */
	readonly maxConcurrentStreams?: number;
	/** Channels each bundle ID may have (Apple: 10,000 per app and environment). @default 10_000 */
	readonly maxChannels?: number;
	readonly faults?: MockApnsHttp2Faults;
	/** Keep every accepted notification in `received` and every answer in `answers`. Turn off for big runs. @default true */
	readonly record?: boolean;
	/** Called with each accepted token (hex). */
	readonly onAccepted?: (token: string) => void;
	/** Called with the token (hex, as in the path) of every request that names one, whatever becomes of it. */
	readonly onRequest?: (token: string) => void;
	/** @default '127.0.0.1' */
	readonly host?: string;
	/** @default 0 */
	readonly port?: number;
}

/** A request the mock accepted. */
export interface MockHttp2Notification {
	readonly token: string;
	readonly topic: string | undefined;
	readonly pushType: string | undefined;
	readonly priority: string | undefined;
	readonly expiration: string | undefined;
	readonly collapseId: string | undefined;
	readonly apnsId: string;
	readonly payload: string;
	readonly session: number;
	/** HTTP/2 stream id it came on. */
	readonly stream: number;
	/** Header fields the client sent as never-indexed HPACK literals. */
	readonly neverIndexed: readonly string[];
}

/** A running mock. */
export interface MockApnsHttp2 {
	readonly host: string;
	readonly port: number;
	readonly received: readonly MockHttp2Notification[];
	/** How many times each token was accepted. */
	readonly counts: ReadonlyMap<string, number>;
	/** Every answer, in order: status and reason (when `record` is on). */
	readonly answers: ReadonlyArray<{ token: string; status: number; reason: string | undefined }>;
	/** Requests answered, and of those accepted (200). */
	readonly answered: number;
	readonly acceptedCount: number;
	/** Sessions opened (TLS handshake and HTTP/2 preface done). */
	readonly sessions: number;
	/** TCP connections accepted, including those whose TLS handshake failed. */
	readonly connectionsAccepted: number;
	/** Streams (requests) the mock saw, whatever became of them: answered, reset, refused after a GOAWAY, or never answered. */
	readonly requests: number;
	/** RST_STREAM frames the mock sent: `resetStreams`, and REFUSED_STREAM for streams above a GOAWAY's lastStreamId. */
	readonly resets: number;
	/** GOAWAY frames the mock sent (`goawayAfter`, `goawayOnConnect`), in order, with the session and lastStreamId each named. */
	readonly goaways: ReadonlyArray<{ readonly session: number; readonly lastStreamId: number }>;
	/** Most streams in flight at once on one session. */
	readonly peakConcurrentStreams: number;
	/** Most sessions open at once. */
	readonly peakSessions: number;
	/** Live Activity channels (created through channel management, not yet deleted), oldest first. */
	readonly channels: readonly MockChannel[];
	/** Broadcasts accepted, in order. */
	readonly broadcasts: readonly MockBroadcast[];
	/** JWTs seen, distinct. */
	readonly tokensSeen: ReadonlySet<string>;
	setFaults(faults: MockApnsHttp2Faults): void;
	close(): Promise<void>;
}

const { NGHTTP2_CANCEL, NGHTTP2_INTERNAL_ERROR, NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;
const RESET_CODES = { REFUSED_STREAM: NGHTTP2_REFUSED_STREAM, INTERNAL_ERROR: NGHTTP2_INTERNAL_ERROR, CANCEL: NGHTTP2_CANCEL } as const;

/** What the mock keeps per session. */
interface SessionState {
	readonly id: number;
	/** Streams counted towards `goawayAfter`. */
	streams: number;
	open: number;
	/**
	 * Set once the mock decided to GOAWAY: streams above it are refused, never processed. Every stream
	 * still open then is at or below it, so the session closes when `open` drops to 0.
	 */
	lastStreamId: number | undefined;
}

/** Whether a fault given as `true` or a token list applies to `token`. */
function appliesTo(given: boolean | readonly string[] | undefined, token: string): boolean {
	return given === true || (Array.isArray(given) && given.includes(token));
}

const PUSH_TYPES = new Set(['alert', 'background', 'location', 'voip', 'complication', 'fileprovider', 'mdm', 'liveactivity', 'pushtotalk', 'widgets', 'controls']);
const SUFFIXES = ['', '.voip', '.complication', '.pushkit.fileprovider', '.push-type.liveactivity', '.location-query', '.voip-ptt', '.push-type.widgets', '.push-type.controls'];

export async function startMockApnsHttp2(options: MockApnsHttp2Options): Promise<MockApnsHttp2> {
	let faults: MockApnsHttp2Faults = options.faults ?? {};
	const received: MockHttp2Notification[] = [];
	const counts = new Map<string, number>();
	const answers: Array<{ token: string; status: number; reason: string | undefined }> = [];
	const tokensSeen = new Set<string>();
	const verified = new Map<string, string | { iat: number }>();
	const transientLeft = new Map<string, number>();
	const idleDone = new Set<string>();
	const keys = new Map((options.keys ?? []).map((k) => [k.keyId, { teamId: k.teamId, publicKey: typeof k.publicKey === 'string' ? createPublicKey(k.publicKey) : k.publicKey }]));
	const topics = new Set(options.topics.flatMap((t) => SUFFIXES.map((s) => `${t}${s}`)));
	const maxAge = options.maxTokenAgeSeconds ?? 3600;
	const record = options.record ?? true;
	/** Requests that passed validation: what `statusEvery` counts. */
	let validated = 0;
	let requests = 0;
	let resets = 0;
	let connectionsAccepted = 0;
	const goaways: Array<{ session: number; lastStreamId: number }> = [];
	let answered = 0;
	let acceptedCount = 0;
	let sessions = 0;
	let peak = 0;
	let peakSessions = 0;
	/** Channel management requests answered with `managementErrors` since the faults were set. */
	let managementErrorsSent = 0;
	const resetTransient = (f: MockApnsHttp2Faults): void => {
		transientLeft.clear();
		for (const t of f.transient?.tokens ?? []) transientLeft.set(t, f.transient!.times);
	};
	resetTransient(faults);

	const channels = new MockChannels(new Set(options.topics), options.maxChannels);
	const requireClientCert = options.requireClientCert === true && options.ca !== undefined;
	const server = http2.createSecureServer({
		cert: options.server.cert,
		key: options.server.key,
		...(options.ca === undefined ? {} : { ca: [options.ca], requestCert: true, rejectUnauthorized: requireClientCert }),
		settings: { maxConcurrentStreams: options.maxConcurrentStreams ?? 1000 },
	});
	const liveSessions = new Set<http2.ServerHttp2Session>();
	const states = new WeakMap<http2.ServerHttp2Session, SessionState>();
	// Every TCP connection, handshake finished or not (see mock/tls-server.ts).
	const sockets = new Set<Socket>();
	server.on('connection', (socket: Socket) => {
		connectionsAccepted++;
		sockets.add(socket);
		socket.on('close', () => sockets.delete(socket));
	});
	server.on('tlsClientError', () => {
		// A refused client certificate (requireClientCert): the client sees the close.
	});
	const goaway = (session: http2.ServerHttp2Session, state: SessionState, lastStreamId: number): void => {
		state.lastStreamId = lastStreamId;
		goaways.push({ session: state.id, lastStreamId });
		session.goaway(NGHTTP2_NO_ERROR, lastStreamId);
	};
	server.on('session', (session: http2.ServerHttp2Session) => {
		const state: SessionState = { id: ++sessions, streams: 0, open: 0, lastStreamId: undefined };
		states.set(session, state);
		liveSessions.add(session);
		peakSessions = Math.max(peakSessions, liveSessions.size);
		session.on('close', () => liveSessions.delete(session));
		session.on('error', () => {});
		if (faults.goawayOnConnect) {
			goaway(session, state, 0);
			session.close();
		}
	});
	server.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => {
		const session = stream.session as http2.ServerHttp2Session | undefined;
		const state = session === undefined ? undefined : states.get(session);
		// A stream the server received always has its id (only a client's pending streams lack one).
		const id = stream.id ?? 0;
		/** This request's place among every request the mock saw (what `neverAnswerAfter` counts). */
		const ordinal = ++requests;
		stream.on('error', () => {});
		// Its connection was cut (killSessionOnToken) in the same read that brought this stream: nobody to answer.
		if (session === undefined || state === undefined) return;
		if (state.lastStreamId !== undefined && id > state.lastStreamId && !faults.goawayKeepsProcessing) {
			// Above the lastStreamId announced: never processed, so the client may safely send it again elsewhere.
			resets++;
			stream.close(NGHTTP2_REFUSED_STREAM);
			return;
		}
		state.streams++;
		state.open++;
		peak = Math.max(peak, state.open);
		stream.on('close', () => {
			state.open--;
			if (state.open === 0 && state.lastStreamId !== undefined && !faults.goawayKeepsProcessing) session.close();
		});
		if (faults.goawayAfter !== undefined && state.streams === faults.goawayAfter && state.lastStreamId === undefined) {
			// The old behaviour decided a tick late and refused nothing above lastStreamId.
			if (faults.goawayKeepsProcessing) setImmediate(() => goaway(session, state, id));
			else goaway(session, state, id);
		}
		const chunks: Buffer[] = [];
		stream.on('data', (c: Buffer) => chunks.push(c));
		stream.on('end', () => {
			const apnsId = typeof headers['apns-id'] === 'string' ? headers['apns-id'] : randomUUID();
			const respond = (status: number, reason?: string, extra: Record<string, unknown> = {}, responseHeaders: Record<string, string> = {}): void => {
				answered++;
				if (record) answers.push({ token: String(headers[':path'] ?? '').slice('/3/device/'.length), status, reason });
				const send = (): void => {
					// The client may be gone by now (destroyed, its session cut): nothing to answer.
					if (stream.destroyed || stream.closed || stream.session === undefined || stream.session.destroyed) return;
					if (reason === undefined) {
						stream.respond({ ':status': status, 'apns-id': apnsId, ...responseHeaders }, { endStream: true });
						return;
					}
					stream.respond({ ':status': status, 'apns-id': apnsId, 'content-type': 'application/json', ...responseHeaders });
					stream.end(JSON.stringify({ reason, ...extra }));
				};
				if (faults.responseDelayMs) setTimeout(send, faults.responseDelayMs);
				else send();
			};
			const payload = Buffer.concat(chunks);
			/** Authentication: a client certificate, or a valid provider token. Why not, or undefined. */
			const authenticate = (): string | undefined => {
				const tls = session.socket as unknown as { authorized?: boolean };
				if (options.ca !== undefined && tls.authorized === true) return undefined;
				const auth = String(headers['authorization'] ?? '');
				if (!auth.startsWith('bearer ')) return 'MissingProviderToken';
				const jwt = auth.slice('bearer '.length);
				tokensSeen.add(jwt);
				// A token string verifies the same way every time; only its age changes. Verifying a signature
				// per request made the mock the bottleneck of every benchmark.
				let checked = verified.get(jwt);
				if (checked === undefined) {
					checked = checkJwt(jwt, keys);
					verified.set(jwt, checked);
				}
				if (typeof checked === 'string') return checked;
				if (Date.now() / 1000 - checked.iat > maxAge) return 'ExpiredProviderToken';
				return undefined;
			};
			/** A reset or a silence for `key` (a token, or a broadcast's channel id): true when it took the request. */
			const transportFault = (key: string): boolean => {
				const reset = faults.resetStreams;
				if (reset !== undefined && (reset.tokens === undefined || reset.tokens.includes(key))) {
					resets++;
					stream.close(RESET_CODES[reset.code]);
					return true;
				}
				return appliesTo(faults.neverAnswer, key) || (faults.neverAnswerAfter !== undefined && ordinal > faults.neverAnswerAfter);
			};
			const path = String(headers[':path'] ?? '');
			if (MockChannels.handles(path)) {
				// A broadcast meets the transport faults by its channel id, as a device send does by its token.
				const channelId = path.startsWith('/4/') && typeof headers['apns-channel-id'] === 'string' ? headers['apns-channel-id'] : undefined;
				if (channelId !== undefined && transportFault(channelId)) return;
				const answer: Answer = (status, body, responseHeaders = {}) => {
					answered++;
					const send = (): void => {
						if (stream.destroyed || stream.closed || stream.session === undefined || stream.session.destroyed) return;
						if (body === undefined) {
							stream.respond({ ':status': status, ...responseHeaders }, { endStream: true });
							return;
						}
						stream.respond({ ':status': status, 'content-type': 'application/json', ...responseHeaders });
						stream.end(JSON.stringify(body));
					};
					if (faults.responseDelayMs) setTimeout(send, faults.responseDelayMs);
					else send();
				};
				const management = faults.managementErrors;
				if (path.startsWith('/1/') && management !== undefined && managementErrorsSent < management.times) {
					managementErrorsSent++;
					return answer(management.status, { reason: management.status === 429 ? 'TooManyRequests' : management.status === 500 ? 'InternalServerError' : 'ServiceUnavailable' });
				}
				const denied = authenticate();
				if (denied !== undefined) return answer(403, { reason: denied });
				return channels.handle(headers, payload, answer, (channel) => {
					const left = transientLeft.get(channel) ?? 0;
					if (left > 0 && faults.transient !== undefined) {
						transientLeft.set(channel, left - 1);
						return [faults.transient.status, faults.transient.status === 429 ? 'TooManyRequests' : faults.transient.status === 500 ? 'InternalServerError' : 'ServiceUnavailable'];
					}
					return undefined;
				});
			}
			if (headers[':method'] !== 'POST') return respond(405, 'MethodNotAllowed');
			if (!path.startsWith('/3/device/')) return respond(404, 'BadPath');
			const token = path.slice('/3/device/'.length);
			options.onRequest?.(token);
			if (token.length === 0) return respond(400, 'MissingDeviceToken');
			if (!/^[0-9a-f]{64}$/.test(token)) return respond(400, 'BadDeviceToken');
			// Transport faults come before authentication: they stand for a server that fails, not one that answers.
			if (transportFault(token)) return;
			if (faults.killSessionOnToken === token) {
				// Node hides a session's socket behind a proxy that refuses destroy(): find the TCP socket by port.
				const port = session.socket.remotePort;
				for (const socket of sockets) if (socket.remotePort === port) socket.destroy();
				return;
			}
			const denied = authenticate();
			if (denied !== undefined) return respond(403, denied);
			const topic = headers['apns-topic'] as string | undefined;
			if (topic === undefined) return respond(400, 'MissingTopic');
			if (!topics.has(topic)) return respond(400, 'TopicDisallowed');
			const pushType = headers['apns-push-type'] as string | undefined;
			if (pushType !== undefined && !PUSH_TYPES.has(pushType)) return respond(400, 'InvalidPushType');
			const priority = headers['apns-priority'] as string | undefined;
			if (priority !== undefined && !['1', '5', '10'].includes(priority)) return respond(400, 'BadPriority');
			if (pushType === 'background' && priority === '10') return respond(400, 'BadPriority');
			if (headers['apns-id'] !== undefined && !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(apnsId)) return respond(400, 'BadMessageId');
			const collapseId = headers['apns-collapse-id'] as string | undefined;
			if (collapseId !== undefined && Buffer.byteLength(collapseId) > 64) return respond(400, 'BadCollapseId');
			if (payload.length === 0) return respond(400, 'PayloadEmpty');
			if (payload.length > (pushType === 'voip' ? 5120 : 4096)) return respond(413, 'PayloadTooLarge');
			// Faults.
			validated++;
			const unregistered = faults.unregistered;
			const goneAt = unregistered instanceof Map ? unregistered.get(token) : (unregistered as readonly string[] | undefined)?.includes(token) ? new Date() : undefined;
			if (goneAt !== undefined) return respond(410, 'Unregistered', { timestamp: goneAt.getTime() });
			if (faults.badTokens?.includes(token)) return respond(400, 'BadDeviceToken');
			if (faults.idleTimeoutTokens?.includes(token) && !idleDone.has(token)) {
				idleDone.add(token);
				return respond(400, 'IdleTimeout');
			}
			const left = transientLeft.get(token) ?? 0;
			if (left > 0 && faults.transient !== undefined) {
				transientLeft.set(token, left - 1);
				return respond(faults.transient.status, faults.transient.status === 429 ? 'TooManyRequests' : faults.transient.status === 500 ? 'InternalServerError' : 'ServiceUnavailable');
			}
			const every = faults.statusEvery;
			if (every !== undefined && validated % every.every === 0) {
				const reason = every.status === 429 ? 'TooManyRequests' : every.status === 500 ? 'InternalServerError' : 'ServiceUnavailable';
				return respond(every.status, reason, {}, every.retryAfterSeconds === undefined ? {} : { 'retry-after': String(every.retryAfterSeconds) });
			}
			counts.set(token, (counts.get(token) ?? 0) + 1);
			acceptedCount++;
			options.onAccepted?.(token);
			if (record) received.push({
				token,
				topic,
				pushType,
				priority,
				expiration: headers['apns-expiration'] as string | undefined,
				collapseId,
				apnsId,
				payload: payload.toString('utf8'),
				session: state.id,
				stream: id,
				neverIndexed: (headers as unknown as Record<symbol, string[] | undefined>)[http2.sensitiveHeaders] ?? [],
			});
			return respond(200);
		});
	});
	const host = options.host ?? '127.0.0.1';
	await new Promise<void>((resolve, reject) => {
		server.once('error', reject);
		server.listen(options.port ?? 0, host, () => resolve());
	});
	return {
		host,
		port: (server.address() as AddressInfo).port,
		received,
		counts,
		answers,
		tokensSeen,
		get sessions() {
			return sessions;
		},
		get connectionsAccepted() {
			return connectionsAccepted;
		},
		get requests() {
			return requests;
		},
		get resets() {
			return resets;
		},
		goaways,
		get peakConcurrentStreams() {
			return peak;
		},
		get peakSessions() {
			return peakSessions;
		},
		get channels() {
			return channels.channels;
		},
		broadcasts: channels.broadcasts,
		get answered() {
			return answered;
		},
		get acceptedCount() {
			return acceptedCount;
		},
		setFaults(next: MockApnsHttp2Faults) {
			faults = next;
			resetTransient(next);
			managementErrorsSent = 0;
		},
		async close() {
			for (const s of liveSessions) s.destroy();
			for (const socket of sockets) socket.destroy();
			await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}

/** Pushy's order of checks: parses → kid known → signature → team (the age is checked by the caller). Returns the reason, or the token's iat. */
function checkJwt(jwt: string, keys: ReadonlyMap<string, { teamId: string; publicKey: KeyObject }>): string | { iat: number } {
	const parts = jwt.split('.');
	if (parts.length !== 3) return 'InvalidProviderToken';
	let header: { alg?: unknown; kid?: unknown };
	let claims: { iss?: unknown; iat?: unknown };
	try {
		header = JSON.parse(Buffer.from(parts[0]!, 'base64url').toString('utf8')) as typeof header;
		claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as typeof claims;
	} catch {
		return 'InvalidProviderToken';
	}
	const key = typeof header.kid === 'string' ? keys.get(header.kid) : undefined;
	if (header.alg !== 'ES256' || key === undefined) return 'InvalidProviderToken';
	const ok = verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), { key: key.publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(parts[2]!, 'base64url'));
	if (!ok || claims.iss !== key.teamId) return 'InvalidProviderToken';
	if (typeof claims.iat !== 'number') return 'InvalidProviderToken';
	return { iat: claims.iat };
}
