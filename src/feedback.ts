/**
 * The legacy feedback service: connect, read `(time, length, token)` tuples until the server closes or goes
 * quiet for `idleTimeoutMs` (or `timeoutMs` runs out), send nothing. The service forgets what it has sent,
 * so every tuple is handed to the caller as soon as it is complete.
 */
import { connectTls, type TlsTarget } from './credentials.js';
import { ConnectionError, ProtocolError, TimeoutError } from './errors.js';
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

/** The default of {@link FeedbackReadOptions.timeoutMs}: a whole feedback read may take a minute. */
export const DEFAULT_FEEDBACK_TIMEOUT_MS = 60_000;

/** Where and how to read feedback. */
export interface FeedbackReadOptions extends TlsTarget {
	/** Once connected, end the read (successfully) when no byte has come for this long, in ms. */
	readonly idleTimeoutMs: number;
	/** Give up (with a {@link ConnectionError}) when the TLS handshake has not finished in this long, in ms. */
	readonly connectTimeoutMs: number;
	/**
	 * Deadline of the whole read, connect included, in ms: a service that trickles bytes is never idle, so
	 * only this ends it. @default {@link DEFAULT_FEEDBACK_TIMEOUT_MS}
	 */
	readonly timeoutMs?: number;
}

/**
 * Read every tuple the feedback service has, calling `onFeedback` for each in order.
 * Resolves with the count when the server closes or stays quiet for `idleTimeoutMs`. However it ends, the
 * socket is destroyed: the read never waits for a hostile server to finish closing.
 * @throws {@link ConnectionError} when the service cannot be reached; {@link TimeoutError} (`pending` 0)
 * when the read outlasts `timeoutMs`; {@link ProtocolError} when the stream ends in the middle of a tuple
 * or a tuple's token is not 32 bytes long; whatever `onFeedback` throws (reading stops there).
 * In every case the tuples handed to `onFeedback` before it stay handed over.
 */
export function readFeedback(options: FeedbackReadOptions, onFeedback: (feedback: Feedback) => void): Promise<number> {
	return new Promise((resolve, reject) => {
		const where = `${options.host}:${options.port}`;
		const timeoutMs = options.timeoutMs ?? DEFAULT_FEEDBACK_TIMEOUT_MS;
		const decoder = new FeedbackDecoder();
		let count = 0;
		let connected = false;
		let settled = false;
		let failure: Error | undefined;
		const socket = connectTls(options);
		// The one way out: settle once, stop every timer, destroy rather than end (a FIN exchange the server
		// never completes would hold the socket, and the caller, for ever).
		const finish = (error?: Error): void => {
			if (settled) return;
			settled = true;
			clearTimeout(connectTimer);
			clearTimeout(deadline);
			socket.setTimeout(0);
			socket.destroy();
			if (error === undefined) resolve(count);
			else reject(error);
		};
		const connectTimer = setTimeout(
			() => finish(new ConnectionError(`Connect to the feedback service ${where} timed out after ${options.connectTimeoutMs} ms`)),
			options.connectTimeoutMs,
		);
		const deadline = setTimeout(
			() => finish(new TimeoutError(`Feedback read from ${where} exceeded ${timeoutMs} ms; ${count} tuples were handed over`, 0)),
			timeoutMs,
		);
		// EOF from the server (or the connection lost): what it had is read, unless it stopped mid-tuple.
		const ended = (): void => {
			if (!connected) {
				finish(
					failure instanceof ConnectionError
						? failure
						: new ConnectionError(`Cannot connect to the feedback service ${where}: ${failure?.message ?? 'closed during the handshake'}`, { cause: failure }),
				);
			} else if (decoder.pendingBytes > 0) {
				finish(new ProtocolError(`The feedback stream ended inside a tuple (${decoder.pendingBytes} bytes left over after ${count} tuples)`));
			} else {
				finish();
			}
		};
		socket.once('secureConnect', () => {
			connected = true;
			clearTimeout(connectTimer);
			// Idle: the server has sent what it had but not closed.
			socket.setTimeout(options.idleTimeoutMs, () => finish());
		});
		socket.on('data', (chunk: Buffer) => {
			if (settled) return;
			const { tuples, error } = decoder.push(chunk);
			try {
				for (const tuple of tuples) {
					count++;
					onFeedback(new Feedback(tuple.token.toString('hex'), tuple.when));
				}
			} catch (thrown) {
				finish(thrown instanceof Error ? thrown : new Error(String(thrown)));
				return;
			}
			if (error !== undefined) finish(error);
		});
		socket.on('error', (error: Error) => {
			failure ??= error;
		});
		// Before the handshake, wait for 'close': the 'error' that says why comes before it.
		socket.on('end', () => {
			if (connected) ended();
		});
		socket.on('close', ended);
	});
}
