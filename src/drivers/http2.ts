/**
 * The HTTP/2 driver: Apple's current provider API over `node:http2` (its rules are in protocol/http2.ts).
 * It runs wherever its backend runs it (the caller's event loop, or a worker thread).
 *
 * A pool of `connections` sessions. Each takes notifications from the queue only while its streams in
 * flight are below the server's SETTINGS_MAX_CONCURRENT_STREAMS (updated on every remote SETTINGS, capped
 * by `maxStreamsPerSession`; with token auth 1 until a request has succeeded on some session, as Apple
 * requires — APNs' own SETTINGS then say what a new session may carry), so a million queued tokens never
 * become a million streams. Each response settles its notification:
 * 200 delivered; 410 failed and reported as feedback; 429/500/503 retried with backoff (honouring
 * `retry-after`) up to `maxAttempts`; ExpiredProviderToken retried with a fresh token; IdleTimeout retried
 * on a new session; other rejections failed with APNs' reason. GOAWAY re-queues the streams the server
 * never processed (id > lastStreamId) ahead of new work; a session lost with streams in flight re-queues
 * them too (they may be delivered twice: give them an `apns-collapse-id` to make that harmless).
 *
 * Hostile peers cost a bounded, backed-off amount of work. A stream reset (RST_STREAM) is an attempt of
 * its notification, retried with the `retry` backoff and reported failed (`StreamReset`) once out of
 * attempts. So is a request unanswered for `requestTimeoutMs` on a session that is otherwise alive — the
 * peer answered something sent after it, another request or a PING — and the session is kept with its
 * stream limit: a black hole costs each notification its own attempts, side by side. Its stream is
 * cancelled (RST_STREAM CANCEL) within a reset budget ({@link RESET_BURST}): a flood of resets is what
 * servers shut out as a "rapid reset" attack. A session with more black holes than its budget is retired
 * instead: it takes no new streams and is closed once nothing on it awaits an answer, which frees them
 * all; its replacement opens through the connect ceiling and the reconnect backoff. A session that
 * answers nothing, not even the PING sent once its oldest request has waited {@link SUSPECT_MS},
 * is dead: it is destroyed at `pingTimeoutMs` and its requests are lost with it (below); so is one whose
 * request is still not known to be read `pingTimeoutMs` after its deadline (a closing session cannot be
 * PINGed; flow control can hold a request's frames back). When the black holes of the last
 * `requestTimeoutMs`, with the suspects (read, unanswered for {@link SUSPECT_MS}), would fill half a
 * session and every session is full while work waits, the pool opens more sessions than `connections`,
 * up to {@link BLACK_HOLE_SESSIONS} times as many, so that what waits is not queued behind requests that
 * will never be answered; the extra sessions are closed once idle with no black hole for
 * `requestTimeoutMs`. Retries wait in one {@link DueQueue} (O(log n), one timer).
 * A session that ends before the gateway settled any notification on it is a failed connect attempt
 * (backoff, `connectError`), however it ended. A session lost with requests in flight, whatever it did
 * before, halves the streams every session may carry (to 1 after another loss with no settlement between,
 * and after an unanswered session), growing back by one per settled notification, as the binary window
 * does: a notification that kills sessions is soon alone when it does, and that is counted against it.
 */
import http2 from 'node:http2';
import type { BackendContext } from '../backends/backend.js';
import { connectTls } from '../credentials.js';
import { ConnectionError } from '../errors.js';
import type { Message } from '../message.js';
import { errorCodeName as codeName, readAnswer, topicFor } from '../protocol/http2.js';
import type { FailureDetail, InFlight, ResendReason } from '../queue.js';
import { backoffDelay, TokenBucket } from './backoff.js';
import { Driver } from './driver.js';
import { CLOSE_LINGER_MS, DueQueue } from './schedule.js';

const { NGHTTP2_REFUSED_STREAM, NGHTTP2_CANCEL } = http2.constants;

