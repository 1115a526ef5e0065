/**
 * A mock feedback service on 127.0.0.1: real TLS with client-certificate verification. On each connection
 * it sends the tuples it holds, forgets them (as APNs does), and closes.
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
	/** Send the bytes in writes of this size (1 splits every tuple across many reads). @default all at once */
	readonly chunkBytes?: number;
	/** Send the tuples but never close the connection (a stuck service). @default false */
	readonly hang?: boolean;
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
	const server = await startMockTlsServer(options, (socket) => {
		const bytes = Buffer.concat(tuples.map((t) => encodeFeedbackTuple(t.when, Buffer.from(t.token, 'hex'))));
		tuples = [];
		const chunk = options.chunkBytes ?? Math.max(1, bytes.length);
		let offset = 0;
		const writeNext = (): void => {
			if (socket.destroyed) return;
			if (offset >= bytes.length) {
				if (!options.hang) socket.end();
				return;
			}
			const part = bytes.subarray(offset, offset + chunk);
			offset += part.length;
			// One write per turn of the event loop, so the client sees separate reads.
			socket.write(part, () => setImmediate(writeNext));
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
