/**
 * The HTTP/2 provider API's rules (shared/docs/apns-protocol.md §C): payload limits, topics per push
 * type, what each answer means, and which answers are feedback. The sockets are in drivers/http2.ts.
 */
import { InvalidArgumentError } from '../errors.js';
import type { Message } from '../message.js';

/** Largest HTTP/2 payload, and the VoIP one. */
export const MAX_HTTP2_PAYLOAD_BYTES = 4096;
export const MAX_HTTP2_VOIP_PAYLOAD_BYTES = 5120;

/** @throws {@link InvalidArgumentError} when `message`'s payload is over its push type's limit. */
export function checkHttp2Message(message: Message, argument: string): void {
	const limit = message.pushType === 'voip' ? MAX_HTTP2_VOIP_PAYLOAD_BYTES : MAX_HTTP2_PAYLOAD_BYTES;
	if (message.payloadLength > limit) throw new InvalidArgumentError(argument, `a payload of at most ${limit} bytes once encoded`, `${message.payloadLength} bytes`);
}

/** Push types whose topic carries a suffix after the bundle ID. */
const TOPIC_SUFFIX: Readonly<Record<string, string>> = {
	voip: '.voip',
	complication: '.complication',
	fileprovider: '.pushkit.fileprovider',
	liveactivity: '.push-type.liveactivity',
	location: '.location-query',
	pushtotalk: '.voip-ptt',
	widgets: '.push-type.widgets',
	controls: '.push-type.controls',
};

/** The topic for a push type: the bundle ID plus the push type's suffix, unless already there. */
export function topicFor(base: string, pushType: string): string {
	const suffix = TOPIC_SUFFIX[pushType];
	return suffix === undefined || base.endsWith(suffix) ? base : `${base}${suffix}`;
}

/** HTTP/2 error codes (RFC 9113 §7), for reports. */
const ERROR_CODES: readonly string[] = [
	'NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED', 'FRAME_SIZE_ERROR',
	'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM', 'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED',
];

/** The name of an HTTP/2 error code. */
export function errorCodeName(code: number): string {
	return ERROR_CODES[code] ?? `code ${code}`;
}

/** The status, when a failure has no reason of APNs' (`HTTP 404`). */
export function describeHttpStatus(status: number): string {
	return `HTTP ${status}`;
}

/** What an answer means for its notification. */
export type AnswerMeaning =
	/** 200: accepted. */
	| 'delivered'
	/** ExpiredProviderToken: retry with a fresh token (with token auth). */
	| 'expiredToken'
	/** IdleTimeout: retry at once on a new session. */
	| 'idleTimeout'
	/** 429, 500, 503: retry after a backoff (or `retry-after`). */
	| 'retry'
	/** Anything else: rejected for good. */
	| 'failed';

/** Read an answer: its meaning, and the reason and timestamp of its JSON body. */
export function readAnswer(status: number, body: Buffer, tokenAuth: boolean): { meaning: AnswerMeaning; reason: string; timestamp: Date | undefined } {
	if (status === 200) return { meaning: 'delivered', reason: '', timestamp: undefined };
	let reason = describeHttpStatus(status);
	let timestamp: Date | undefined;
	try {
		const parsed = JSON.parse(body.toString('utf8')) as { reason?: unknown; timestamp?: unknown };
		if (typeof parsed.reason === 'string') reason = parsed.reason;
		if (typeof parsed.timestamp === 'number') timestamp = new Date(parsed.timestamp);
	} catch {
		// No JSON body: keep the status as the reason.
	}
	const meaning: AnswerMeaning =
		reason === 'ExpiredProviderToken' && tokenAuth ? 'expiredToken'
		: reason === 'IdleTimeout' ? 'idleTimeout'
		: status === 429 || status === 500 || status === 503 ? 'retry'
		: 'failed';
	return { meaning, reason, timestamp };
}

/**
 * 410 Unregistered: the token is gone. HTTP/2 has no feedback service; these answers are its records,
 * handed out by `getFeedback()` and the `feedback` event.
 */
export function isFeedback(status: number): boolean {
	return status === 410;
}
