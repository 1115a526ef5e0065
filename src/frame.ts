/**
 * The binary provider protocol's bytes (its rules — statuses, limits, what an answer settles — are in
 * protocol/binary.ts) (see shared/docs/apns-protocol.md §A and §B):
 * command-2 notification frames, the 6-byte error response, and feedback tuples.
 * Every integer is unsigned big-endian.
 */
import { ProtocolError } from './errors.js';
import { TOKEN_BYTES } from './message.js';
import { MAX_BINARY_PAYLOAD_BYTES } from './protocol/binary.js';

export const COMMAND_SIMPLE = 0;
export const COMMAND_ENHANCED = 1;
export const COMMAND_FRAME = 2;
export const COMMAND_ERROR = 8;
/** Size of an error-response packet: command, status, ident. */
export const ERROR_RESPONSE_BYTES = 6;

const ITEM_TOKEN = 1;
const ITEM_PAYLOAD = 2;
const ITEM_IDENT = 3;
const ITEM_EXPIRY = 4;
const ITEM_PRIORITY = 5;
/** Frame header (5) + token item (3+32) + payload item header (3) + ident (3+4) + expiry (3+4) + priority (3+1). */
const FRAME_OVERHEAD = 5 + 3 + TOKEN_BYTES + 3 + 7 + 7 + 4;

/** Bytes a command-2 frame takes for a payload of `payloadBytes`. */
export function frameBytes(payloadBytes: number): number {
	return FRAME_OVERHEAD + payloadBytes;
}

/**
 * Write one command-2 frame with all five items at `offset` of `out` (which must have room for
 * {@link frameBytes}): the token is the 32 bytes at `tokenAt` of `tokens`, the payload `payloadLength`
 * bytes at `payloadAt` of `payload` (offsets, so a message's bytes are copied without a view per frame).
 * Returns the offset after the frame.
 */
export function writeFrame(
	out: Buffer,
	offset: number,
	tokens: Buffer,
	tokenAt: number,
	payload: Buffer,
	payloadAt: number,
	payloadLength: number,
	ident: number,
	expiry: number,
	priority: number,
): number {
	// Byte by byte: at a million frames a second, Buffer.copy of part of a buffer (a view made per call,
	// two per frame) and the checked writeUInt*BE calls cost ~40% more, and most of the garbage.
	if (offset + FRAME_OVERHEAD + payloadLength > out.length) throw new RangeError(`No room for a ${FRAME_OVERHEAD + payloadLength}-byte frame at ${offset} of ${out.length}`);
	let o = offset;
	out[o] = COMMAND_FRAME;
	putU32(out, o + 1, FRAME_OVERHEAD - 5 + payloadLength);
	out[o + 5] = ITEM_TOKEN;
	out[o + 6] = 0;
	out[o + 7] = TOKEN_BYTES;
	o += 8;
	for (let i = 0; i < TOKEN_BYTES; i++) out[o + i] = tokens[tokenAt + i]!;
	o += TOKEN_BYTES;
	out[o] = ITEM_PAYLOAD;
	out[o + 1] = payloadLength >>> 8;
	out[o + 2] = payloadLength & 0xff;
	o += 3;
	if (payloadLength < LOOP_COPY_BYTES) for (let i = 0; i < payloadLength; i++) out[o + i] = payload[payloadAt + i]!;
	else payload.copy(out, o, payloadAt, payloadAt + payloadLength);
	o += payloadLength;
	o = putU32Item(out, o, ITEM_IDENT, ident);
	o = putU32Item(out, o, ITEM_EXPIRY, expiry);
	out[o] = ITEM_PRIORITY;
	out[o + 1] = 0;
	out[o + 2] = 1;
	out[o + 3] = priority;
	return o + 4;
}

/**
 * Write `count` command-2 frames of one message at `offset` of `out` (room for `count` ×
 * {@link frameBytes} is checked): the tokens are the consecutive 32-byte tokens from `tokenAt` of
 * `tokens`, the idents `ident`, `ident` + 1, … (mod 2^32), the rest as for {@link writeFrame}. Returns
 * the offset after the last frame. The same bytes as `count` calls of {@link writeFrame}, in about
 * 40% of the time: the first frame is written, and each next one is a copy of it with its token and
 * ident put in.
 */