/**
 * Header fields sent as never-indexed literals. Apple asks for `:path` and `authorization` to stay out of
 * its small HPACK table: each path is used once, and filling the table with them would evict the fields
 * every request repeats.
 */
const NEVER_INDEXED: readonly string[] = Object.freeze([':path', 'authorization']);

/** Client stream ids are odd and below 2^31: a session is replaced well before it runs out of them. */
const MAX_REQUESTS_PER_SESSION = 2 ** 30 - 1024;

/**
 * While black holes hold the pool's streams, it may grow to this many times `connections` sessions:
 * 5,000 black-holed notifications fit in five sessions of 1,000 streams.
 */
export const BLACK_HOLE_SESSIONS = 8;

/**
 * A request the peer has read and not answered in this long (at most half of `requestTimeoutMs`) is a
 * suspected black hole: APNs answers in milliseconds. Suspects count toward growing the pool as black
 * holes do, so work queued behind a session full of them starts its attempts now, not a
 * `requestTimeoutMs` later; and a session whose oldest request is unanswered this long is PINGed.
 */
const SUSPECT_MS = 1000;

function suspectAfter(requestTimeoutMs: number): number {
	return Math.min(SUSPECT_MS, requestTimeoutMs / 2);
}

/**
 * RST_STREAMs a session may send: a burst, then so many a second. Servers built on nghttp2 (1.57 and
 * later) answer more than 1,000 resets at once, or more than 33 a second after that, with GOAWAY
 * INTERNAL_ERROR as a "rapid reset" attack (CVE-2023-44487); we stay well under both. A request past
 * its deadline beyond this budget is settled at once all the same, and its session is retired (closed
 * once nothing on it awaits an answer) rather than reset further: so each replacement session costs
 * the gateway more than `RESET_BURST` black-holed requests.
 */
export const RESET_BURST = 500;
export const RESETS_PER_SECOND = 20;

/** Header values a message's notifications share. */
interface SharedHeaders {
	readonly priority: string;
	/** Left out when the message has none: APNs then stores it under its own policy. */
	readonly expiration: string | undefined;
	readonly topic: string | undefined;
}

/** A request in flight. */
interface Pending {
	readonly n: InFlight;
	readonly sentAt: number;
	/** Its place among the session's requests (`Session.requests` when it was made). */
	readonly seq: number;
	/** Past its deadline: settled then (an attempt); its stream is cancelled, or waits for the reset budget. */
	timedOut: boolean;
}

/** A re-send waiting out its delay, with why it was re-sent. */
interface Delayed {
	readonly n: InFlight;
	readonly reason: ResendReason;
}

class Session {
	readonly id: number;
	readonly session: http2.ClientHttp2Session;
	/** Its TLS socket: after a graceful close Node waits for the peer to close it, which a hostile peer never does. */
	socket: import('node:tls').TLSSocket | undefined;
	/** Counted as a failed attempt already (it went away unanswered). */
	failed = false;
	/** Destroys it if it is still there when it should long be gone. */
	lingerTimer: NodeJS.Timeout | undefined;
	readonly streams = new Map<http2.ClientHttp2Stream, Pending>();
	ready = false;
	/** Streams the server allows at once (its SETTINGS, capped). */
	remoteLimit = 1;
	/** Token auth: Apple allows one stream until a request succeeded (on any session: the key is good). */
	authorized: boolean;
	/** The gateway settled a notification here. */
	progress = false;
	/** Requests made (stream ids are finite). */
	requests = 0;
	/** GOAWAY received: no new streams; those above this id were never processed. */
	lastStreamId: number | undefined;
	/** Streams in flight when GOAWAY came: one alone is counted when refused. */
	inFlightAtGoaway = 0;
	lastActivity = performance.now();
	/**
	 * The peer has read every request up to this one (by `Pending.seq`): it answered this one, or a PING
	 * sent after it. A request up to it that is still unanswered reached a live peer: a black hole.
	 */
	readThrough = 0;
	/** A PING is out. */
	pinging = false;
	/** Requests the peer has read that are unanswered after {@link suspectAfter} but not yet past their deadline (at the last sweep). */
	suspects = 0;
	/** RST_STREAMs it may send now (see {@link RESET_BURST}). */
	readonly resets = new TokenBucket(RESETS_PER_SECOND, RESET_BURST);
	/** Closed by us for want of work (an extra session once black holes are gone): not a failure. */
	unneeded = false;
	/**
	 * Full of black holes past the reset budget: takes no new streams, and is closed once nothing on it
	 * awaits an answer, which frees every stream without a reset. Not a failure: it answered.
	 */
	retiring = false;
	pingTimer: NodeJS.Timeout | undefined;
	sweepTimer: NodeJS.Timeout | undefined;

