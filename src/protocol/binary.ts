/**
 * The binary provider protocol's rules (shared/docs/apns-protocol.md §A): its statuses, its payload
 * limit, which messages it can carry, and what an error frame or an unanswered end settles for the
 * notifications a connection wrote. The bytes are in frame.ts; the sockets in drivers/binary.ts.
 *
 * Binary APNs never acknowledges success, so a written notification stays in its connection's
 * {@link SentLog} until one of these settles it:
 * - an error frame for a later ident on the same connection (everything before it was processed),
 * - the answer to a known-bad probe written after it.
 * Time alone never settles one: a connection that stops answering is presumed dead by the driver, and
 * what it held goes back to the queue, in doubt ({@link settleUnanswered}).
 * An error frame for ident X settles what came before X, reports X, and puts everything after X back at
 * the front of the queue in its original order.
 */
import { InvalidArgumentError } from '../errors.js';
import type { Message } from '../message.js';
import type { DriverQueue } from '../queue.js';
import { Ring } from '../ring.js';

/** Largest payload the binary gateway accepts (iOS 8+). */
export const MAX_BINARY_PAYLOAD_BYTES = 2048;

/** Apple's status codes of the error-response packet, with Apple's descriptions. */
export const STATUS_DESCRIPTIONS: Readonly<Record<number, string>> = {
	0: 'No errors encountered',
	1: 'Processing error',
	2: 'Missing device token',
	3: 'Missing topic',
	4: 'Missing payload',
	5: 'Invalid token size',
	6: 'Invalid topic size',
	7: 'Invalid payload size',
	8: 'Invalid token',
	10: 'Shutdown',
	128: 'Protocol error',
	255: 'None (unknown)',
};

/** Status 10: the named notification was the last one processed; everything after it must be re-sent. */
export const STATUS_SHUTDOWN = 10;
/** What an empty-token probe draws (statuses 2 and 5). */
const STATUS_MISSING_TOKEN = 2;
const STATUS_INVALID_TOKEN_SIZE = 5;

/** Statuses Apple describes as temporary: the named notification itself is worth another try. */
export function isTemporaryStatus(status: number): boolean {
	return status === 1 || status === 255;
}

export function describeStatus(status: number): string {
	return STATUS_DESCRIPTIONS[status] ?? `Unknown status ${status}`;
}

/**
 * Refuse what a binary frame cannot carry: silently dropping it would send something else than was
 * asked. Checked for every send, so the common case (none of these set) costs two reads.
 * @throws {@link InvalidArgumentError} naming the field.
 */
export function checkBinaryMessage(message: Message, argument: string): void {
	if (message.payloadLength > MAX_BINARY_PAYLOAD_BYTES) throw new InvalidArgumentError(argument, `a payload of at most ${MAX_BINARY_PAYLOAD_BYTES} bytes once encoded`, `${message.payloadLength} bytes`);
	if (message.priority === 1) throw new InvalidArgumentError('options.priority', '5 or 10 on the binary protocol', 1);
	if (message.extra === undefined && !message.explicitPushType) return;
	for (const [name, value] of [['collapseId', message.collapseId], ['topic', message.topic], ['id', message.id], ['pushType', message.explicitPushType ? message.pushType : undefined]] as const) {
		if (value !== undefined) throw new InvalidArgumentError(`options.${name}`, "protocol 'http2' (the binary protocol has no such field)", value);
	}
}

/** What a connection has written and not yet had settled. */
export class SentLog {
	/** Ident of the probe written on this connection, if any. */
	probeIdent: number | undefined;
	/** Notifications written since the last proof (a settled error frame or probe answer). */
	sinceProof = 0;
	/** Settled for good: no more writes, answers or closes count. */
	settled = false;
	/** Notifications the gateway settled on this connection by its word (delivered, or rejected for good). */
	answered = 0;

	/** Notifications written on this connection and not yet settled. */
	readonly ring = new Ring();

	get size(): number {
		return this.ring.size;
	}
	/** Whether a probe has been written and not yet answered. */
	get probing(): boolean {
		return this.probeIdent !== undefined;
	}

