/**
 * Every error this library throws or reports is an {@link ApnsError} with a stable `code`.
 * Match on `err.code` (or `instanceof`), never on the message text.
 */
import type { Message } from './message.js';

/** The stable codes carried by {@link ApnsError.code}. */
export type ApnsErrorCode =
	| 'APNS_INVALID_ARGUMENT'
	| 'APNS_CREDENTIALS'
	| 'APNS_DELIVERY'
	| 'APNS_CONNECTION'
	| 'APNS_TIMEOUT'
	| 'APNS_CLOSED'
	| 'APNS_PROTOCOL'
	| 'APNS_CHANNEL'
	| 'APNS_SERVER_CONFIG'
	| 'APNS_SERVER_SECRET';

/** Base class of all errors of this library. */
export class ApnsError extends Error {
	readonly code: ApnsErrorCode;

	constructor(code: ApnsErrorCode, message: string, options?: { cause?: unknown }) {
		super(message, options);
		this.code = code;
		this.name = new.target.name;
	}
}

/** A bad argument at the call. Thrown synchronously; nothing else in the queue is touched. */
export class InvalidArgumentError extends ApnsError {
	/** The name of the argument (or option path) that was wrong, e.g. `tokens[3]` or `options.priority`. */
	readonly argument: string;

	constructor(argument: string, expected: string, got: unknown) {
		super('APNS_INVALID_ARGUMENT', `Invalid ${argument}: expected ${expected}, got ${describe(got)}`);
		this.argument = argument;
	}

	/**
	 * An option that does not exist, named as it was given, with `hint` (what to write instead); its value
	 * is never shown (it may be a secret under a wrong name).
	 */
	static unknownOption(argument: string, hint: string): InvalidArgumentError {
		const error = new InvalidArgumentError(argument, hint, undefined);
		error.message = `Unknown option ${argument}: ${hint}`;
		return error;
	}
}

/** Certificates or keys that cannot be loaded or do not fit the chosen environment. Thrown at construction. */
export class CredentialsError extends ApnsError {
	constructor(message: string, options?: { cause?: unknown }) {
		super('APNS_CREDENTIALS', message, options);
	}
}

/**
 * APNs rejected one notification. Reported to the `errorHandler` and the `deliveryError` event, never thrown.
 */
export class DeliveryError extends ApnsError {
	/** The APNs status: the error-response status byte (binary) or the HTTP status (HTTP/2). */
	readonly status: number;
	/** Apple's name for the status, e.g. `Invalid token`; on HTTP/2 the reason string. */
	readonly description: string;
	/** HTTP/2: APNs' reason string, e.g. `BadDeviceToken`, `Unregistered`. Undefined on the binary protocol. */
	readonly reason: string | undefined;
	/** HTTP/2 410: when APNs found the token no longer valid for the topic. */
	readonly timestamp: Date | undefined;
	/** The device token, lowercase hex. */
	readonly token: string;
	/**
	 * The {@link Message} the notification belongs to (`message` is taken by `Error`).
	 * For a broadcast this is the whole message; {@link DeliveryError.token} says which token failed.
	 */
	readonly notification: Message;
	/** The 32-bit identifier the notification was sent with. */
	readonly ident: number;
	/** HTTP/2: the request's `apns-id` (the message's `id`, or the generated one). Undefined on the binary protocol. */
	readonly apnsId: string | undefined;

	constructor(init: { status: number; description: string; token: string; message: Message; ident: number; reason?: string | undefined; timestamp?: Date | undefined; apnsId?: string | undefined }) {
		super('APNS_DELIVERY', `APNs rejected the notification to ${init.token}: ${init.description} (status ${init.status})`);
		this.status = init.status;
		this.description = init.description;
		this.reason = init.reason;
		this.timestamp = init.timestamp;
		this.token = init.token;
		this.notification = init.message;
		this.ident = init.ident;
		this.apnsId = init.apnsId;
	}
}

/**
 * A channel management request (`createChannel()`, `getChannel()`, `listChannels()`, `deleteChannel()`)
 * that APNs refused, or that got no answer within its attempts: APNs' `status` and `reason`
 * (e.g. `400 ChannelNotRegistered`, `400 CannotCreateChannelConfig`), or status 0 when none came.
 */
export class ChannelError extends ApnsError {
	/** The HTTP status, or 0 when no answer came (a connection failure, a timeout). */
	readonly status: number;
	/** APNs' reason, e.g. `ChannelNotRegistered`; for status 0 what went wrong (`RequestTimeout`, `ConnectionLost`). */
	readonly reason: string;
	/** The request's `apns-request-id` (quote it to Apple). */
	readonly requestId: string;

	constructor(init: { operation: string; status: number; reason: string; requestId: string; attempts: number; cause?: unknown }) {
		super('APNS_CHANNEL', `${init.operation} failed: ${init.status === 0 ? 'no answer' : `status ${init.status}`} ${init.reason}${init.attempts > 1 ? ` (after ${init.attempts} attempts)` : ''}`, init.cause === undefined ? undefined : { cause: init.cause });
		this.status = init.status;
		this.reason = init.reason;
		this.requestId = init.requestId;
	}
}

/** A connection could not be made or was lost. Surfaced as an event; work is retried, never dropped. */
export class ConnectionError extends ApnsError {
	constructor(message: string, options?: { cause?: unknown }) {
		super('APNS_CONNECTION', message, options);
	}
}

/** `flushMessages({ timeoutMs })` or a feedback read ran out of time. */
export class TimeoutError extends ApnsError {
	/** How many notifications were still neither delivered nor reported failed (0 for a feedback read). */
	readonly pending: number;

	constructor(message: string, pending: number) {
		super('APNS_TIMEOUT', message);
		this.pending = pending;
	}
}

/** The manager was closed or destroyed. */
export class ClosedError extends ApnsError {
	constructor(message = 'The manager is closed') {
		super('APNS_CLOSED', message);
	}
}

/** The peer broke the protocol (an unknown command, a malformed frame). */
export class ProtocolError extends ApnsError {
	constructor(message: string) {
		super('APNS_PROTOCOL', message);
	}
}

/**
 * The daemon (`apns-worker serve`) cannot start or go on as configured: `APNS_SERVER_CONFIG` (a flag,
 * the environment, a missing optional dependency) or `APNS_SERVER_SECRET` (stored credentials that the
 * given `APNS_WORKER_SECRET` does not open). Never carries a secret.
 */
export class ServerError extends ApnsError {
	constructor(code: 'APNS_SERVER_CONFIG' | 'APNS_SERVER_SECRET', message: string, options?: { cause?: unknown }) {
		super(code, message, options);
	}
}

/** A short, safe rendering of a bad value for an error message. */
export function describe(value: unknown): string {
	if (value === null) return 'null';
	if (value === undefined) return 'undefined';
	if (typeof value === 'string') {
		const shown = value.length > 80 ? `${value.slice(0, 77)}...` : value;
		return `${JSON.stringify(shown)} (string of length ${value.length})`;
	}
	if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return `${String(value)} (${typeof value})`;
	if (value instanceof Date) return `Date(${Number.isNaN(value.getTime()) ? 'Invalid Date' : value.toISOString()})`;
	if (Buffer.isBuffer(value)) return `Buffer of ${value.length} bytes`;
	if (Array.isArray(value)) return `array of length ${value.length}`;
	return typeof value;
}
