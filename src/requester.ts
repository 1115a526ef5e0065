/**
 * Requests the library makes one by one to an APNs host outside the notification pipeline (channel
 * management, broadcasts): one HTTP/2 session, opened on first use and held (ref'd) only while requests
 * run; each request bounded by `requestTimeoutMs`; each call retried on 429, 500, 503, an expired
 * provider token and no answer, with the `retry` backoff (honouring `retry-after`), up to `maxAttempts`.
 * What a call ends with — an accepted answer, or APNs' last status and reason — is the caller's to report.
 */
import http2 from 'node:http2';
import { connectTls, type TlsTarget } from './credentials.js';
import { backoffDelay } from './drivers/backoff.js';
import { ClosedError } from './errors.js';
import type { ReconnectOptions } from './options.js';
import { describeHttpStatus } from './protocol/http2.js';
import type { ProviderToken } from './provider-token.js';

/** What a requester needs from its manager. */
export interface RequesterSetup {
	readonly target: TlsTarget;
	readonly token: ProviderToken | undefined;
	readonly retry: Required<ReconnectOptions>;
	readonly maxAttempts: number;
	readonly connectTimeoutMs: number;
	readonly requestTimeoutMs: number;
}

/** An answer: status, headers, body. */
export interface Answered {
	readonly status: number;
	readonly headers: http2.IncomingHttpHeaders;
	readonly body: Buffer;
}

/** How a call ended: an answer it accepts, or the last failure once out of attempts (status 0: no answer). */
export type Outcome = { readonly ok: true; readonly answer: Answered; readonly attempts: number } | { readonly ok: false; readonly status: number; readonly reason: string; readonly attempts: number; readonly cause: unknown };

/** A request: method, path and headers (the `authorization` is added), and the body if any. */
export interface RequestInit {
	readonly method: string;
	readonly path: string;
	readonly headers: Readonly<Record<string, string>>;
	readonly body?: string | Buffer | undefined;
}

/** Statuses that say "try again later". */
const RETRY = new Set([429, 500, 503]);

/** One session to one host, and calls retried on it. */
export class Requester {
	readonly #setup: RequesterSetup;
	#session: http2.ClientHttp2Session | undefined;
	#connecting: Promise<http2.ClientHttp2Session> | undefined;
	#running = 0;
	readonly #idle = new Set<() => void>();
	readonly #sleeps = new Set<{ timer: NodeJS.Timeout; reject: (error: Error) => void }>();
	#state: 'open' | 'closing' | 'closed' = 'open';

	constructor(setup: RequesterSetup) {
		this.#setup = setup;
	}

	/** Calls not yet ended. */
	get running(): number {
		return this.#running;
	}

	/** Resolves once no call runs. */
	idle(): Promise<void> {
		if (this.#running === 0) return Promise.resolve();
		return new Promise<void>((resolve) => this.#idle.add(resolve));
	}

	/**
	 * Make the request until it is answered with one of `ok`, or out of attempts.
	 * @throws {@link ClosedError} when the requester closed before or while it ran.
	 */
	async call(init: RequestInit, ok: readonly number[]): Promise<Outcome> {
		if (this.#state !== 'open') throw new ClosedError();
		this.#running++;
		try {
			for (let attempt = 1; ; attempt++) {
				let status = 0;
				let reason: string;
				let retryAfterMs = 0;
				let cause: unknown;
				try {
					const answer = await this.#request(init);
					if (ok.includes(answer.status)) return { ok: true, answer, attempts: attempt };
					status = answer.status;
					const given = (parseJson(answer.body) as { reason?: unknown } | undefined)?.reason;
					reason = typeof given === 'string' ? given : describeHttpStatus(status);
					const after = Number(answer.headers['retry-after']);
					if (Number.isFinite(after) && after >= 0) retryAfterMs = Math.min(after * 1000, this.#setup.retry.maxDelayMs);
				} catch (error) {
					if (error instanceof ClosedError) throw error;
					cause = error;
					reason = error instanceof RequestTimeout ? 'RequestTimeout' : 'ConnectionLost';
				}
				const { token } = this.#setup;
				const expiredToken = status === 403 && reason === 'ExpiredProviderToken' && token !== undefined;
				if (expiredToken) token.expired();
				const again = status === 0 || RETRY.has(status) || expiredToken;
				if (!again || attempt >= this.#setup.maxAttempts || this.#state !== 'open') return { ok: false, status, reason, attempts: attempt, cause };
				await this.#sleep(Math.max(backoffDelay(attempt, this.#setup.retry), retryAfterMs));
			}
		} finally {
			if (--this.#running === 0) {
				this.#session?.unref();
				for (const resolve of this.#idle) resolve();
				this.#idle.clear();
			}
		}
	}

	/** No new call; calls waiting for their next attempt end now (ClosedError); the rest finish; then the session closes. */
	async close(): Promise<void> {
		if (this.#state !== 'open') return;
		this.#state = 'closing';
		this.#wakeSleepers(new ClosedError('The manager closed while a request waited to be tried again'));
		await this.idle();
		this.#state = 'closed';
		this.#session?.close();
		this.#session = undefined;
	}

	/** End the session now; calls running end with {@link ClosedError}. */
	destroy(): void {
		this.#state = 'closed';
		this.#wakeSleepers(new ClosedError());
		this.#session?.destroy();
		this.#session = undefined;
	}

	#wakeSleepers(error: Error): void {
		for (const s of this.#sleeps) {
			clearTimeout(s.timer);
			s.reject(error);
		}
		this.#sleeps.clear();
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
	async #request(init: RequestInit): Promise<Answered> {
		const session = await this.#open();
		session.ref();
		const { token, requestTimeoutMs } = this.#setup;
		const headers: http2.OutgoingHttpHeaders & { [key: symbol]: readonly string[] } = { ':method': init.method, ':path': init.path, ...init.headers };
		if (token !== undefined) headers['authorization'] = `bearer ${token.current()}`;
		headers[http2.sensitiveHeaders] = [':path', 'authorization'];
		return new Promise<Answered>((resolve, reject) => {
			const stream = session.request(headers, { endStream: init.body === undefined });
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
				if (status === 0) reject(this.#state === 'closed' ? new ClosedError() : new Error(`The stream closed without an answer (code ${stream.rstCode ?? 'none'})`));
				else resolve({ status, headers: answerHeaders, body: Buffer.concat(chunks) });
			});
			if (init.body !== undefined) stream.end(init.body);
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
			const failed = (error: Error): void => {
				clearTimeout(timer);
				gone();
				if (this.#connecting !== undefined && this.#session !== session) {
					this.#connecting = undefined;
					reject(error);
				}
			};
			session.once('connect', () => {
				clearTimeout(timer);
				this.#session = session;
				this.#connecting = undefined;
				resolve(session);
			});
			session.on('error', failed);
			session.on('goaway', gone);
			session.on('close', () => failed(new Error('The connection closed before it was ready')));
		});
		return this.#connecting;
	}
}

/** A request not answered in time (retried like any unanswered request). */
class RequestTimeout extends Error {}

/** `body` as JSON, or undefined when it is empty or not JSON. */
export function parseJson(body: Buffer): unknown {
	if (body.length === 0) return undefined;
	try {
		return JSON.parse(body.toString('utf8')) as unknown;
	} catch {
		return undefined;
	}
}