export function writeFrames(
	out: Buffer,
	offset: number,
	tokens: Buffer,
	tokenAt: number,
	count: number,
	payload: Buffer,
	payloadAt: number,
	payloadLength: number,
	ident: number,
	expiry: number,
	priority: number,
): number {
	if (count <= 0) return offset;
	const size = FRAME_OVERHEAD + payloadLength;
	if (offset + count * size > out.length) throw new RangeError(`No room for ${count} frames of ${size} bytes at ${offset} of ${out.length}`);
	let o = writeFrame(out, offset, tokens, tokenAt, payload, payloadAt, payloadLength, ident, expiry, priority);
	// Where the token and the ident's value sit in a frame (see writeFrame).
	const identAt = 8 + TOKEN_BYTES + 3 + payloadLength + 3;
	for (let k = 1; k < count; k++, o += size) {
		out.copyWithin(o, offset, offset + size);
		const from = tokenAt + k * TOKEN_BYTES;
		for (let i = 0; i < TOKEN_BYTES; i++) out[o + 8 + i] = tokens[from + i]!;
		putU32(out, o + identAt, (ident + k) >>> 0);
	}
	return o;
}

/** A big-endian u32 at `at` (unchecked: the caller checked the room). */
function putU32(out: Buffer, at: number, value: number): void {
	out[at] = value >>> 24;
	out[at + 1] = (value >>> 16) & 0xff;
	out[at + 2] = (value >>> 8) & 0xff;
	out[at + 3] = value & 0xff;
}

/** A 4-byte item: its id, length 4, `value`; returns the offset after it. */
function putU32Item(out: Buffer, at: number, item: number, value: number): number {
	out[at] = item;
	out[at + 1] = 0;
	out[at + 2] = 4;
	putU32(out, at + 3, value);
	return at + 7;
}

/** Payloads shorter than this are copied byte by byte (see {@link writeFrame}). */
const LOOP_COPY_BYTES = 256;

/** Size of the known-bad probe frame. */
export const PROBE_FRAME_BYTES = 5 + 3 + 3 + 2 + 7;

/**
 * The known-bad "probe": a frame whose token item is empty, so the gateway must answer with an error
 * naming `ident` (Missing device token). Since the gateway works in order, that answer proves every
 * notification written before it on the connection was processed.
 */
export function writeProbeFrame(out: Buffer, offset: number, ident: number): number {
	let o = offset;
	out[o++] = COMMAND_FRAME;
	o = out.writeUInt32BE(PROBE_FRAME_BYTES - 5, o);
	out[o++] = ITEM_TOKEN;
	o = out.writeUInt16BE(0, o);
	out[o++] = ITEM_PAYLOAD;
	o = out.writeUInt16BE(2, o);
	o += out.write('{}', o, 'latin1');
	out[o++] = ITEM_IDENT;
	o = out.writeUInt16BE(4, o);
	return out.writeUInt32BE(ident, o);
}

export function encodeErrorResponse(status: number, ident: number): Buffer {
	const out = Buffer.allocUnsafe(ERROR_RESPONSE_BYTES);
	out[0] = COMMAND_ERROR;
	out[1] = status;
	out.writeUInt32BE(ident >>> 0, 2);
	return out;
}

/** A notification as the gateway parsed it. `status` is non-zero when the frame must be rejected. */
export interface ParsedNotification {
	command: number;
	/** 0 for command 0 (which carries none) and when the item is missing. */
	ident: number;
	expiry: number;
	priority: number;
	token: Buffer;
	payload: Buffer;
	/** 0 when valid, else the status the gateway answers with. */
	status: number;
}

/** Largest frame the parser accepts before it calls the stream broken (protects the mock's memory). */
const MAX_FRAME_BYTES = 16 * 1024;

/**
 * A notification as {@link scanNotification} finds it: where its token and payload are, no copies. One
 * object is filled again for every frame (a gateway reading a million a second makes no garbage per frame).
 */
