/**
 * A `Message` is one payload addressed to one or more device tokens. It is validated and encoded once, at
 * construction: a broadcast to a million tokens holds one payload buffer and one 32-byte slot per token.
 */
import { InvalidArgumentError } from './errors.js';

/** Byte length of a device token on the binary protocol. */
export const TOKEN_BYTES = 32;
const MAX_U32 = 0xffff_ffff;

/** Notification priority: 10 = deliver now, 5 = when it saves power, 1 = power first (HTTP/2 only). */
export type Priority = 1 | 5 | 10;

/** The `apns-push-type` values (HTTP/2). */
export const PUSH_TYPES = ['alert', 'background', 'location', 'voip', 'complication', 'fileprovider', 'mdm', 'liveactivity', 'pushtotalk', 'widgets', 'controls'] as const;
export type PushType = (typeof PUSH_TYPES)[number];
/** Longest `apns-collapse-id`, in UTF-8 bytes. */
export const MAX_COLLAPSE_ID_BYTES = 64;

/** Per-message delivery options. */
export interface MessageOptions {
	/**
	 * When APNs may stop trying to deliver: a `Date`, or UNIX time in **seconds**. `0` means "do not
	 * store" (one attempt only). Absent: over HTTP/2 the `apns-expiration` header is left out, so APNs
	 * stores the notification under its own policy (up to 30 days); a binary frame must carry a value and
	 * carries 0.
	 */
	readonly expiration?: Date | number | undefined;
	/**
	 * 10 = send now (needs an alert, sound or badge), 5 = send when it saves power, 1 = put the device's
	 * power first (HTTP/2 only). Background pushes must use 5.
	 * @default 10, or 5 for a background push
	 */
	readonly priority?: Priority | undefined;
	/**
	 * HTTP/2 `apns-push-type`.
	 * @default 'alert' when the payload shows something (alert, sound, badge), 'background' for content-available only
	 */
	readonly pushType?: PushType | undefined;
	/** HTTP/2 `apns-collapse-id`: notifications with the same one are shown as one. At most 64 bytes. */
	readonly collapseId?: string | undefined;
	/** HTTP/2 `apns-topic` (bundle ID) for this message; defaults to the manager's topic. Push-type suffixes are added. */
	readonly topic?: string | undefined;
	/**
	 * HTTP/2 `apns-id`: a UUID naming the notification, reported back in receipts and errors. Only for a
	 * message to one token (an apns-id names one notification). Absent: one is generated per token.
	 */
	readonly id?: string | undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** How one token of a message ended, as a receipt lists it. */
export interface TokenFailure {
	readonly index: number;
	readonly status: number;
	readonly reason: string;
	readonly timestamp?: Date | undefined;
}

/**
 * The delivery state of one sent message (one `send`/`sendAps` call), kept on the message itself so a
 * caller who never looks at the receipt pays three fields. @internal
 */
export interface CallState {
	failed: TokenFailure[];
	/** Token indexes dropped unsettled by `destroy()`. */
	dropped: number[];
	/** Set once someone waits on the receipt. */
	resolve: (() => void) | undefined;
	done: Promise<void> | undefined;
}

/** The `aps` dictionary. Known keys may be given in camelCase; other keys are passed through unchanged. */
export interface Aps {
	readonly alert?: string | Readonly<Record<string, unknown>> | undefined;
	readonly badge?: number | undefined;
	readonly sound?: string | Readonly<Record<string, unknown>> | undefined;
	/** Sent as `content-available: 1`. */
	readonly contentAvailable?: boolean | 0 | 1 | undefined;
	/** Sent as `mutable-content: 1`. */
	readonly mutableContent?: boolean | 0 | 1 | undefined;
	readonly category?: string | undefined;
	/** Sent as `thread-id`. */
	readonly threadId?: string | undefined;
	readonly [key: string]: unknown;
}

/** Options of `sendAps`: the message options plus custom top-level payload keys. */
export interface SendApsOptions extends MessageOptions {
	/** Custom keys placed next to `aps` in the payload (never inside it). */
	readonly extra?: Readonly<Record<string, unknown>> | undefined;
}

const APS_KEY_NAMES: Readonly<Record<string, string>> = {
	contentAvailable: 'content-available',
	mutableContent: 'mutable-content',
	threadId: 'thread-id',
};

/**
 * Where messages keep their bytes: tokens then payload, back to back, in shared chunks. A queued message
 * then costs one small object and its bytes, not two Buffer objects (~100 B of heap each) — what lets
 * 200,000 distinct notifications wait in a few tens of MB. A chunk lives while any message in it does,
 * as Node's own Buffer pool slabs do; a message too large for a chunk gets a buffer of its own.
 */
const ARENA_CHUNK_BYTES = 16 * 1024;
let arena = Buffer.allocUnsafeSlow(ARENA_CHUNK_BYTES);
let arenaUsed = 0;
/** A reservation is open: user code run while filling it (a token getter) must not get the same room. */
let reserving = false;

/** Room for `bytes`: the chunk and the offset to write at. Then {@link commit} once written, or {@link release}. */
function reserve(bytes: number): { chunk: Buffer; at: number } {
	if (bytes > ARENA_CHUNK_BYTES / 4 || reserving) return { chunk: Buffer.allocUnsafeSlow(bytes), at: 0 };
	reserving = true;
	if (arenaUsed + bytes > ARENA_CHUNK_BYTES) {
		arena = Buffer.allocUnsafeSlow(ARENA_CHUNK_BYTES);
		arenaUsed = 0;
	}
	return { chunk: arena, at: arenaUsed };
}

function commit(chunk: Buffer, end: number): void {
	if (chunk === arena) arenaUsed = (end + 7) & ~7;
}

/** End the open reservation of `chunk` (committed or not). */
function release(chunk: Buffer): void {
	if (chunk === arena) reserving = false;
}

const PUSH_TYPE_INDEX: ReadonlyMap<string, number> = new Map(PUSH_TYPES.map((t, i) => [t, i]));

/** One payload for one or more device tokens. Immutable once built. */
export class Message {
	/** How many device tokens this message is addressed to. */
	readonly count: number;
	/** The bytes: `count` tokens of {@link TOKEN_BYTES}, then the payload. @internal */
	readonly chunk: Buffer;
	/** Where the tokens start in `chunk`. @internal */
	readonly start: number;
	/** Encoded payload length in bytes. */
	readonly payloadLength: number;
	/** Priority, push type and whether it was given, packed (read them through the getters). @internal */
	readonly meta: number;
	/** Expiration as UNIX seconds; `undefined` when none was given (see {@link MessageOptions.expiration}). */
	readonly expiry: number | undefined;
	/** The rarely given options; undefined when none was. @internal */
	readonly extra: { readonly collapseId: string | undefined; readonly topic: string | undefined; readonly id: string | undefined } | undefined;
	/** Number of the first token in the manager's sequence, for generated apns-ids; set when queued. @internal */
	ordinal = -1;
	/** Tokens not yet delivered, failed or dropped. @internal */
	open = 0;
	/** Failures, drops and waiters of this send; made on the first failure, drop or wait. @internal */
	call: CallState | undefined = undefined;

