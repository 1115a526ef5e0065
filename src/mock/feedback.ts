/**
 * A mock feedback service on 127.0.0.1: real TLS with client-certificate verification. On each connection
 * it sends the tuples it holds, forgets them (as APNs does), and closes. Options make it misbehave the way a
 * hostile or broken service would: hang, ignore the client's FIN, trickle, send malformed tuples.
 */
import { encodeFeedbackTuple } from '../frame.js';
import { startMockTlsServer, type MockTlsServerOptions } from './tls-server.js';

/** A token the mock reports gone. */
export interface MockFeedbackTuple {
	/** Device token, hex. */
	readonly token: string;
	readonly when: Date;
}

/** Options of {@link startMockFeedback}. */
export interface MockFeedbackOptions extends MockTlsServerOptions {
	/** Tuples to serve to the next connection. */
	readonly tuples?: readonly MockFeedbackTuple[];
	/**
	 * Tuples sent as given after `tuples`, also to the next connection only: the token may have any length
	 * from 0 to 65535 bytes (its length goes out as a u16), to send tuples the protocol does not allow.
	 */
	readonly rawTuples?: ReadonlyArray<{ readonly when: Date; readonly token: Buffer }>;
	/** Send the bytes in writes of this size (1 splits every tuple across many reads). @default all at once; 1 with `trickleMs` */
	readonly chunkBytes?: number;
	/**
	 * Wait this long, in ms, between writes (a service that trickles; never idle, never done). Alone it sends
	 * one byte every `trickleMs`. @default no wait: the next write goes out on the next turn of the event loop
	 */
	readonly trickleMs?: number;
	/** Send the tuples but never close the connection (a stuck service). @default false */
	readonly hang?: boolean;
	/**
	 * Send the tuples, then never end or close this side, and ignore the client's FIN (the socket is
	 * half-open: it does not answer with its own). A client that ends and waits for the close waits for ever.
	 * @default false
	 */
	readonly ignoreFin?: boolean;
}

/** A running mock feedback service. */
export interface MockFeedback {
	readonly host: string;
	readonly port: number;
	/** Connections served. */
	readonly connections: number;
	/** Queue more tuples for the next connection. */
	add(token: string, when: Date): void;
	close(): Promise<void>;
}

export async function startMockFeedback(options: MockFeedbackOptions): Promise<MockFeedback> {
	let tuples: MockFeedbackTuple[] = [...(options.tuples ?? [])];
	let raw = [...(options.rawTuples ?? [])];
	const server = await startMockTlsServer(options, (socket) => {
		// Without this, Node answers the client's FIN with ours.
		if (options.ignoreFin) socket.allowHalfOpen = true;
		const bytes = Buffer.concat([
			...tuples.map((t) => encodeFeedbackTuple(t.when, Buffer.from(t.token, 'hex'))),
			...raw.map((t) => encodeFeedbackTuple(t.when, t.token)),
		]);
		tuples = [];
		raw = [];
		const chunk = options.chunkBytes ?? (options.trickleMs === undefined ? Math.max(1, bytes.length) : 1);
		let offset = 0;
		let timer: NodeJS.Timeout | undefined;
		socket.once('close', () => clearTimeout(timer));
		const writeNext = (): void => {
			if (socket.destroyed) return;
			if (offset >= bytes.length) {
				if (!options.hang && !options.ignoreFin) socket.end();
				return;
			}
			const part = bytes.subarray(offset, offset + chunk);
			offset += part.length;
			// One write per turn of the event loop (or per trickleMs), so the client sees separate reads.
			socket.write(part, () => {
				if (options.trickleMs === undefined) setImmediate(writeNext);
				else timer = setTimeout(writeNext, options.trickleMs);
			});
		};
		writeNext();
	});
	return {
		host: server.host,
		port: server.port,
		get connections() {
			return server.connections;
		},
		add(token: string, when: Date) {
			tuples.push({ token, when });
		},
		close: () => server.close(),
	};
}