export interface ScannedNotification {
	command: number;
	/** 0 for command 0 (which carries none) and when the item is missing. */
	ident: number;
	expiry: number;
	priority: number;
	tokenStart: number;
	tokenLength: number;
	payloadStart: number;
	payloadLength: number;
	/** 0 when valid, else the status the gateway answers with. */
	status: number;
}

/** A new {@link ScannedNotification} to fill. */
export function scannedNotification(): ScannedNotification {
	return { command: 0, ident: 0, expiry: 0, priority: 10, tokenStart: 0, tokenLength: 0, payloadStart: 0, payloadLength: 0, status: 0 };
}

/** {@link scanNotification}: more bytes are needed. */
export const SCAN_MORE = -1;
/** {@link scanNotification}: a frame the gateway cannot even delimit (an unknown command, an absurd length); the stream cannot be resynchronised. */
export const SCAN_BROKEN = -2;

/**
 * Scan one notification (command 0, 1 or 2) at `offset` into `n`. Returns the offset after it, or
 * {@link SCAN_MORE}, or {@link SCAN_BROKEN} (then `n.status` is 128).
 */
export function scanNotification(buf: Buffer, offset: number, n: ScannedNotification): number {
	const available = buf.length - offset;
	if (available < 1) return SCAN_MORE;
	const command = buf[offset]!;
	n.command = command;
	n.ident = 0;
	n.expiry = 0;
	n.priority = 10;
	n.tokenStart = n.tokenLength = n.payloadStart = n.payloadLength = 0;
	n.status = 0;
	if (command === COMMAND_FRAME) {
		if (available < 5) return SCAN_MORE;
		const length = buf.readUInt32BE(offset + 1);
		if (length > MAX_FRAME_BYTES) {
			n.status = 128;
			return SCAN_BROKEN;
		}
		if (available < 5 + length) return SCAN_MORE;
		const end = offset + 5 + length;
		n.status = scanItems(buf, offset + 5, end, n);
		return end;
	}
	if (command === COMMAND_SIMPLE || command === COMMAND_ENHANCED) {
		const head = command === COMMAND_SIMPLE ? 1 : 9;
		if (available < head + 2) return SCAN_MORE;
		const tokenLength = buf.readUInt16BE(offset + head);
		if (available < head + 2 + tokenLength + 2) return SCAN_MORE;
		const payloadLength = buf.readUInt16BE(offset + head + 2 + tokenLength);
		const end = offset + head + 2 + tokenLength + 2 + payloadLength;
		if (buf.length < end) return SCAN_MORE;
		if (command === COMMAND_ENHANCED) {
			n.ident = buf.readUInt32BE(offset + 1);
			n.expiry = buf.readUInt32BE(offset + 5);
		}
		n.tokenStart = offset + head + 2;
		n.tokenLength = tokenLength;
		n.payloadStart = end - payloadLength;
		n.payloadLength = payloadLength;
		n.status = validate(n, true, true);
		return end;
	}
	n.status = 128;
	return SCAN_BROKEN;
}

/** A command 2 frame's items into `n`; returns its status. */
function scanItems(buf: Buffer, start: number, end: number, n: ScannedNotification): number {
	let hasToken = false;
	let hasPayload = false;
	let o = start;
	while (o < end) {
		if (end - o < 3) return 128;
		const id = buf[o]!;
		const length = buf.readUInt16BE(o + 1);
		const data = o + 3;
		o = data + length;
		if (o > end) return 128;
		switch (id) {
			case ITEM_TOKEN:
				n.tokenStart = data;
				n.tokenLength = length;
				hasToken = true;
				break;
			case ITEM_PAYLOAD:
				n.payloadStart = data;
				n.payloadLength = length;
				hasPayload = true;
				break;
			case ITEM_IDENT:
				if (length !== 4) return 128;
				n.ident = buf.readUInt32BE(data);
				break;
			case ITEM_EXPIRY:
				if (length !== 4) return 128;
				n.expiry = buf.readUInt32BE(data);
				break;
			case ITEM_PRIORITY:
				if (length !== 1) return 128;
				n.priority = buf[data]!;
				break;
			default:
				return 128;
		}
	}
	return validate(n, hasToken, hasPayload);
}