	/**
	 * @param tokens - one device token or an array of them: 64 hexadecimal characters each, any case.
	 * @param payload - the JSON payload object, with Apple's keys under `aps`.
	 * @param options - expiration and priority.
	 * @throws {@link InvalidArgumentError} naming the first bad argument.
	 */
	constructor(tokens: string | readonly string[], payload: Readonly<Record<string, unknown>>, options: MessageOptions = {}) {
		if (typeof tokens !== 'string' && !Array.isArray(tokens)) throw new InvalidArgumentError('tokens', 'a device token string or an array of them', tokens);
		if (typeof tokens !== 'string' && tokens.length === 0) throw new InvalidArgumentError('tokens', 'at least one device token', tokens);
		if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) {
			throw new InvalidArgumentError('payload', 'a JSON object', payload);
		}
		let json: string | undefined;
		try {
			json = JSON.stringify(payload);
		} catch (error) {
			throw new InvalidArgumentError('payload', `a JSON-serialisable object (${(error as Error).message})`, payload);
		}
		// A toJSON() can turn the object into anything (or nothing): APNs takes a JSON object only.
		if (typeof json !== 'string' || !json.startsWith('{')) {
			throw new InvalidArgumentError('payload', 'an object that encodes as a JSON object', json === undefined ? undefined : `JSON ${json.slice(0, 40)}`);
		}
		if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', options);
		this.expiry = toExpiry(options.expiration);
		const pushType = toPushType(options.pushType, payload);
		const priority = toPriority(options.priority, pushType);
		this.meta = priority | (PUSH_TYPE_INDEX.get(pushType)! << 4) | (options.pushType === undefined ? 0 : 1 << 8);
		if (options.collapseId !== undefined && (typeof options.collapseId !== 'string' || Buffer.byteLength(options.collapseId) > MAX_COLLAPSE_ID_BYTES)) {
			throw new InvalidArgumentError('options.collapseId', `a string of at most ${MAX_COLLAPSE_ID_BYTES} bytes`, options.collapseId);
		}
		if (options.topic !== undefined && (typeof options.topic !== 'string' || options.topic.length === 0)) {
			throw new InvalidArgumentError('options.topic', 'a bundle ID', options.topic);
		}
		const count = typeof tokens === 'string' ? 1 : tokens.length;
		if (options.id !== undefined && (typeof options.id !== 'string' || !UUID.test(options.id))) {
			throw new InvalidArgumentError('options.id', 'a UUID such as 123e4567-e89b-12d3-a456-4266554400a0', options.id);
		}
		if (options.id !== undefined && count !== 1) throw new InvalidArgumentError('options.id', 'a message to one token (an apns-id names one notification)', `${count} tokens`);
		this.extra =
			options.collapseId === undefined && options.topic === undefined && options.id === undefined
				? undefined
				: { collapseId: options.collapseId, topic: options.topic, id: options.id?.toLowerCase() };
		// Tokens, then the payload, into the arena; committed only once the tokens are valid.
		const tokenBytes = count * TOKEN_BYTES;
		const { chunk, at } = reserve(tokenBytes + Buffer.byteLength(json, 'utf8'));
		try {
			packTokens(tokens, count, chunk, at);
			this.payloadLength = chunk.write(json, at + tokenBytes, 'utf8');
			commit(chunk, at + tokenBytes + this.payloadLength);
		} finally {
			release(chunk);
		}
		this.chunk = chunk;
		this.start = at;
		this.count = count;
	}

