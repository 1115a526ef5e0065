/**
 * HTTP CONNECT proxies (RFC 9110 §9.3.6) for gateway, feedback and HTTP/2 connections: option checks, the
 * HTTPS_PROXY / NO_PROXY environment, and the tunnel TLS runs over.
 *
 * `connectTls` must hand back a TLS socket at once (http2's `createConnection` is synchronous, and the
 * backends arm their connect timeout and error handling on that socket). So TLS is started over a
 * {@link Duplex} that dials the proxy and sends CONNECT; what TLS writes before the proxy has answered
 * 2xx (its ClientHello) is held and sent once it has. Any failure before that destroys the tunnel with a
 * {@link ConnectionError} naming the proxy; the TLS socket then emits `'error'` and `'close'`, as for a
 * failed direct connect. Destroying or ending the TLS socket (the backends' connect timeout, a session
 * destroyed mid-connect) destroys the tunnel and its socket to the proxy, so the timeout covers the CONNECT
 * phase too.
 */
import { BlockList, isIP, Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { ConnectionError, InvalidArgumentError } from './errors.js';
import type { Address, ProxyOptions } from './options.js';

/** The most a proxy's answer to CONNECT may hold before its blank line. */
const MAX_ANSWER_BYTES = 16 * 1024;

/**
 * A proxy ready to dial: its address and, when it needs one, the `Proxy-Authorization` it is sent. The
 * credentials live in a private field, so printing or serialising options never shows them.
 */
export class ResolvedProxy {
	readonly host: string;
	readonly port: number;
	#authorization: string | undefined;

	constructor(host: string, port: number, auth?: { readonly username: string; readonly password: string }) {
		this.host = host;
		this.port = port;
		this.#authorization = auth === undefined ? undefined : `Basic ${Buffer.from(`${auth.username}:${auth.password}`, 'utf8').toString('base64')}`;
	}

	/**
	 * The proxy as plain data, to cross to a worker thread (a structured clone drops private fields, and
	 * with them the credentials): rebuild it there with {@link ResolvedProxy.fromWire}. @internal
	 */
	toWire(): { host: string; port: number; authorization: string | undefined } {
		return { host: this.host, port: this.port, authorization: this.#authorization };
	}

	/** @internal See {@link ResolvedProxy.toWire}. */
	static fromWire(wire: { host: string; port: number; authorization: string | undefined }): ResolvedProxy {
		const proxy = new ResolvedProxy(wire.host, wire.port);
		proxy.#authorization = wire.authorization;
		return proxy;
	}

	/** Whether credentials are sent. */
	get authenticated(): boolean {
		return this.#authorization !== undefined;
	}

	/** `host:port` (brackets around an IPv6 address), never the credentials. */
	toString(): string {
		return authority(this.host, this.port);
	}

	/** The CONNECT request for a tunnel to `host:port`. */
	request(host: string, port: number): string {
		const target = authority(host, port);
		const auth = this.#authorization === undefined ? '' : `Proxy-Authorization: ${this.#authorization}\r\n`;
		return `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${auth}\r\n`;
	}
}

function authority(host: string, port: number): string {
	return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Open a tunnel to `host:port` through `proxy`: a stream that carries bytes once the proxy has answered
 * 2xx (what is written before is held until then), and is destroyed with a {@link ConnectionError} when
 * the proxy cannot be reached, refuses, answers something that is not HTTP, or the tunnel closes before a
 * byte came back.
 */
export function openTunnel(proxy: ResolvedProxy, host: string, port: number): Duplex {
	return new Tunnel(proxy, host, port);
}

class Tunnel extends Duplex {
	readonly #socket: Socket;
	readonly #proxy: ResolvedProxy;
	readonly #target: string;
	/** The proxy's answer so far; undefined once the tunnel is open. */
	#answer: Buffer | undefined = Buffer.alloc(0);
	/** A byte came through the open tunnel. */
	#received = false;
	/**
	 * What TLS wrote before the tunnel was open; undefined once it is. Taken at once, not held with its
	 * callback: TLS (through node's stream wrapper) cannot end a stream whose write is pending, and a
	 * session destroyed while the proxy is silent must still close.
	 */
	#held: Buffer[] | undefined = [];
	/** TLS ended its side before the tunnel was open. */
	#endWhenOpen = false;

	constructor(proxy: ResolvedProxy, host: string, port: number) {
		super();
		this.#proxy = proxy;
		this.#target = authority(host, port);
		const socket = new Socket();
		this.#socket = socket;
		socket.setNoDelay(true);
		socket.on('data', (chunk: Buffer) => {
			if (this.#answer === undefined) {
				this.#received = true;
				if (!this.push(chunk)) socket.pause();
			} else {
				this.#onAnswer(chunk);
			}
		});
		// An open tunnel that ends before the gateway sent a byte never carried a TLS handshake: say so
		// (TLS alone would only say the socket disconnected).
		const closedEmpty = `The tunnel through the proxy ${proxy} to ${this.#target} closed before a byte came back (the proxy, or the server behind it, hung up)`;
		socket.on('end', () => {
			if (this.#answer !== undefined) return; // 'close' follows
			if (this.#received) this.push(null);
			else this.#fail(closedEmpty);
		});
		socket.on('error', (error: Error) => {
			if (this.#answer !== undefined) this.#fail(`Cannot reach the proxy ${proxy} (${error.message})`, error);
			else if (!this.#received) this.#fail(`${closedEmpty}: ${error.message}`, error);
			else this.destroy(error);
		});
		socket.on('close', () => {
			if (this.#answer !== undefined) this.#fail(`The proxy ${proxy} closed the connection before answering CONNECT ${this.#target}`);
			else if (!this.#received) this.#fail(closedEmpty);
			else this.destroy();
		});
		socket.connect(proxy.port, proxy.host, () => socket.write(proxy.request(host, port)));
	}

	#onAnswer(chunk: Buffer): void {
		const answer = Buffer.concat([this.#answer!, chunk]);
		this.#answer = answer;
		const end = answer.indexOf('\r\n\r\n');
		const prefix = Math.min(5, answer.length);
		if (answer.toString('latin1', 0, prefix) !== 'HTTP/'.slice(0, prefix)) {
			this.#fail(`The proxy ${this.#proxy} answered CONNECT ${this.#target} with something that is not HTTP: ${shown(answer)}`);
			return;
		}
		if (end < 0) {
			if (answer.length > MAX_ANSWER_BYTES) this.#fail(`The proxy ${this.#proxy} answered CONNECT ${this.#target} with over ${MAX_ANSWER_BYTES} bytes of headers`);
			return;
		}
		const statusLine = answer.toString('latin1', 0, answer.indexOf('\r\n'));
		const status = /^HTTP\/\d(?:\.\d)? (\d{3})(?: |$)/.exec(statusLine)?.[1];
		if (status === undefined) {
			this.#fail(`The proxy ${this.#proxy} answered CONNECT ${this.#target} with something that is not HTTP: ${shown(answer)}`);
			return;
		}
		if (status[0] !== '2') {
			const hint =
				status === '407' ? (this.#proxy.authenticated ? ' (it did not accept the credentials in proxy.auth)' : ' (it wants credentials: give proxy.auth)') : '';
			this.#fail(`The proxy ${this.#proxy} refused CONNECT ${this.#target}: ${shown(Buffer.from(statusLine, 'latin1'))}${hint}`);
			return;
		}
		this.#answer = undefined;
		// Bytes after the answer already belong to the tunnel.
		if (end + 4 < answer.length) {
			this.#received = true;
			this.push(answer.subarray(end + 4));
		}
		const held = this.#held!;
		this.#held = undefined;
		if (held.length > 0) this.#send(held, () => {});
		if (this.#endWhenOpen) this.#socket.end();
	}

	#fail(message: string, cause?: Error): void {
		if (!this.destroyed) this.destroy(new ConnectionError(message, cause === undefined ? undefined : { cause }));
	}

	#send(chunks: Buffer[], callback: (error?: Error | null) => void): void {
		if (this.#held !== undefined) {
			this.#held.push(...chunks);
			callback();
			return;
		}
		const socket = this.#socket;
		if (chunks.length === 1) {
			socket.write(chunks[0]!, callback);
			return;
		}
		socket.cork();
		for (let i = 0; i < chunks.length - 1; i++) socket.write(chunks[i]!);
		socket.write(chunks[chunks.length - 1]!, callback);
		socket.uncork();
	}

	override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
		this.#send([chunk], callback);
	}

	override _writev(chunks: Array<{ chunk: Buffer }>, callback: (error?: Error | null) => void): void {
		this.#send(
			chunks.map((c) => c.chunk),
			callback,
		);
	}

	override _read(): void {
		if (this.#answer === undefined) this.#socket.resume();
	}

	override _final(callback: (error?: Error | null) => void): void {
		if (this.#held === undefined) this.#socket.end();
		else this.#endWhenOpen = true;
		callback();
	}

	override _destroy(error: Error | null, callback: (error: Error | null) => void): void {
		this.#socket.destroy();
		this.#held = undefined;
		callback(error);
	}
}

/** A proxy's bytes, safe to print: the first line at most, 100 characters, anything but printable ASCII as `\xNN`. */
function shown(bytes: Buffer): string {
	const line = bytes.toString('latin1', 0, Math.min(bytes.length, 100)).split('\r\n', 1)[0]!;
	return `"${line.replace(/[^\x20-\x7e]|["\\]/g, (c) => (c === '"' || c === '\\' ? `\\${c}` : `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`))}${line.length === 100 ? '...' : ''}"`;
}

/** Which proxy each connection uses, if any. */
export interface ResolvedProxies {
	readonly gateway: ResolvedProxy | undefined;
	readonly feedback: ResolvedProxy | undefined;
	/** HTTP/2: the channel management host (Live Activity broadcast channels). */
	readonly channels: ResolvedProxy | undefined;
}

const NO_PROXIES: ResolvedProxies = Object.freeze({ gateway: undefined, feedback: undefined, channels: undefined });

/** Characters a host may not hold: it goes into the CONNECT request line and header as is. */
const BAD_HOST = /[\s\x00-\x1f\x7f/\\@?#[\]]/;

function checkHost(name: string, host: unknown): string {
	if (typeof host !== 'string' || host.length === 0 || (isIP(host) !== 6 && (BAD_HOST.test(host) || host.includes(':')))) {
		throw new InvalidArgumentError(name, 'a host name or IP address', host);
	}
	return host;
}

/** An error about a value that may be a secret: its type is said, its value never. */
function hiddenValueError(argument: string, expected: string, value: unknown): InvalidArgumentError {
	const error = new InvalidArgumentError(argument, expected, undefined);
	error.message = `Invalid ${argument}: expected ${expected}, got ${value === null ? 'null' : typeof value} (value not shown)`;
	return error;
}

/**
 * Check the `proxy` option and decide the proxy of the gateway and of the feedback service.
 * @param env where `'env'` reads HTTPS_PROXY and NO_PROXY (tests pass their own).
 * @throws {@link InvalidArgumentError} naming the bad field (`options.proxy.port`, …); with `'env'`, when
 * the variable holds a URL that is not an `http://` proxy.
 */
export function resolveProxies(given: ProxyOptions | 'env' | undefined, targets: { gateway: Address; feedback: Address; channels: Address }, env: NodeJS.ProcessEnv = process.env): ResolvedProxies {
	if (given === undefined) return NO_PROXIES;
	// Connection hosts go into the CONNECT request: nothing that could end a line or a field.
	checkHost('options.gateway.host', targets.gateway.host);
	checkHost('options.feedback.host', targets.feedback.host);
	checkHost('options.channelGateway.host', targets.channels.host);
	if (given === 'env') return { gateway: proxyFromEnv(targets.gateway, env), feedback: proxyFromEnv(targets.feedback, env), channels: proxyFromEnv(targets.channels, env) };
	if (typeof given === 'string') throw new InvalidArgumentError('options.proxy', "{ host, port, auth? } or 'env'", redactUrl(given));
	if (given === null || typeof given !== 'object') throw new InvalidArgumentError('options.proxy', "{ host, port, auth? } or 'env'", given);
	const host = checkHost('options.proxy.host', given.host);
	const port: unknown = given.port;
	if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65_535) throw new InvalidArgumentError('options.proxy.port', 'a whole number from 1 to 65535', port);
	const auth: unknown = given.auth;
	if (auth !== undefined) {
		// A string here is likely `user:password`: say what it is, not what it holds.
		if (auth === null || typeof auth !== 'object') throw hiddenValueError('options.proxy.auth', 'an object { username, password }', auth);
		const { username, password } = auth as { username?: unknown; password?: unknown };
		// RFC 7617: the user-id of Basic credentials cannot hold a colon.
		if (typeof username !== 'string' || username.includes(':') || /[\x00-\x1f\x7f]/.test(username)) {
			throw new InvalidArgumentError('options.proxy.auth.username', 'a string without colons or control characters', username);
		}
		if (typeof password !== 'string') throw hiddenValueError('options.proxy.auth.password', 'a string', password);
	}
	const proxy = new ResolvedProxy(host, port, given.auth);
	return { gateway: proxy, feedback: proxy, channels: proxy };
}

/** The first non-empty variable of `names` (lower case first, as curl reads them), with its name. */
function variable(env: NodeJS.ProcessEnv, ...names: string[]): { name: string; value: string } | undefined {
	for (const name of names) {
		for (const key of [name.toLowerCase(), name]) {
			const value = env[key]?.trim();
			if (value !== undefined && value.length > 0) return { name: key, value };
		}
	}
	return undefined;
}

/**
 * The proxy for `target` from the environment: HTTPS_PROXY (or https_proxy), else ALL_PROXY (all_proxy),
 * unless NO_PROXY (no_proxy) names the target. Undefined when none applies.
 */
export function proxyFromEnv(target: Address, env: NodeJS.ProcessEnv = process.env): ResolvedProxy | undefined {
	const found = variable(env, 'HTTPS_PROXY', 'ALL_PROXY');
	if (found === undefined) return undefined;
	if (bypassed(target, variable(env, 'NO_PROXY')?.value ?? '')) return undefined;
	const { host, port, auth } = parseProxyUrl(found.value, 'options.proxy', `'env' to find an http:// proxy URL in ${found.name}`);
	return new ResolvedProxy(host, port, auth);
}

/**
 * `http://[user:password@]host[:port]` (the scheme may be left out; the port defaults to 80) as the
 * `proxy` option takes it, the credentials percent-decoded — e.g. `proxy: proxyFromUrl(process.env.MY_PROXY)`.
 * @throws {@link InvalidArgumentError} (`url`) for anything else — https:// and SOCKS proxies are not
 * supported; the message never repeats a password.
 */
export function proxyFromUrl(url: string): ProxyOptions {
	return parseProxyUrl(url, 'url', 'an http:// proxy URL');
}

function parseProxyUrl(value: string, argument: string, what: string): ProxyOptions {
	const expected = `${what} (http://[user:password@]host[:port]; a TLS connection to the proxy, https://, and SOCKS are not supported)`;
	if (typeof value !== 'string') throw new InvalidArgumentError(argument, expected, value);
	const text = value.includes('://') ? value : `http://${value}`;
	let url: URL;
	try {
		url = new URL(text);
	} catch {
		throw new InvalidArgumentError(argument, expected, redactUrl(value));
	}
	if (url.protocol !== 'http:' || url.hostname.length === 0 || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
		throw new InvalidArgumentError(argument, expected, redactUrl(value));
	}
	const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
	const port = url.port === '' ? 80 : Number(url.port);
	if (port < 1 || port > 65_535) throw new InvalidArgumentError(argument, `${expected}, a port from 1 to 65535`, redactUrl(value));
	if (url.username.length === 0 && url.password.length === 0) return { host, port };
	let auth: { username: string; password: string };
	try {
		auth = { username: decodeURIComponent(url.username), password: decodeURIComponent(url.password) };
	} catch {
		throw new InvalidArgumentError(argument, `${expected}, its credentials percent-encoded`, redactUrl(value));
	}
	if (auth.username.includes(':')) throw new InvalidArgumentError(argument, `${expected}, a user name without colons`, redactUrl(value));
	return { host, port, auth };
}

/**
 * `url` with its credentials replaced by `***`, for error messages: everything between the scheme and the
 * last `@`, so a password holding `/`, `?`, `#` or `@` (which breaks URL parsing) never shows either.
 */
export function redactUrl(url: string): string {
	const at = url.lastIndexOf('@');
	if (at < 0) return url;
	const scheme = /^[a-z][a-z\d+.-]*:\/\//i.exec(url)?.[0] ?? '';
	return `${scheme}***${url.slice(at)}`;
}

/**
 * Whether NO_PROXY (`list`) exempts `target`: a comma- or space-separated list of host names (each also
 * covering its subdomains; a leading `.` or `*.` changes nothing), IP addresses, CIDR ranges, any of them
 * with `:port` to match that port only, or `*` for every host.
 */
export function bypassed(target: Address, list: string): boolean {
	const host = target.host.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
	for (const raw of list.split(/[,\s]+/)) {
		let entry = raw.trim().toLowerCase();
		if (entry.length === 0) continue;
		if (entry === '*') return true;
		const withPort = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(entry);
		if (withPort !== null) {
			if (Number(withPort[2]) !== target.port) continue;
			entry = withPort[1]!;
		}
		entry = entry.replace(/^\[(.*)\]$/, '$1');
		const slash = entry.indexOf('/');
		if (slash > 0) {
			if (inRange(host, entry.slice(0, slash), entry.slice(slash + 1))) return true;
			continue;
		}
		entry = entry.replace(/^\*?\./, '').replace(/\.$/, '');
		if (entry.length === 0) continue;
		if (host === entry || (isIP(host) === 0 && host.endsWith(`.${entry}`))) return true;
	}
	return false;
}

function inRange(host: string, network: string, bits: string): boolean {
	const family = isIP(network);
	if (family === 0 || isIP(host) !== family || !/^\d+$/.test(bits)) return false;
	const prefix = Number(bits);
	if (prefix > (family === 4 ? 32 : 128)) return false;
	const range = new BlockList();
	range.addSubnet(network, prefix, family === 4 ? 'ipv4' : 'ipv6');
	return range.check(host, family === 4 ? 'ipv4' : 'ipv6');
}