/**
 * Parse one notification (command 0, 1 or 2) at `offset`: {@link scanNotification}, with the token and
 * payload as views. Returns `undefined` when more bytes are needed, or the notification and the offset
 * after it. A frame the gateway could not even delimit comes back with status 128 and `end` = -1.
 */
export function parseNotification(buf: Buffer, offset: number): { notification: ParsedNotification; end: number } | undefined {
	const n = scannedNotification();
	const end = scanNotification(buf, offset, n);
	if (end === SCAN_MORE) return undefined;
	const broken = end === SCAN_BROKEN;
	const notification: ParsedNotification = {
		command: n.command,
		ident: n.ident,
		expiry: n.expiry,
		priority: n.priority,
		token: broken ? EMPTY : buf.subarray(n.tokenStart, n.tokenStart + n.tokenLength),
		payload: broken ? EMPTY : buf.subarray(n.payloadStart, n.payloadStart + n.payloadLength),
		status: n.status,
	};
	return { notification, end: broken ? -1 : end };
}

const EMPTY = Buffer.alloc(0);

function validate(n: ScannedNotification, hasToken: boolean, hasPayload: boolean): number {
	if (!hasToken || n.tokenLength === 0) return 2;
	if (!hasPayload || n.payloadLength === 0) return 4;
	if (n.tokenLength !== TOKEN_BYTES) return 5;
	if (n.payloadLength > MAX_BINARY_PAYLOAD_BYTES) return 7;
	if (n.priority !== 5 && n.priority !== 10) return 128;
	return 0;
}

/** Size of a feedback tuple with a 32-byte token. */
export const FEEDBACK_TUPLE_BYTES = 6 + TOKEN_BYTES;

/** Encode one feedback tuple: time (UNIX seconds), token length, token. */
export function encodeFeedbackTuple(when: Date, token: Buffer): Buffer {
	const out = Buffer.allocUnsafe(6 + token.length);
	out.writeUInt32BE(Math.floor(when.getTime() / 1000) >>> 0, 0);
	out.writeUInt16BE(token.length, 4);
	token.copy(out, 6);
	return out;
}

/**
 * Reassembles feedback tuples from a byte stream however it is chunked: a tuple is taken out only once
 * all of its `6 + N` bytes are buffered. A token length other than {@link TOKEN_BYTES} breaks the stream:
 * it is refused as soon as the 6-byte header is in, so a hostile length never makes it buffer the body.
 */
export class FeedbackDecoder {
	#pending: Buffer = EMPTY;
	/** Tuples returned so far. */
	#decoded = 0;
	#error: ProtocolError | undefined;

	/**
	 * Feed a chunk. Returns the tuples it completed, and `error` once a tuple header with a bad token length
	 * has been seen: the tuples before that header are still returned (hand them over), nothing after it is.
	 * A broken decoder stays broken: later pushes return no tuples and the same error.
	 */
	push(chunk: Buffer): { tuples: Array<{ when: Date; token: Buffer }>; error: ProtocolError | undefined } {
		if (this.#error !== undefined) return { tuples: [], error: this.#error };
		const buf = this.#pending.length === 0 ? chunk : Buffer.concat([this.#pending, chunk]);
		const tuples: Array<{ when: Date; token: Buffer }> = [];
		let o = 0;
		while (buf.length - o >= 6) {
			const length = buf.readUInt16BE(o + 4);
			if (length !== TOKEN_BYTES) {
				this.#decoded += tuples.length;
				this.#error = new ProtocolError(`A feedback tuple declares a token of ${length} bytes, not ${TOKEN_BYTES} (after ${this.#decoded} tuples were handed over)`);
				this.#pending = EMPTY;
				return { tuples, error: this.#error };
			}
			if (buf.length - o < 6 + length) break;
			tuples.push({ when: new Date(buf.readUInt32BE(o) * 1000), token: Buffer.from(buf.subarray(o + 6, o + 6 + length)) });
			o += 6 + length;
		}
		this.#decoded += tuples.length;
		this.#pending = o === buf.length ? EMPTY : Buffer.from(buf.subarray(o));
		return { tuples, error: undefined };
	}

	/** Bytes of an incomplete tuple still buffered (non-zero at EOF means the stream was cut mid-tuple). */
	get pendingBytes(): number {
		return this.#pending.length;
	}
}
