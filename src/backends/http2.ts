/**
 * The HTTP/2 backend: Apple's current provider API over `node:http2`.
 *
 * A pool of `connections` sessions. Each takes notifications from the queue only while its streams in
 * flight are below the server's SETTINGS_MAX_CONCURRENT_STREAMS (updated on every remote SETTINGS, capped
 * by `maxStreamsPerSession`; with token auth 1 until the session's first success, as Apple requires), so
 * a million queued tokens never become a million streams. Each response settles its notification:
 * 200 delivered; 410 failed and reported as feedback; 429/500/503 retried with backoff (honouring
 * `retry-after`) up to `maxAttempts`; ExpiredProviderToken retried with a fresh token; IdleTimeout retried
 * on a new session; other rejections failed with APNs' reason. GOAWAY re-queues the streams the server
 * never processed (id > lastStreamId) ahead of new work; a session lost with streams in flight re-queues
 * them too (they may be delivered twice: give them an `apns-collapse-id` to make that harmless).
 */
import http2 from 'node:http2';
import { connectTls } from '../credentials.js';
import { ConnectionError } from '../errors.js';
import type { Message } from '../message.js';
import type { InFlight } from '../queue.js';
import type { Backend, BackendContext } from './backend.js';
import { backoffDelay, Reconnect } from './backoff.js';
import { coalesced } from './schedule.js';

const { NGHTTP2_REFUSED_STREAM } = http2.constants;

/**
 * Header fields sent as never-indexed literals. Apple asks for `:path` and `authorization` to stay out of
 * its small HPACK table: each path is used once, and filling the table with them would evict the fields
 * every request repeats.
 */
const NEVER_INDEXED: readonly string[] = Object.freeze([':path', 'authorization']);

/** Push types whose topic carries a suffix after the bundle ID. */
const TOPIC_SUFFIX: Readonly<Record<string, string>> = {
	voip: '.voip',
	complication: '.complication',
	fileprovider: '.pushkit.fileprovider',
	liveactivity: '.push-type.liveactivity',
	location: '.location-query',
	pushtotalk: '.voip-ptt',
	widgets: '.push-type.widgets',
	controls: '.push-type.controls',
};

/** The topic for a push type: the bundle ID plus the push type's suffix, unless already there. */
export function topicFor(base: string, pushType: string): string {
	const suffix = TOPIC_SUFFIX[pushType];
	return suffix === undefined || base.endsWith(suffix) ? base : `${base}${suffix}`;
}

/** Header values a message's notifications share. */
interface SharedHeaders {
	readonly priority: string;
	/** Left out when the message has none: APNs then stores it under its own policy. */
	readonly expiration: string | undefined;
	readonly topic: string | undefined;
}

class Session {
	readonly id: number;
	readonly session: http2.ClientHttp2Session;
	readonly streams = new Map<http2.ClientHttp2Stream, InFlight>();
	ready = false;
	/** Streams the server allows at once (its SETTINGS, capped). */
	remoteLimit = 1;
	/** Token auth: Apple allows one stream until a request on the session succeeded. */
	authorized: boolean;
	/** GOAWAY received: no new streams; those above this id were never processed. */
	lastStreamId: number | undefined;
	lastActivity = performance.now();
	pingTimer: NodeJS.Timeout | undefined;

	constructor(id: number, session: http2.ClientHttp2Session, tokenAuth: boolean) {
		this.id = id;
		this.session = session;
		this.authorized = !tokenAuth;
	}

	get limit(): number {
		return this.authorized ? this.remoteLimit : 1;
	}

	get usable(): boolean {
		return this.ready && this.lastStreamId === undefined && !this.session.closed && !this.session.destroyed;
	}
}

/** The `'http2'` backend. */
export function createHttp2Backend(context: BackendContext): Backend {
	return new Http2Backend(context);
}

class Http2Backend implements Backend {
	readonly #ctx: BackendContext;
	readonly #sessions = new Set<Session>();
	#ids = 0;
	readonly #reconnect: Reconnect;
	#closing = false;
	#destroyed = false;
	#connectAttempts = 0;
	/** Notifications waiting out a retry delay, with when they are due. */
	#delayed: Array<{ at: number; n: InFlight }> = [];
	#delayTimer: NodeJS.Timeout | undefined;
	#closeWaiters: Array<() => void> = [];
	/** Weak: a finished message (and its tokens) must not be kept alive by this cache. */
	readonly #headers = new WeakMap<Message, SharedHeaders>();
	#jwt = '';
	#authorization = '';

	constructor(context: BackendContext) {
		this.#ctx = context;
		this.#reconnect = new Reconnect(context.options.reconnect, () => this.wake());
	}

	get connectAttempts(): number {
		return this.#connectAttempts;
	}

	readonly #wake = coalesced(() => this.#pump());