	/** The payload, decoded from its encoding (a new object each call). */
	get payload(): Record<string, unknown> {
		return JSON.parse(this.chunk.toString('utf8', this.payloadStart, this.payloadStart + this.payloadLength)) as Record<string, unknown>;
	}

	/** The payload encoded as compact JSON, UTF-8. Encoded once, shared by every token (a view, not a copy). */
	get encodedPayload(): Buffer {
		return this.chunk.subarray(this.payloadStart, this.payloadStart + this.payloadLength);
	}

	/** The tokens in binary, {@link TOKEN_BYTES} bytes each, back to back (a view, not a copy). */
	get tokenBytes(): Buffer {
		return this.chunk.subarray(this.start, this.payloadStart);
	}

	/** Where the payload starts in `chunk`. @internal */
	get payloadStart(): number {
		return this.start + this.count * TOKEN_BYTES;
	}

	/** 1, 5 or 10. */
	get priority(): Priority {
		return (this.meta & 0xf) as Priority;
	}

	/** HTTP/2 push type (given or inferred from the payload). */
	get pushType(): PushType {
		return PUSH_TYPES[(this.meta >> 4) & 0xf]!;
	}

	/** Whether `pushType` was given rather than inferred (a binary send refuses it). @internal */
	get explicitPushType(): boolean {
		return (this.meta & (1 << 8)) !== 0;
	}

	get collapseId(): string | undefined {
		return this.extra?.collapseId;
	}

	get topic(): string | undefined {
		return this.extra?.topic;
	}

	/** The `apns-id` given, if any (see {@link MessageOptions.id}). */
	get id(): string | undefined {
		return this.extra?.id;
	}

	/**
	 * This message as a new send: the same bytes and options, fresh delivery state. Sending one Message
	 * twice makes two sends, each with its own receipt. @internal
	 */
	forAnotherSend(): Message {
		const copy = Object.create(Message.prototype) as Message;
		Object.assign(copy, this);
		copy.ordinal = -1;
		copy.open = 0;
		copy.call = undefined;
		return copy;
	}

	/**
	 * Build a message from an `aps` dictionary, the way `manager.sendAps()` does: camelCase keys such as
	 * `contentAvailable` become Apple's `content-available`, and `extra` keys sit next to `aps`.
	 */
	static fromAps(tokens: string | readonly string[], aps: Aps, options: SendApsOptions = {}): Message {
		if (aps === null || typeof aps !== 'object' || Array.isArray(aps)) throw new InvalidArgumentError('aps', 'an object', aps);
		if (options === null || typeof options !== 'object') throw new InvalidArgumentError('options', 'an object', options);
		const extra = options.extra ?? {};
		if (extra === null || typeof extra !== 'object' || Array.isArray(extra)) throw new InvalidArgumentError('options.extra', 'an object', extra);
		if (Object.hasOwn(extra, 'aps')) throw new InvalidArgumentError('options.extra', 'custom keys other than "aps"', 'aps');
		// Spread next to `aps`, a toJSON of extra's would replace the whole payload when it is encoded.
		if (Object.hasOwn(extra, 'toJSON')) throw new InvalidArgumentError('options.extra', 'custom keys other than "toJSON"', 'toJSON');
		return new Message(tokens, { ...extra, aps: normaliseAps(aps) }, options);
	}

	/** The i-th device token, lowercase hex. */
	token(index: number): string {
		const at = this.start + index * TOKEN_BYTES;
		return this.chunk.toString('hex', at, at + TOKEN_BYTES);
	}