	constructor(id: number, session: http2.ClientHttp2Session, tokenAuth: boolean) {
		this.id = id;
		this.session = session;
		this.authorized = !tokenAuth;
	}

	get limit(): number {
		return this.authorized ? this.remoteLimit : 1;
	}

	/** Takes new streams: up, not told to go away, not closing. */
	get usable(): boolean {
		return this.ready && this.live;
	}

	/** Not going away: counts toward the pool. */
	get live(): boolean {
		return this.lastStreamId === undefined && !this.retiring && !this.session.closed && !this.session.destroyed;
	}
}

/** The HTTP/2 driver. */
export function createHttp2Driver(context: BackendContext): Http2Driver {
	return new Http2Driver(context);
}

export class Http2Driver extends Driver {
	readonly #sessions = new Set<Session>();
	#ids = 0;
	/** Streams a session may carry after losses (see the module comment); Infinity when none is recent. */
	#cap = Infinity;
	/** A session was lost or went unanswered and nothing has been settled since. */
	#lostSinceSettled = false;
	/** Notifications waiting out a retry delay. */
	readonly #delayed: DueQueue<Delayed>;
	/** Requests past their deadline on a live session (black holes): when, and how many, oldest first. */
	readonly #holes: Array<{ readonly at: number; readonly count: number }> = [];
	/** Weak: a finished message (and its tokens) must not be kept alive by this cache. */
	readonly #headers = new WeakMap<Message, SharedHeaders>();
	#jwt = '';
	#authorization = '';
	/** Token auth: a request succeeded, so the key is good; every session carries what its server allows. */
	#proven = false;

	constructor(context: BackendContext) {
		super(context);
		this.#delayed = new DueQueue((due) => this.#requeueDue(due));
	}

	protected get connectionCount(): number {
		return this.#sessions.size;
	}

