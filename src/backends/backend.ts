/**
 * The pluggable part of the manager: whatever drives sockets. A backend takes notifications from the
 * {@link NotificationQueue}, writes them, and reports what the gateway answers back to the queue; the
 * queue decides what is delivered, failed or re-sent. Every backend passes the same conformance suite
 * (test/conformance.test.ts).
 */
import type { TlsTarget } from '../credentials.js';
import type { ConnectionError } from '../errors.js';
import type { ProviderToken } from '../provider-token.js';
import type { ApnsIds } from '../receipt.js';
import type { ResolvedOptions } from '../options.js';
import type { InFlight, NotificationQueue } from '../queue.js';

/** TLS material and address of the gateway. */
export type GatewayTls = TlsTarget;

/** Connection-level happenings a backend reports; the manager turns them into events. */
export interface BackendEvents {
	connected(info: { connection: number }): void;
	disconnected(info: { connection: number; reason: DisconnectReason; error?: Error }): void;
	connectError(error: ConnectionError, info: { attempt: number; retryInMs: number }): void;
}

/**
 * How a connection the peer closed without a word is reported. Under TLS 1.3 a server that refuses the
 * client certificate does exactly this right after the handshake (no alert reaches the client), so say so.
 */
export const CLOSED_UNANSWERED = 'the gateway closed it without answering (under TLS 1.3 a refused client certificate looks like this)';

/** Why a connection ended. */
export type DisconnectReason = 'errorFrame' | 'probeAnswered' | 'silentClose' | 'goaway' | 'protocolError' | 'timeout' | 'closed' | 'destroyed';

/** What a backend is given. */
export interface BackendContext {
	readonly queue: NotificationQueue;
	readonly tls: GatewayTls;
	readonly options: ResolvedOptions;
	readonly events: BackendEvents;
	/** HTTP/2 token auth: the shared provider token. */
	readonly token?: ProviderToken | undefined;
	/** HTTP/2: the default `apns-topic` (bundle ID). */
	readonly topic?: string | undefined;
	/** HTTP/2: the `apns-id` of each notification. */
	readonly apnsIds?: ApnsIds | undefined;
	/** True while someone waits for everything to be settled (`flushMessages`, `close`): probe without delay. */
	wantsConfirmation(): boolean;
}

/** A socket driver. */
export interface Backend {
	/** There is work to write, room to write it, or a confirmation is wanted. Cheap and idempotent. */
	wake(): void;
	/** Close connections once nothing is left to settle on them; stop reconnecting. */
	close(): Promise<void>;
	/**
	 * Drop every connection now. Returns the notifications it held outside the queue (HTTP/2 requests in
	 * flight or waiting to be retried), so that the queue can settle them as dropped.
	 */
	destroy(): Iterable<InFlight>;
	/** Connect attempts made so far (successful or not). */
	readonly connectAttempts: number;
}

/** Makes a backend for a manager. */
export type BackendFactory = (context: BackendContext) => Backend;
