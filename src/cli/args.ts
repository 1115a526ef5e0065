/**
 * Flags of the `apns-worker` commands: `node:util` parseArgs in strict mode, its errors turned into one
 * line naming the flag, and the value parsers the commands share. Everything wrong with what the user
 * typed (or the files it names) is a {@link UsageError}: exit code 2.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { proxyFromUrl, type ProxyOptions } from '../index.js';

/** Something wrong with the command line or the files it names. `main` prints it with a hint and exits 2. */
export class UsageError extends Error {
	constructor(message: string, options?: { cause?: unknown }) {
		super(message, options);
		this.name = 'UsageError';
	}
}

/** The flag table of one command, as parseArgs takes it. */
export type FlagTable = Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;

/** Parsed values of a {@link FlagTable}: strings, booleans, or arrays of strings with `multiple`. */
export type FlagValues<T extends FlagTable> = {
	[K in keyof T]?: T[K] extends { type: 'boolean' } ? boolean : T[K] extends { multiple: true } ? string[] : string;
};

/** Every command takes `--help`. */
const HELP = { help: { type: 'boolean', short: 'h' } } as const;

/**
 * Parse `args` against `flags` (strict: unknown flags, missing values and stray arguments are refused).
 * @throws {@link UsageError} naming the flag.
 */
export function parseFlags<T extends FlagTable>(args: readonly string[], flags: T): FlagValues<T> & { help?: boolean } {
	try {
		return parseArgs({ args: [...args], options: { ...flags, ...HELP }, strict: true, allowPositionals: false }).values as FlagValues<T> & { help?: boolean };
	} catch (error) {
		throw usageFromParseError(error);
	}
}

/** parseArgs' messages are long and name the flag in quotes; say the same in one short line. */
function usageFromParseError(error: unknown): Error {
	if (!(error instanceof Error)) return new UsageError(String(error));
	const code = (error as { code?: string }).code;
	const quoted = /'([^']+)'/.exec(error.message)?.[1] ?? '';
	// "-t, --token <value>" → "--token"
	const flag = /--?[\w-]+(?=[^,]*$)/.exec(quoted.replace(/ <value>$/, ''))?.[0] ?? quoted;
	switch (code) {
		case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
			return new UsageError(`unknown flag ${flag}`);
		case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
			return new UsageError(`unexpected argument ${JSON.stringify(quoted)} (every value follows its flag)`);
		case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
			return error.message.includes('does not take an argument') ? new UsageError(`${flag} takes no value`) : new UsageError(`${flag} needs a value`);
		default:
			return new UsageError(error.message);
	}
}

/** `value` as a whole number from `min` to `max`. */
export function wholeNumber(flag: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
	const n = /^\d+$/.test(value) ? Number(value) : Number.NaN;
	if (!(n >= min && n <= max)) throw new UsageError(`${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}`);
	return n;
}

const UNIT_MS: Readonly<Record<string, number>> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A duration such as `90s`, `30m`, `24h` or `30d` (a whole number and a unit), in ms, from `minMs` to `maxMs`. */
export function duration(flag: string, value: string, minMs: number, maxMs: number): number {
	const m = /^(\d+)([smhd])$/.exec(value);
	const ms = m === null ? Number.NaN : Number(m[1]) * UNIT_MS[m[2]!]!;
	if (!(ms >= minMs && ms <= maxMs)) throw new UsageError(`${flag} must be a duration from ${minMs / 1000}s to ${maxMs / 86_400_000}d, a whole number and s, m, h or d (e.g. 24h), got ${JSON.stringify(value)}`);
	return ms;
}

/** `value` as one of `choices`. */
export function oneOf<C extends string>(flag: string, value: string, choices: readonly C[]): C {
	if (!(choices as readonly string[]).includes(value)) throw new UsageError(`${flag} must be ${choices.join(', ').replace(/, ([^,]*)$/, ' or $1')}, got ${JSON.stringify(value)}`);
	return value as C;
}

/** `HOST:PORT` (an IPv6 host in brackets: `[::1]:443`). */
export function hostPort(flag: string, value: string): { host: string; port: number } {
	const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d+)$/.exec(value);
	if (match === null) throw new UsageError(`${flag} must be HOST:PORT, got ${JSON.stringify(value)}`);
	return { host: (match[1] ?? match[2])!, port: wholeNumber(`${flag} port`, match[3]!, 1, 65_535) };
}

/** The bytes of the file a flag names. */
export function readFlagFile(flag: string, path: string): Buffer {
	try {
		return readFileSync(path);
	} catch (error) {
		throw fileError(flag, path, error);
	}
}

/** A file a flag names could not be read: say which, and why in a few words. */
export function fileError(flag: string, path: string, error: unknown): UsageError {
	const code = (error as NodeJS.ErrnoException).code;
	const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'it is a directory' : (error as Error).message;
	return new UsageError(`${flag}: cannot read ${path}: ${why}`, { cause: error });
}

/** The text of a PEM file a flag names, checked to hold a PEM block (the text itself is never shown). */
export function readPemFile(flag: string, path: string): string {
	const text = readFlagFile(flag, path).toString('utf8');
	if (!text.includes('-----BEGIN ')) throw new UsageError(`${flag}: ${path} is not a PEM file (no -----BEGIN line)`);
	return text;
}

/**
 * `--proxy http://[user:pass@]host:port` → the manager's `proxy` option (the library's own parser, so the
 * flag and `HTTPS_PROXY` read URLs the same way). Errors never repeat the value: it may hold a password.
 */
export function parseProxy(value: string): ProxyOptions {
	try {
		return proxyFromUrl(value);
	} catch (error) {
		throw new UsageError(`--proxy must be http://[user:password@]host[:port] (an HTTP CONNECT proxy; https:// and SOCKS are not supported)`, { cause: error });
	}
}

/**
 * The JSON object of `--payload JSON` or `--payload-file FILE` (whichever was given), and the flag it came from.
 * @throws {@link UsageError} naming the flag when it is not JSON, or not an object (`example` shows one).
 */
export function payloadFlag(v: { readonly payload?: string | undefined; readonly 'payload-file'?: string | undefined }, example: string): { flag: string; payload: Record<string, unknown> } {
	const [flag, text] = v.payload !== undefined ? ['--payload', v.payload] : ['--payload-file', readFlagFile('--payload-file', v['payload-file']!).toString('utf8')];
	let payload: unknown;
	try {
		payload = JSON.parse(text);
	} catch (error) {
		throw new UsageError(`${flag} is not JSON: ${(error as Error).message}`);
	}
	if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) throw new UsageError(`${flag} must be a JSON object such as ${example}`);
	return { flag, payload: payload as Record<string, unknown> };
}

