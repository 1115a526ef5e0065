/**
 * Device tokens for `send`: from `--token` flags, a file, or stdin, one per line (blank lines skipped,
 * surrounding spaces ignored). Every token is checked before anything is sent: a bad one is a usage
 * error naming its line. A file is read twice — once to check and count, once to send — so a file of
 * millions never sits in memory; stdin cannot be read twice, so its tokens are kept packed, 32 bytes
 * each (1M tokens: 32 MB). Duplicates are sent as given: each line is one notification.
 */
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { fileError, UsageError } from './args.js';

const TOKEN = /^[0-9a-fA-F]{64}$/;
const TOKEN_BYTES = 32;
/** A line this long is no token: stop before an endless line fills memory. */
const MAX_LINE = 4096;

/** The tokens of one `send`, in order. */
export interface TokenSource {
	/** How many tokens there are. */
	readonly count: number;
	/** The tokens, lowercase hex, at most `size` at a time. */
	batches(size: number): AsyncIterable<string[]>;
}

/** Check one token; `where` says where it came from, for the error. */
function check(token: string, where: string): string {
	if (!TOKEN.test(token)) {
		const shown = token.length > 70 ? `${token.slice(0, 67)}...` : token;
		throw new UsageError(`${where}: not a device token (64 hexadecimal characters): ${JSON.stringify(shown)}`);
	}
	return token.toLowerCase();
}

/**
 * The lines of a stream, a chunk's worth at a time (one await per chunk, not per line), numbered from 1.
 * Reading is pulled: nothing more is read until the caller asks for the next chunk.
 */
async function* lines(stream: Readable, where: string): AsyncGenerator<{ first: number; lines: string[] }> {
	stream.setEncoding('utf8');
	let rest = '';
	let number = 1;
	for await (const chunk of stream as AsyncIterable<string>) {
		const parts = (rest + chunk).split('\n');
		rest = parts.pop()!;
		if (rest.length > MAX_LINE) throw new UsageError(`${where} line ${number + parts.length}: longer than ${MAX_LINE} characters: not a device token`);
		yield { first: number, lines: parts };
		number += parts.length;
	}
	if (rest.length > 0) yield { first: number, lines: [rest] };
}

/** Each non-blank line of `stream`, checked, with its line number. */
async function* tokenLines(stream: Readable, where: string): AsyncGenerator<string[]> {
	for await (const { first, lines: chunk } of lines(stream, where)) {
		const tokens: string[] = [];
		for (let i = 0; i < chunk.length; i++) {
			const line = chunk[i]!.trim();
			if (line.length > 0) tokens.push(check(line, `${where} line ${first + i}`));
		}
		yield tokens;
	}
}

/** Read a file, turning open and read errors into usage errors naming the flag. */
async function* fromFile(path: string): AsyncGenerator<string[]> {
	const stream = createReadStream(path);
	try {
		yield* tokenLines(stream, `--tokens-file ${path}`);
	} catch (error) {
		throw error instanceof UsageError ? error : fileError('--tokens-file', path, error);
	} finally {
		stream.destroy();
	}
}

/** Re-cut a stream of arrays into arrays of `size` (the last one shorter). */
async function* rebatch(source: AsyncIterable<string[]>, size: number): AsyncGenerator<string[]> {
	let batch: string[] = [];
	for await (const tokens of source) {
		for (const token of tokens) {
			batch.push(token);
			if (batch.length === size) {
				yield batch;
				batch = [];
			}
		}
	}
	if (batch.length > 0) yield batch;
}

/**
 * The tokens of `--token` flags and `--tokens-file`, checked and counted now (the file is read once to
 * check it, and again as batches are taken).
 */
export async function tokensFromFlags(flagTokens: readonly string[], file: string | undefined): Promise<TokenSource> {
	const given = flagTokens.map((t, i) => check(t.trim(), flagTokens.length === 1 ? '--token' : `--token #${i + 1}`));
	let inFile = 0;
	if (file !== undefined) for await (const tokens of fromFile(file)) inFile += tokens.length;
	return {
		count: given.length + inFile,
		batches: (size) =>
			rebatch(
				(async function* () {
					yield given;
					if (file !== undefined) yield* fromFile(file);
				})(),
				size,
			),
	};
}

/** The tokens piped on stdin, checked and kept packed (stdin cannot be read a second time). */
export async function tokensFromStream(stream: Readable): Promise<TokenSource> {
	let packed = Buffer.allocUnsafe(64 * TOKEN_BYTES);
	let count = 0;
	for await (const tokens of tokenLines(stream, 'stdin')) {
		for (const token of tokens) {
			if ((count + 1) * TOKEN_BYTES > packed.length) {
				const grown = Buffer.allocUnsafe(packed.length * 2);
				packed.copy(grown, 0, 0, count * TOKEN_BYTES);
				packed = grown;
			}
			packed.write(token, count * TOKEN_BYTES, 'hex');
			count++;
		}
	}
	return {
		count,
		async *batches(size) {
			for (let start = 0; start < count; start += size) {
				const end = Math.min(count, start + size);
				const batch = new Array<string>(end - start);
				for (let i = start; i < end; i++) batch[i - start] = packed.toString('hex', i * TOKEN_BYTES, (i + 1) * TOKEN_BYTES);
				yield batch;
			}
		},
	};
}