	/** All device tokens, lowercase hex. Builds a new array each call: prefer {@link Message.token} for large broadcasts. */
	get tokens(): string[] {
		const out = new Array<string>(this.count);
		for (let i = 0; i < this.count; i++) out[i] = this.token(i);
		return out;
	}
}

/**
 * Decode a 64-character hex token into `out` at `offset`. Buffer's hex decoder stops at the first
 * character that is not a hex digit, so exactly 32 bytes written means the token was valid — for ASCII
 * strings: it reads only the low byte of wider characters (fullwidth 'ａ' would pass as 'A'), so those
 * are refused first (their UTF-8 length exceeds their length). This is the hot part of queuing a
 * million-token broadcast; it measured 2–3× faster than a JS lookup loop.
 */
function decodeToken(token: unknown, out: Buffer, offset: number): boolean {
	return (
		typeof token === 'string' &&
		token.length === 2 * TOKEN_BYTES &&
		Buffer.byteLength(token, 'utf8') === token.length &&
		out.write(token, offset, TOKEN_BYTES, 'hex') === TOKEN_BYTES
	);
}

/** Decode and check `tokens` into `out` at `at`. */
function packTokens(tokens: string | readonly string[], count: number, out: Buffer, at: number): void {
	if (typeof tokens === 'string') {
		if (!decodeToken(tokens, out, at)) throw new InvalidArgumentError('tokens', 'a device token of 64 hexadecimal characters', tokens);
		return;
	}
	for (let i = 0; i < count; i++) {
		if (!decodeToken(tokens[i], out, at + i * TOKEN_BYTES)) {
			throw new InvalidArgumentError(`tokens[${i}]`, 'a device token of 64 hexadecimal characters', tokens[i]);
		}
	}
}

function toExpiry(expiration: unknown): number | undefined {
	return expiration === undefined ? undefined : unixSeconds('options.expiration', expiration);
}

/**
 * A time APNs takes as UNIX seconds (expirations, Live Activity dates): a `Date`, or whole seconds.
 * @internal
 * @throws {@link InvalidArgumentError} naming `argument`: not a time, before 1970, past 2106, or milliseconds.
 */
export function unixSeconds(argument: string, value: unknown): number {
	if (value instanceof Date) {
		const ms = value.getTime();
		if (Number.isNaN(ms) || ms < 0 || ms / 1000 > MAX_U32) throw new InvalidArgumentError(argument, 'a valid Date between 1970 and 2106', value);
		return Math.floor(ms / 1000);
	}
	if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
		throw new InvalidArgumentError(argument, 'a Date or a whole number of UNIX seconds >= 0', value);
	}
	if (value > MAX_U32) throw new InvalidArgumentError(argument, 'UNIX time in seconds (<= 4294967295; milliseconds given?)', value);
	return value;
}

function toPushType(pushType: unknown, payload: Readonly<Record<string, unknown>>): PushType {
	if (pushType !== undefined) {
		if (!(PUSH_TYPES as readonly unknown[]).includes(pushType)) throw new InvalidArgumentError('options.pushType', `one of ${PUSH_TYPES.join(', ')}`, pushType);
		return pushType as PushType;
	}
	const aps = payload['aps'];
	if (aps !== null && typeof aps === 'object') {
		const a = aps as Record<string, unknown>;
		const shows = a['alert'] !== undefined || a['sound'] !== undefined || a['badge'] !== undefined;
		if (!shows && a['content-available'] === 1) return 'background';
	}
	return 'alert';
}

function toPriority(priority: unknown, pushType: PushType): Priority {
	if (priority === undefined) return pushType === 'background' ? 5 : 10;
	if (priority !== 1 && priority !== 5 && priority !== 10) throw new InvalidArgumentError('options.priority', '1, 5 or 10', priority);
	if (pushType === 'background' && priority !== 5) throw new InvalidArgumentError('options.priority', '5 for a background push (Apple refuses 10)', priority);
	return priority;
}

function normaliseAps(aps: Aps): Record<string, unknown> {
	const out: Record<string, unknown> = {};
	for (const [key, value] of Object.entries(aps)) {
		if (value === undefined) continue;
		const name = APS_KEY_NAMES[key] ?? key;
		if (name === 'content-available' || name === 'mutable-content') {
			if (value === false || value === 0) continue;
			if (value !== true && value !== 1) throw new InvalidArgumentError(`aps.${key}`, 'true, false, 0 or 1', value);
			out[name] = 1;
		} else if (name === 'badge' && (typeof value !== 'number' || !Number.isInteger(value) || value < 0)) {
			throw new InvalidArgumentError('aps.badge', 'a whole number >= 0', value);
		} else {
			out[name] = value;
		}
	}
	return out;
}