	wake(): void {
		if (!this.#destroyed) this.#wake();
	}

	#pump(): void {
		if (this.#destroyed) return;
		const { queue, options } = this.#ctx;
		const live = [...this.#sessions].filter((s) => s.lastStreamId === undefined && !s.session.destroyed);
		if (queue.canTake && !this.#closing && !this.#reconnect.waiting && live.length < options.connections && !live.some((s) => !s.ready)) {
			this.#connect();
		}
		for (const s of live) {
			if (!s.usable) continue;
			while (s.streams.size < Math.min(s.limit, options.maxStreamsPerSession)) {
				const n = queue.takeOne();
				if (n === undefined) return;
				this.#request(s, n);
			}
		}
	}

	#connect(): void {
		const { tls: target, options, events } = this.#ctx;
		this.#connectAttempts++;
		const authority = `https://${target.host}:${target.port}`;
		const session = http2.connect(authority, {
			createConnection: () => connectTls(target, { ALPNProtocols: ['h2'] }),
			peerMaxConcurrentStreams: 1,
		});
		const s = new Session(++this.#ids, session, this.#ctx.token !== undefined);
		this.#sessions.add(s);
		let failure: Error | undefined;
		const timer = setTimeout(() => session.destroy(new ConnectionError(`Connect to ${target.host}:${target.port} timed out after ${options.connectTimeoutMs} ms`)), options.connectTimeoutMs);
		session.once('connect', () => {
			clearTimeout(timer);
			s.ready = true;
			this.#reconnect.succeeded();
			events.connected({ connection: s.id });
			this.#startPinging(s);
			this.wake();
		});
		session.on('remoteSettings', (settings: http2.Settings) => {
			s.remoteLimit = Math.max(1, Math.min(settings.maxConcurrentStreams ?? options.maxStreamsPerSession, options.maxStreamsPerSession));
			this.wake();
		});
		session.on('goaway', (_code: number, lastStreamId: number) => {
			s.lastStreamId = lastStreamId;
			this.wake(); // a new session takes over
		});
		session.on('error', (error: Error) => {
			failure ??= error;
		});
		session.on('close', () => {
			clearTimeout(timer);
			clearInterval(s.pingTimer);
			this.#sessions.delete(s);
			// Streams still open when the session died: the server may or may not have processed them.
			const lost = [...s.streams.values()];
			s.streams.clear();
			if (!this.#destroyed) this.#ctx.queue.requeue(lost, 'sessionLost');
			if (!s.ready) {
				if (!this.#destroyed && !this.#closing) {
					const reason = failure?.message ?? 'closed during the handshake';
					events.connectError(new ConnectionError(`Cannot connect to ${target.host}:${target.port}: ${reason}`, { cause: failure }), this.#reconnect.failed());
				}
			} else {
				events.disconnected({
					connection: s.id,
					reason: this.#destroyed ? 'destroyed' : this.#closing ? 'closed' : s.lastStreamId !== undefined ? 'goaway' : 'silentClose',
					...(failure === undefined ? {} : { error: failure }),
				});
			}
			if (this.#sessions.size === 0) for (const resolve of this.#closeWaiters.splice(0)) resolve();
			if (!this.#closing) this.wake();
		});
	}

	#startPinging(s: Session): void {
		const { pingIntervalMs, pingTimeoutMs } = this.#ctx.options;
		s.pingTimer = setInterval(() => {
			if (performance.now() - s.lastActivity < pingIntervalMs || s.session.destroyed) return;
			let answered = false;
			const deadline = setTimeout(() => {
				if (!answered) s.session.destroy(new ConnectionError(`PING unanswered for ${pingTimeoutMs} ms`));
			}, pingTimeoutMs);
			const sent = s.session.ping((error) => {
				answered = true;
				clearTimeout(deadline);
				if (error === null) s.lastActivity = performance.now();
			});
			if (!sent) clearTimeout(deadline);
		}, Math.max(10, Math.floor(pingIntervalMs / 2)));
		s.pingTimer.unref();
	}

	/** What every notification of `m` shares, as header values (a broadcast is one message: made once, not per token). */
	#shared(m: Message): SharedHeaders {
		let h = this.#headers.get(m);
		if (h === undefined) {
			const base = m.topic ?? this.#ctx.topic;
			h = { priority: String(m.priority), expiration: m.expiry === undefined ? undefined : String(m.expiry), topic: base === undefined ? undefined : topicFor(base, m.pushType) };
			this.#headers.set(m, h);
		}
		return h;
	}

	#request(s: Session, n: InFlight): void {
		const { token } = this.#ctx;
		const m = n.message;
		const shared = this.#shared(m);
		const headers: http2.OutgoingHttpHeaders & { [key: symbol]: readonly string[] } = {
			':method': 'POST',
			':path': `/3/device/${m.token(n.index)}`,
			'apns-push-type': m.pushType,
			'apns-priority': shared.priority,
		};
		if (shared.expiration !== undefined) headers['apns-expiration'] = shared.expiration;
		if (shared.topic !== undefined) headers['apns-topic'] = shared.topic;
		if (m.collapseId !== undefined) headers['apns-collapse-id'] = m.collapseId;
		if (token !== undefined) {
			const jwt = token.current();
			if (jwt !== this.#jwt) {
				this.#jwt = jwt;
				this.#authorization = `bearer ${jwt}`;
			}
			headers['authorization'] = this.#authorization;
		}
		headers[http2.sensitiveHeaders] = NEVER_INDEXED;
		const stream = s.session.request(headers);
		s.streams.set(stream, n);
		s.lastActivity = performance.now();
		let status = 0;
		let retryAfter: number | undefined;
		const chunks: Buffer[] = [];
		stream.on('response', (h: http2.IncomingHttpHeaders) => {
			status = Number(h[':status']);
			const after = Number(h['retry-after']);
			if (Number.isFinite(after) && after >= 0) retryAfter = after * 1000;
		});
		stream.on('data', (chunk: Buffer) => chunks.push(chunk));
		stream.on('error', () => {}); // 'close' decides
		stream.on('close', () => {
			if (!s.streams.delete(stream)) return; // the session's close handled it
			s.lastActivity = performance.now();
			if (status === 0) {
				// No response: refused, or cut off by GOAWAY above lastStreamId — never processed.
				const unprocessed = stream.rstCode === NGHTTP2_REFUSED_STREAM || (s.lastStreamId !== undefined && (stream.id === undefined || stream.id > s.lastStreamId));
				this.#ctx.queue.requeue([n], unprocessed ? 'goaway' : 'sessionLost');
			} else {
				this.#answer(s, n, status, chunks, retryAfter);
			}
			this.wake();
		});
		stream.end(m.encodedPayload);
	}

	#answer(s: Session, n: InFlight, status: number, chunks: Buffer[], retryAfter: number | undefined): void {
		const { queue, options, token } = this.#ctx;
		if (status === 200) {
			s.authorized = true;
			queue.settleDelivered();
			return;
		}
		let reason = `HTTP ${status}`;
		let timestamp: Date | undefined;
		try {
			const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { reason?: unknown; timestamp?: unknown };
			if (typeof body.reason === 'string') reason = body.reason;
			if (typeof body.timestamp === 'number') timestamp = new Date(body.timestamp);
		} catch {
			// No JSON body: keep the status as the reason.
		}
		if (reason === 'ExpiredProviderToken' && token !== undefined && n.tries < options.maxAttempts) {
			token.expired(); // a new token, unless one was made within 20 minutes
			this.#retryLater(n, backoffDelay(n.tries, options.retry));
		} else if (reason === 'IdleTimeout' && n.tries < options.maxAttempts) {
			s.lastStreamId ??= 0; // take no new streams here; a new session takes over
			s.session.close();
			queue.requeue([n], 'retry');
		} else if ((status === 429 || status === 500 || status === 503) && n.tries < options.maxAttempts) {
			this.#retryLater(n, Math.max(backoffDelay(n.tries, options.retry), retryAfter ?? 0));
		} else {
			queue.settleFailed(n, status, { reason, timestamp });
		}
	}

	/** Re-queue `n` after `delayMs`; it stays outstanding meanwhile. */
	#retryLater(n: InFlight, delayMs: number): void {
		this.#delayed.push({ at: performance.now() + delayMs, n });
		this.#armDelay();
	}

	#armDelay(): void {
		clearTimeout(this.#delayTimer);
		this.#delayTimer = undefined;
		if (this.#delayed.length === 0 || this.#destroyed) return;
		const next = Math.min(...this.#delayed.map((d) => d.at));
		this.#delayTimer = setTimeout(() => {
			const now = performance.now();
			const due = this.#delayed.filter((d) => d.at <= now);
			this.#delayed = this.#delayed.filter((d) => d.at > now);
			this.#ctx.queue.requeue(
				due.map((d) => d.n),
				'retry',
			);
			this.#armDelay();
		}, Math.max(0, next - performance.now()));
	}

	close(): Promise<void> {
		this.#closing = true;
		this.#reconnect.cancel();
		if (this.#sessions.size === 0) return Promise.resolve();
		const done = new Promise<void>((resolve) => this.#closeWaiters.push(resolve));
		for (const s of this.#sessions) s.session.close();
		return done;
	}

	destroy(): void {
		this.#destroyed = true;
		this.#closing = true;
		this.#reconnect.cancel();
		clearTimeout(this.#delayTimer);
		this.#delayed = [];
		for (const s of this.#sessions) {
			clearInterval(s.pingTimer);
			s.session.destroy();
		}
	}
}