	protected pump(): void {
		if (this.destroyed) return;
		const { queue } = this.ctx;
		const { connections, maxStreamsPerSession } = this.ctx.setup.options;
		this.#connectUpTo(connections);
		const cap = Math.min(maxStreamsPerSession, this.#cap);
		for (const s of this.#sessions) {
			if (!s.usable) continue;
			while (s.streams.size < Math.min(s.limit, cap)) {
				const n = queue.takeOne();
				if (n === undefined) {
					this.#closeIdle();
					return;
				}
				this.#request(s, n);
			}
		}
		// Work waits and every session that is up carries all it may.
		if (this.#clogged()) this.#connectUpTo(connections * BLACK_HOLE_SESSIONS);
	}

	/** Open a session if work waits and fewer than `wanted` are up or opening (one opening at a time). */
	#connectUpTo(wanted: number): void {
		let live = 0;
		for (const s of this.#sessions) {
			if (!s.live) continue;
			if (!s.ready) return;
			live++;
		}
		// take() last: it spends a token of the connection-rate ceiling.
		if (this.ctx.queue.canTake && !this.closing && !this.reconnect.waiting && live < wanted && this.rate.take()) this.#connect();
	}

	/** Requests that timed out on a live session (black holes) within the last `requestTimeoutMs`. */
	#recentHoles(): number {
		const since = performance.now() - this.ctx.setup.options.requestTimeoutMs;
		while (this.#holes.length > 0 && this.#holes[0]!.at < since) this.#holes.shift();
		let holes = 0;
		for (const h of this.#holes) holes += h.count;
		return holes;
	}

	/**
	 * Black holes fill the pool: those of the last `requestTimeoutMs`, and the suspects on the sessions
	 * in the pool, would fill half the widest session
	 * (by what its server allows: neither a token-auth session's lone first stream nor the cap after a
	 * loss is a measure).
	 */
	#clogged(): boolean {
		let holes = this.#recentHoles();
		const { maxStreamsPerSession } = this.ctx.setup.options;
		let widest = 0;
		for (const s of this.#sessions) {
			if (!s.live) continue;
			widest = Math.max(widest, Math.min(s.remoteLimit, maxStreamsPerSession));
			holes += s.suspects;
		}
		return holes > 0 && holes * 2 >= widest;
	}

	/** Nothing waits: once no black hole was seen for `requestTimeoutMs`, close the idle sessions beyond `connections` (opened for them). */
	#closeIdle(): void {
		const { connections } = this.ctx.setup.options;
		let live = 0;
		for (const s of this.#sessions) if (s.live) live++;
		if (live <= connections || this.#recentHoles() > 0) return;
		for (const s of this.#sessions) {
			if (live <= connections) return;
			if (!s.usable || s.streams.size > 0) continue;
			live--;
			s.unneeded = true;
			s.session.close();
			this.#retire(s, CLOSE_LINGER_MS);
		}
	}

	#connect(): void {
		const { tls: target, options } = this.ctx.setup;
		const { events } = this.ctx;
		const authority = `https://${target.host}:${target.port}`;
		let socket: import('node:tls').TLSSocket | undefined;
		const session = http2.connect(authority, {
			createConnection: () => (socket = connectTls(target, { ALPNProtocols: ['h2'] })),
			peerMaxConcurrentStreams: 1,
		});
		const s = new Session(++this.#ids, session, this.ctx.setup.tokenAuth && !this.#proven);
		s.socket = socket;
		this.#sessions.add(s);
		let failure: Error | undefined;
		const timer = this.connecting((error) => session.destroy(error));
		session.once('connect', () => {
			clearTimeout(timer);
			s.ready = true;
			events.connected({ connection: s.id });
			this.#startTimers(s);
			this.wake();
		});
		session.on('remoteSettings', (settings: http2.Settings) => {
			s.remoteLimit = Math.max(1, Math.min(settings.maxConcurrentStreams ?? options.maxStreamsPerSession, options.maxStreamsPerSession));
			this.wake();
		});
		session.on('goaway', (code: number, lastStreamId: number) => {
			s.lastStreamId = lastStreamId;
			s.inFlightAtGoaway = this.#inFlight(s);
			failure ??= new ConnectionError(`GOAWAY ${codeName(code)} (last stream ${lastStreamId})`);
			// Counted now, not at 'close': the peer decides when that comes, and the next session must wait.
			this.#failedUnanswered(s, failure);
			this.#retire(s, options.requestTimeoutMs + CLOSE_LINGER_MS);
			this.wake(); // a new session takes over
		});
		session.on('error', (error: Error) => {
			failure ??= error;
		});
		session.on('close', () => {
			clearTimeout(timer);
			clearInterval(s.pingTimer);
			clearInterval(s.sweepTimer);
			clearTimeout(s.lingerTimer);
			this.#sessions.delete(s);
			// Streams still open when the session died: those above a GOAWAY's lastStreamId were never
			// processed; the others may or may not have been.
			const lost: InFlight[] = [];
			const refused: InFlight[] = [];
			for (const [stream, p] of s.streams) {
				if (!p.timedOut) (s.lastStreamId !== undefined && stream.id !== undefined && stream.id > s.lastStreamId ? refused : lost).push(p.n);
			}
			s.streams.clear();
			const ours = this.destroyed || ((this.closing || s.unneeded || s.retiring) && lost.length + refused.length === 0 && failure === undefined);
			if (!this.destroyed) {
				this.ctx.queue.requeue(refused, 'goaway');
				if (lost.length === 1) {
					const n = lost[0]!;
					this.#retryOrFail(n, 'unanswered', backoffDelay(n.tries, options.retry), 0, { reason: 'ConnectionLost', description: `No answer in ${n.tries} attempts: each time its session ended while it was the only request on it${failure === undefined ? '' : ` (last: ${failure.message})`}` });
				} else {
					this.ctx.queue.requeue(lost, 'sessionLost');
				}
				if (!ours && lost.length > 0) this.#shrink(lost.length);
			}
			if (!ours) this.#failedUnanswered(s, failure, lost.length + refused.length);
			if (s.ready) {
				events.disconnected({
					connection: s.id,
					reason: this.destroyed ? 'destroyed' : ours ? 'closed' : s.lastStreamId !== undefined ? 'goaway' : 'silentClose',
					...(failure === undefined ? {} : { error: failure }),
				});
			}
			this.connectionGone();
		});
	}

	/** PING an idle session (a dead peer is found and replaced), and cancel requests past their deadline. */
	#startTimers(s: Session): void {
		const { pingIntervalMs, requestTimeoutMs } = this.ctx.setup.options;
		s.pingTimer = setInterval(() => {
			if (performance.now() - s.lastActivity >= pingIntervalMs) this.#ping(s);
		}, Math.max(10, Math.floor(pingIntervalMs / 2)));
		s.pingTimer.unref();
		// One sweep per session rather than a timer per request.
		s.sweepTimer = setInterval(() => this.#sweep(s), Math.max(10, Math.min(250, Math.floor(requestTimeoutMs / 8))));
		s.sweepTimer.unref();
	}

	/**
	 * Cancel each request past `requestTimeoutMs` that the peer is known to have read: it answered
	 * something sent after it (a request, or a PING), so the session is alive and that request alone was
	 * never answered. One that has waited half its time with nothing sent after it answered gets the
	 * session PINGed, so the question is settled by its deadline; a session that does not answer the PING
	 * in `pingTimeoutMs` is dead and destroyed, and its requests are lost with it.
	 */
	#sweep(s: Session): void {
		if (s.session.destroyed) return;
		const { requestTimeoutMs, pingTimeoutMs } = this.ctx.setup.options;
		const now = performance.now();
		const suspectMs = suspectAfter(requestTimeoutMs);
		let cancelled = 0;
		let suspects = 0;
		// Streams are kept in the order sent: the first one not yet suspect ends the sweep.
		for (const [stream, p] of s.streams) {
			if (p.timedOut) continue;
			const waited = now - p.sentAt;
			if (waited < suspectMs) break;
			if (s.readThrough < p.seq) {
				// Nor is any later one known to have reached the peer. PINGs answered while it still is not
				// (its frames held back by flow control, or a closing session that cannot be PINGed): stuck.
				if (waited >= requestTimeoutMs + pingTimeoutMs) s.session.destroy(new ConnectionError(`A request was not read for ${Math.round(waited)} ms though the session is up: it is replaced`));
				else this.#ping(s);
				break;
			}
			if (waited < requestTimeoutMs) {
				suspects++;
				continue;
			}
			p.timedOut = true;
			cancelled++;
			this.#unanswered(s, stream, p);
			if (s.retiring) continue; // its streams go with it
			if (s.resets.take()) stream.close(NGHTTP2_CANCEL);
			else this.#startRetiring(s);
		}
		this.#retired(s);
		const more = suspects > s.suspects;
		s.suspects = suspects;
		if (cancelled > 0) this.#holes.push({ at: now, count: cancelled });
		if (cancelled > 0 || more) {
			this.wake(); // the pool may grow beside sessions full of them
		} else if (s.streams.size === 0 && this.#sessions.size > this.ctx.setup.options.connections) {
			this.wake(); // an extra session may be closed once idle
		}
	}

	/**
	 * `s` has more black holes than its reset budget allows: rather than
	 * hold their streams until the budget refills, it takes no new streams and is closed once nothing on it
	 * awaits an answer; the pool opens its replacement through the connect ceiling and the reconnect
	 * backoff like any other session. The streams already reset stay reset; the rest are freed by the close.
	 */
	#startRetiring(s: Session): void {
		s.retiring = true;
		this.wake(); // a replacement may open
	}

