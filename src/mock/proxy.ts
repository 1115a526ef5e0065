/**
 * A mock HTTP CONNECT proxy on 127.0.0.1, for testing clients behind a proxy: it checks
 * `Proxy-Authorization` (Basic) when given credentials, records every tunnel asked for, and fails on
 * request the ways real proxies do (a refusal status, silence, garbage, a tunnel that closes at once).
 * It only ever opens tunnels to 127.0.0.1; any other target is refused with 403, so a test can never
 * reach past the machine through it.
 */
import net, { type AddressInfo, type Socket } from 'node:net';

/** Ways the mock misbehaves; each applies to every CONNECT until changed with `setFaults`. */
export interface MockProxyFaults {
	/** Answer CONNECT with this status (e.g. 403, 407, 502) and close, opening no tunnel. */
	readonly status?: number;
	/** Read the CONNECT, then close the connection without a word. */
	readonly refuseTunnel?: boolean;
	/** Answer CONNECT with bytes that are not HTTP, then close. */
	readonly garbage?: boolean;
	/** Answer 200, then close the tunnel before a byte passes (the client's TLS handshake dies). */
	readonly closeAfterConnect?: boolean;
	/** Read the CONNECT and never answer (a client's connect timeout must end it). */
	readonly silent?: boolean;
}

/** Options of {@link startMockProxy}. */
export interface MockProxyOptions {
	/** Require these Basic credentials; a CONNECT without them, or with others, is answered 407. */
	readonly auth?: { readonly username: string; readonly password: string };
	readonly faults?: MockProxyFaults;
	/** @default 0 (any free port) */
	readonly port?: number;
}

/** A running mock proxy. */
export interface MockProxy {
	readonly host: string;
	readonly port: number;
	/** TCP connections accepted. */
	readonly connects: number;
	/** The target (`host:port`) of every CONNECT received, in order, whatever the answer. */
	readonly tunnels: readonly string[];
	/** Tunnels opened (answered 200 and connected to the target). */
	readonly opened: number;
	/** Client connections open now. */
	readonly open: number;
	/** Replace the faults (`{}`: behave). */
	setFaults(faults: MockProxyFaults): void;
	/** Destroy every connection and tunnel and stop listening. */
	close(): Promise<void>;
}

const REASONS: Readonly<Record<number, string>> = {
	400: 'Bad Request',
	403: 'Forbidden',
	405: 'Method Not Allowed',
	407: 'Proxy Authentication Required',
	502: 'Bad Gateway',
	503: 'Service Unavailable',
};

/** Start the mock proxy on 127.0.0.1. */
export async function startMockProxy(options: MockProxyOptions = {}): Promise<MockProxy> {
	let faults: MockProxyFaults = options.faults ?? {};
	const expected = options.auth === undefined ? undefined : `Basic ${Buffer.from(`${options.auth.username}:${options.auth.password}`, 'utf8').toString('base64')}`;
	const sockets = new Set<Socket>();
	const clients = new Set<Socket>();
	const tunnels: string[] = [];
	let connects = 0;
	let opened = 0;
	const track = (socket: Socket): void => {
		sockets.add(socket);
		socket.on('close', () => sockets.delete(socket));
		socket.on('error', () => {});
	};
	const answer = (client: Socket, status: number, extra = ''): void => {
		client.end(`HTTP/1.1 ${status} ${REASONS[status] ?? 'Refused'}\r\n${extra}Content-Length: 0\r\nConnection: close\r\n\r\n`);
	};

	const server = net.createServer((client) => {
		connects++;
		track(client);
		clients.add(client);
		client.on('close', () => clients.delete(client));
		let head = Buffer.alloc(0);
		const onData = (chunk: Buffer): void => {
			head = Buffer.concat([head, chunk]);
			const end = head.indexOf('\r\n\r\n');
			if (end < 0) {
				if (head.length > 16 * 1024) client.destroy();
				return;
			}
			client.off('data', onData);
			client.pause();
			const lines = head.toString('latin1', 0, end).split('\r\n');
			const rest = head.subarray(end + 4);
			const [method, target] = lines[0]!.split(' ');
			const headers = new Map(lines.slice(1).map((l) => [l.slice(0, l.indexOf(':')).trim().toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
			tunnels.push(target ?? '');
			if (method !== 'CONNECT') return answer(client, 405);
			const port = /^127\.0\.0\.1:(\d{1,5})$/.exec(target ?? '')?.[1];
			// The network guard: loopback only, by address (never a name to resolve).
			if (port === undefined || Number(port) > 65_535) return answer(client, 403);
			if (expected !== undefined && headers.get('proxy-authorization') !== expected) return answer(client, 407, 'Proxy-Authenticate: Basic realm="mock"\r\n');
			if (faults.silent) return;
			if (faults.refuseTunnel) return void client.destroy();
			if (faults.garbage) return void client.end(Buffer.from([0x16, 0x03, 0x01, 0xde, 0xad, 0xbe, 0xef, 0x0a]));
			if (faults.status !== undefined) return answer(client, faults.status);
			const closeAtOnce = faults.closeAfterConnect === true;
			const upstream = net.connect(Number(port), '127.0.0.1');
			track(upstream);
			upstream.once('error', () => {
				if (!client.destroyed && upstream.connecting) answer(client, 502);
				else client.destroy();
			});
			upstream.once('connect', () => {
				opened++;
				client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
				if (closeAtOnce) {
					client.destroy();
					upstream.destroy();
					return;
				}
				if (rest.length > 0) upstream.write(rest);
				client.pipe(upstream);
				upstream.pipe(client);
				client.resume();
				client.on('close', () => upstream.destroy());
				upstream.on('close', () => client.destroy());
			});
		};
		client.on('data', onData);
	});
	await new Promise<void>((resolve, reject) => {
		server.once('error', reject);
		server.listen(options.port ?? 0, '127.0.0.1', () => {
			server.off('error', reject);
			resolve();
		});
	});
	const { port } = server.address() as AddressInfo;
	return {
		host: '127.0.0.1',
		port,
		get connects() {
			return connects;
		},
		get tunnels() {
			return tunnels;
		},
		get opened() {
			return opened;
		},
		get open() {
			return clients.size;
		},
		setFaults(next: MockProxyFaults) {
			faults = next;
		},
		async close() {
			for (const socket of sockets) socket.destroy();
			if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}
