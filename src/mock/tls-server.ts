/**
 * The TLS listener both mocks share: 127.0.0.1, client certificates required and verified against the
 * given CA, every socket tracked so `close()` can end them all.
 */
import type { AddressInfo, Socket } from 'node:net';
import tls from 'node:tls';
import type { PemPair } from './certs.js';

/** Where and with what certificates a mock listens. */
export interface MockTlsServerOptions {
	/** Server certificate and key. */
	readonly server: PemPair;
	/** CA certificate(s) that client certificates must be signed by. */
	readonly ca: string | readonly string[];
	/** @default '127.0.0.1' */
	readonly host?: string;
	/** @default 0 (any free port) */
	readonly port?: number;
}

/** A listening mock server. */
export interface MockTlsServer {
	readonly host: string;
	readonly port: number;
	/** Connections whose handshake (client certificate included) completed. */
	readonly connections: number;
	/** TCP connections accepted, including those whose handshake failed. */
	readonly connectionsAccepted: number;
	/** Stop accepting connections (they are refused); open ones are left alone. */
	stopListening(): void;
	/** Listen on the same port again. */
	listenAgain(): Promise<void>;
	/** Destroy every connection and stop listening. */
	close(): Promise<void>;
}

export async function startMockTlsServer(options: MockTlsServerOptions, onConnection: (socket: tls.TLSSocket, id: number) => void): Promise<MockTlsServer> {
	// Every TCP connection, handshake finished or not: close() must end them all, or server.close() waits
	// for ever on one still in its handshake.
	const sockets = new Set<Socket>();
	let connections = 0;
	let accepted = 0;
	const server = tls.createServer({
		cert: options.server.cert,
		key: options.server.key,
		ca: typeof options.ca === 'string' ? [options.ca] : [...options.ca],
		requestCert: true,
		rejectUnauthorized: true,
	});
	server.on('tlsClientError', () => {
		// A client whose certificate is refused never becomes a connection.
	});
	server.on('connection', (socket: Socket) => {
		accepted++;
		sockets.add(socket);
		socket.on('close', () => sockets.delete(socket));
	});
	server.on('secureConnection', (socket: tls.TLSSocket) => {
		socket.on('error', () => {});
		onConnection(socket, ++connections);
	});
	const host = options.host ?? '127.0.0.1';
	const listen = (port: number): Promise<void> =>
		new Promise((resolve, reject) => {
			server.once('error', reject);
			server.listen(port, host, () => {
				server.off('error', reject);
				resolve();
			});
		});
	await listen(options.port ?? 0);
	const port = (server.address() as AddressInfo).port;
	return {
		host,
		port,
		get connections() {
			return connections;
		},
		get connectionsAccepted() {
			return accepted;
		},
		stopListening() {
			if (server.listening) server.close();
		},
		listenAgain: () => listen(port),
		async close() {
			for (const socket of sockets) socket.destroy();
			if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}
