/**
 * The legacy feedback service: connect, read `(time, length, token)` tuples until the server closes (or
 * goes quiet for `idleTimeoutMs`), send nothing. The service forgets what it has sent, so every tuple is
 * handed to the caller as soon as it is complete.
 */
import { connectTls, type TlsTarget } from './credentials.js';
import { ConnectionError, ProtocolError } from './errors.js';
import { FeedbackDecoder } from './frame.js';

/** A device token APNs could not deliver to because the app is gone from the device. */
export class Feedback {
	/** The device token, lowercase hex. */
	readonly token: string;
	/** When APNs found the app gone. Keep the token if the device registered it again after this. */
	readonly when: Date;

	constructor(token: string, when: Date) {
		this.token = token;
		this.when = when;
	}
}

/** Where and how to read feedback. */
export interface FeedbackReadOptions extends TlsTarget {
	readonly idleTimeoutMs: number;
	readonly connectTimeoutMs: number;
}

/**
 * Read every tuple the feedback service has, calling `onFeedback` for each in order.
 * Resolves with the count when the server closes or stays quiet for `idleTimeoutMs`.
 * @throws {@link ConnectionError} when the service cannot be reached; {@link ProtocolError} when the stream
 * ends in the middle of a tuple (the complete ones before it were still handed over).
 */
export function readFeedback(options: FeedbackReadOptions, onFeedback: (feedback: Feedback) => void): Promise<number> {
	return new Promise((resolve, reject) => {
		const decoder = new FeedbackDecoder();
		let count = 0;
		let connected = false;
		let settled = false;
		let failure: Error | undefined;
		const socket = connectTls(options);
		const connectTimer = setTimeout(
			() => socket.destroy(new ConnectionError(`Connect to the feedback service ${options.host}:${options.port} timed out after ${options.connectTimeoutMs} ms`)),
			options.connectTimeoutMs,
		);
		socket.once('secureConnect', () => {
			connected = true;
			clearTimeout(connectTimer);
			// Idle: the server has stopped sending but not closed; what it had is read.
			socket.setTimeout(options.idleTimeoutMs, () => socket.end());
		});
		socket.on('data', (chunk: Buffer) => {
			for (const tuple of decoder.push(chunk)) {
				count++;
				onFeedback(new Feedback(tuple.token.toString('hex'), tuple.when));
			}
		});
		socket.on('error', (error: Error) => {
			failure ??= error;
		});
		socket.on('close', () => {
			clearTimeout(connectTimer);
			if (settled) return;
			settled = true;
			if (!connected) {
				reject(
					failure instanceof ConnectionError
						? failure
						: new ConnectionError(`Cannot connect to the feedback service ${options.host}:${options.port}: ${failure?.message ?? 'closed during the handshake'}`, { cause: failure }),
				);
			} else if (decoder.pendingBytes > 0) {
				reject(new ProtocolError(`The feedback stream ended inside a tuple (${decoder.pendingBytes} bytes left over after ${count} tuples)`));
			} else {
				resolve(count);
			}
		});
	});
}