	/** A retiring session with nothing left awaiting an answer is closed (its black holes with it). */
	#retired(s: Session): void {
		if (!s.retiring || s.session.destroyed || this.#inFlight(s) > 0) return;
		s.session.destroy();
		s.socket?.destroy();
	}

	/**
	 * PING `s` (one at a time; a closing session cannot be): unanswered in `pingTimeoutMs`, it is
	 * destroyed; answered, the requests it followed reached the peer and the overdue ones are settled.
	 * nghttp2 sends a PING ahead of frames still in its queue, so it follows only what had left the
	 * queue when it was sent.
	 */
	#ping(s: Session): void {
		if (s.pinging || s.session.destroyed || s.session.closed) return;
		const { pingTimeoutMs } = this.ctx.setup.options;
		const deadline = setTimeout(() => s.session.destroy(new ConnectionError(`PING unanswered for ${pingTimeoutMs} ms (pingTimeoutMs)`)), pingTimeoutMs);
		const after = s.session.state.outboundQueueSize === 0 ? s.requests : s.readThrough;
		s.pinging = s.session.ping((error) => {
			s.pinging = false;
			clearTimeout(deadline);
			if (error !== null) return;
			s.lastActivity = performance.now();
			s.readThrough = Math.max(s.readThrough, after);
			this.#sweep(s);
		});
		if (!s.pinging) clearTimeout(deadline);
	}

	/** What every notification of `m` shares, as header values (a broadcast is one message: made once, not per token). */
	#shared(m: Message): SharedHeaders {
		let h = this.#headers.get(m);
		if (h === undefined) {
			const base = m.topic ?? this.ctx.setup.topic;
			h = { priority: String(m.priority), expiration: m.expiry === undefined ? undefined : String(m.expiry), topic: base === undefined ? undefined : topicFor(base, m.pushType) };
			this.#headers.set(m, h);
		}
		return h;
	}

	#request(s: Session, n: InFlight): void {
		const { token, apnsIds } = this.ctx;
		const m = n.message;
		const shared = this.#shared(m);
		const headers: http2.OutgoingHttpHeaders & { [key: symbol]: readonly string[] } = {
			':method': 'POST',
			':path': `/3/device/${m.token(n.index)}`,
			'apns-push-type': m.pushType,
			'apns-priority': shared.priority,
		};
		if (apnsIds !== undefined) headers['apns-id'] = apnsIds.of(m, n.index);
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
		if (++s.requests >= MAX_REQUESTS_PER_SESSION) {
			s.session.close(); // takes no more; a new session takes over
			this.#retire(s, this.ctx.setup.options.requestTimeoutMs + CLOSE_LINGER_MS);
		}
		const pending: Pending = { n, sentAt: performance.now(), seq: s.requests, timedOut: false };
		s.streams.set(stream, pending);
		s.lastActivity = pending.sentAt;
		let status = 0;
		let retryAfter: number | undefined;
		const chunks: Buffer[] = [];
		stream.on('response', (h: http2.IncomingHttpHeaders) => {
			s.readThrough = Math.max(s.readThrough, pending.seq);
			status = Number(h[':status']);
			const after = Number(h['retry-after']);
			if (Number.isFinite(after) && after >= 0) retryAfter = after * 1000;
		});
		stream.on('data', (chunk: Buffer) => chunks.push(chunk));
		stream.on('error', () => {}); // 'close' decides
		stream.on('close', () => {
			if (this.destroyed || !s.streams.has(stream)) return; // dropped, or the session's close handled it
			if (pending.timedOut) {
				// Settled at its deadline (an answer that came later is not read: it was re-sent, in doubt); its place is free.
				s.streams.delete(stream);
				this.wake();
				return;
			}
			// Cut off with its session: the session's close re-queues all of them together.
			if (status === 0 && s.session.destroyed) return;
			s.streams.delete(stream);
			s.lastActivity = performance.now();
			// Reset by the peer: it read this one.
			if (status === 0 && stream.rstCode !== undefined) s.readThrough = Math.max(s.readThrough, pending.seq);
			if (status === 0) this.#unanswered(s, stream, pending);
			else this.#answer(s, n, status, chunks, retryAfter);
			this.#retired(s);
			this.wake();
		});
		stream.end(m.encodedPayload);
	}

	/** A stream closed without a response: refused, reset, cut off by GOAWAY, or cancelled at its deadline. */
	#unanswered(s: Session, stream: http2.ClientHttp2Stream, p: Pending): void {
		const { queue } = this.ctx;
		const { options } = this.ctx.setup;
		const n = p.n;
		const delay = backoffDelay(n.tries, options.retry);
		if (p.timedOut) {
			this.#retryOrFail(n, 'unanswered', delay, 0, { reason: 'RequestTimeout', description: `No answer within ${options.requestTimeoutMs} ms (requestTimeoutMs), ${n.tries} times` });
		} else if (s.lastStreamId !== undefined && (stream.id === undefined || stream.id > s.lastStreamId)) {
			// GOAWAY: never processed. Alone, it was the only candidate for why the server went away.
			if (s.inFlightAtGoaway <= 1) this.#retryOrFail(n, 'refused', delay, 0, { reason: 'ConnectionLost', description: `Refused by GOAWAY ${n.tries} times, each time the only request on its session` });
			else queue.requeue([n], 'goaway');
		} else {
			const code = stream.rstCode ?? NGHTTP2_CANCEL;
			const reason: ResendReason = code === NGHTTP2_REFUSED_STREAM ? 'refused' : 'unanswered';
			this.#retryOrFail(n, reason, delay, 0, { reason: 'StreamReset', description: `The server reset its stream (${codeName(code)}) ${n.tries} times` });
		}
	}

	#answer(s: Session, n: InFlight, status: number, chunks: Buffer[], retryAfter: number | undefined): void {
		const { queue, token } = this.ctx;
		const { options } = this.ctx.setup;
		const { meaning, reason, timestamp } = readAnswer(status, chunks.length === 0 ? Buffer.alloc(0) : Buffer.concat(chunks), token !== undefined);
		if (meaning === 'delivered') {
			if (!this.#proven && token !== undefined) {
				this.#proven = true;
				for (const other of this.#sessions) other.authorized = true;
			}
			s.authorized = true;
			this.#settled(s);
			queue.settleDelivered(n);
			return;
		}
		const detail: FailureDetail = { reason, timestamp };
		if (meaning === 'expiredToken') {
			if (!queue.exhausted(n)) token!.expired(); // a new token, unless one was made within 20 minutes
			this.#retryOrFail(n, 'retry', backoffDelay(n.tries, options.retry), status, detail);
		} else if (meaning === 'idleTimeout' && !queue.exhausted(n)) {
			s.session.close(); // takes no new streams; a new session takes over
			this.#retire(s, options.requestTimeoutMs + CLOSE_LINGER_MS);
			this.#retryOrFail(n, 'retry', 0, status, detail);
		} else if (meaning === 'retry') {
			// retry-after is honoured up to the longest retry delay: a server asking for years would park it for good.
			const asked = Math.min(retryAfter ?? 0, options.retry.maxDelayMs);
			this.#retryOrFail(n, 'retry', Math.max(backoffDelay(n.tries, options.retry), asked), status, detail);
		} else {
			this.#settled(s);
			queue.settleFailed(n, status, detail);
		}
	}

	/**
	 * `s` went away (or is going) before the gateway settled anything on it: a failed connect attempt,
	 * counted once, reported with why, and the next session starts isolated.
	 */
	#failedUnanswered(s: Session, failure: Error | undefined, lost = this.#inFlight(s)): void {
		if (s.progress || s.failed || this.destroyed || this.closing) return;
		s.failed = true;
		this.#cap = 1;
		this.#lostSinceSettled = true;
		const { host, port } = this.ctx.setup.tls;
		this.failedAttempt(s.ready, `Session to ${host}:${port} ended before the gateway answered any of its requests (${lost} in flight)`, failure);
	}

	/** Requests in flight on `s` and not settled (those past their deadline hold their place until reset). */
	#inFlight(s: Session): number {
		let n = 0;
		for (const p of s.streams.values()) if (!p.timedOut) n++;
		return n;
	}

	/**
	 * `s` takes no new streams and is on its way out; it must be gone within `lingerMs` (its last requests
	 * have their own deadlines). Node closes a session gracefully by ending the socket and waiting for the
	 * peer to close it, which a hostile peer never does: then the socket is destroyed.
	 */
	#retire(s: Session, lingerMs: number): void {
		if (s.lingerTimer !== undefined) return;
		s.lingerTimer = setTimeout(() => {
			s.session.destroy();
			s.socket?.destroy();
		}, lingerMs);
		s.lingerTimer.unref();
	}

	/** The gateway settled a notification on `s`: it works, and so does the gateway. */
	#settled(s: Session): void {
		this.#lostSinceSettled = false;
		if (this.#cap !== Infinity && ++this.#cap >= this.ctx.setup.options.maxStreamsPerSession) this.#cap = Infinity;
		if (s.progress) return;
		s.progress = true;
		this.reconnect.succeeded();
	}

	/** A session was lost with `inFlight` requests on it: halve the stream cap, or 1 if nothing settled since the last loss. */
	#shrink(inFlight: number): void {
		this.#cap = this.#lostSinceSettled ? 1 : Math.max(1, Math.floor(Math.min(this.#cap, inFlight) / 2));
		this.#lostSinceSettled = true;
	}

	/** An attempt of `n` ended without delivery: re-send it after `delayMs`, or report it once out of attempts. */
	#retryOrFail(n: InFlight, reason: ResendReason, delayMs: number, status: number, detail: FailureDetail): void {
		if (this.destroyed) return; // dropped with everything else
		if (this.ctx.queue.exhausted(n)) this.ctx.queue.settleFailed(n, status, detail);
		else this.#delayed.add({ n, reason }, delayMs);
	}

	/** Due re-sends go back in due order, ahead of new work; one batch per run of the same reason. */
	#requeueDue(due: Delayed[]): void {
		if (this.destroyed) return;
		let end = due.length;
		// requeue() puts a batch at the very front, so the last run goes first.
		while (end > 0) {
			const reason = due[end - 1]!.reason;
			let start = end - 1;
			while (start > 0 && due[start - 1]!.reason === reason) start--;
			this.ctx.queue.requeue(
				due.slice(start, end).map((d) => d.n),
				reason,
			);
			end = start;
		}
	}

	protected closeConnections(): void {
		for (const s of this.#sessions) {
			s.session.close();
			// Everything is settled by now (close flushes first): a peer that never lets go must not hold us.
			clearTimeout(s.lingerTimer);
			s.lingerTimer = undefined;
			this.#retire(s, CLOSE_LINGER_MS);
		}
	}

	protected destroyConnections(): InFlight[] {
		const held = this.#delayed.clear().map((d) => d.n);
		for (const s of this.#sessions) {
			for (const p of s.streams.values()) if (!p.timedOut) held.push(p.n);
			clearInterval(s.pingTimer);
			clearInterval(s.sweepTimer);
			clearTimeout(s.lingerTimer);
			s.session.destroy();
			s.socket?.destroy();
		}
		return held;
	}
}