	/**
	 * An ident for the probe: one this connection never carried, so its answer cannot be mistaken for a
	 * rejection. Nothing is written after the probe, so only this log's idents matter.
	 */
	probe(): number {
		const ring = this.ring;
		let ident = ring.size === 0 ? 1 : (ring.ident(ring.size - 1) % 0xffff_ffff) + 1;
		while (ring.lastIndexOfIdent(ident) >= 0) ident = (ident % 0xffff_ffff) + 1;
		this.probeIdent = ident;
		return ident;
	}
}

/** How an error frame was taken: the probe's answer, a notification's, or one naming an ident never sent. */
export type ErrorFrameOutcome = 'probe' | 'found' | 'notFound';

/**
 * Settle `log` on an error frame (status, ident) and finish it (APNs closes the connection after one).
 * `probe`, `found`: the gateway's word on this connection's notifications; `notFound`: an ident this
 * connection never carried — its word is worthless and what it held goes back in doubt, as after a
 * silent close.
 */
export function settleErrorFrame(queue: DriverQueue, log: SentLog, status: number, ident: number): { outcome: ErrorFrameOutcome; resent: number } {
	if (log.settled) return { outcome: 'found', resent: 0 };
	log.settled = true;
	const ring = log.ring;
	// Gateways have answered the empty-token probe with ident 0 (Pushy 0.4 saw it: they could not read the
	// ident). Only the probe can draw a missing or bad token size; ident 0 is never used for anything else.
	const probeAnswer = ident === log.probeIdent || (ident === 0 && (status === STATUS_MISSING_TOKEN || status === STATUS_INVALID_TOKEN_SIZE));
	if (log.probeIdent !== undefined && probeAnswer) {
		log.answered += ring.size;
		queue.settleDeliveredRing(ring, ring.size);
		return { outcome: 'probe', resent: 0 };
	}
	const at = ring.lastIndexOfIdent(ident);
	if (at < 0) {
		// Nothing is settled by time, so every notification this connection carried is still here: the
		// gateway named one it was never sent. What it processed is unknown.
		const resent = unanswered(queue, log, 'identNotFound', `an error frame named ident ${ident}, never sent on this connection`);
		return { outcome: 'notFound', resent };
	}
	log.answered += at;
	queue.settleDeliveredRing(ring, at);
	// Now the named notification is at position 0.
	if (status === STATUS_SHUTDOWN || status === 0) {
		log.answered++;
		queue.settleDeliveredRing(ring, 1);
		queue.requeueRing(ring, status === 0 ? 'error' : 'shutdown');
	} else if (isTemporaryStatus(status) && !queue.exhausted({ tries: ring.tries(0) })) {
		// What followed goes back first, then the named one ahead of it: only the named one used an attempt.
		queue.requeueRing(ring, 'error', 1);
		queue.requeueRing(ring, 'temporary');
	} else {
		log.answered++;
		queue.requeueRing(ring, 'error', 1);
		queue.settleFailedRing(ring, status);
	}
	return { outcome: 'found', resent: 0 };
}

/**
 * `log`'s connection ended with no usable answer: what it still holds goes back, in doubt. A notification
 * that was alone on it is what it died on, or at least the only suspect: that counts as an attempt, and
 * one out of attempts is reported failed (`ConnectionLost`) instead of re-sent.
 * @param cause - what ended the connection, for the failure's description.
 */
export function settleUnanswered(queue: DriverQueue, log: SentLog, cause?: string): void {
	if (log.settled) return;
	unanswered(queue, log, 'silentClose', cause);
}

function unanswered(queue: DriverQueue, log: SentLog, reason: 'silentClose' | 'identNotFound', cause: string | undefined): number {
	log.settled = true;
	const ring = log.ring;
	if (ring.size !== 1) return queue.requeueRing(ring, reason);
	const tries = ring.tries(0);
	if (!queue.exhausted({ tries })) return queue.requeueRing(ring, 'unanswered');
	queue.settleFailedRing(ring, 0, {
		reason: 'ConnectionLost',
		description: `No answer in ${tries} attempts: each time it was alone on its connection, and the connection ended${cause === undefined ? '' : ` (last: ${cause})`}`,
	});
	return 0;
}
