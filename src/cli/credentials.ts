/**
 * The credential flags the commands share: `--p8` with `--key-id`, `--team-id` and `--topic` (token
 * auth), or a certificate: `--p12 FILE`, or `--cert FILE --key FILE`, with the passphrase taken from the
 * environment, never from the command line (other users can read a command line in `ps`, and shells
 * keep it in their history).
 */
import type { ApnsManagerOptions } from '../index.js';
import { readFlagFile, readPemFile, UsageError, type FlagValues } from './args.js';

export const CERTIFICATE_FLAGS = {
	p12: { type: 'string' },
	cert: { type: 'string' },
	key: { type: 'string' },
	passphrase: { type: 'string' },
	'passphrase-env': { type: 'string' },
} as const;

/** Every credential flag of an HTTP/2 command: token auth, or a certificate. */
export const CREDENTIAL_FLAGS = {
	p8: { type: 'string' },
	'key-id': { type: 'string' },
	'team-id': { type: 'string' },
	topic: { type: 'string' },
	...CERTIFICATE_FLAGS,
} as const;

/** The variable read for the passphrase unless `--passphrase-env` names another. */
export const PASSPHRASE_VARIABLE = 'APNS_PASSPHRASE';

/** Certificate options for the manager: file contents, not paths, so read errors name the flag. */
export interface CertificateOptions {
	readonly pfx?: Buffer;
	readonly cert?: string;
	readonly key?: string;
	readonly passphrase?: string;
}

/** The flags' certificate, or undefined when none of them was given. */
export function certificateOptions(v: FlagValues<typeof CERTIFICATE_FLAGS>): CertificateOptions | undefined {
	if (v.passphrase !== undefined) {
		throw new UsageError(`--passphrase is not taken on the command line (ps shows it to other users; shells keep it in history): set ${PASSPHRASE_VARIABLE}, or name another variable with --passphrase-env NAME`);
	}
	if (v.p12 !== undefined && (v.cert !== undefined || v.key !== undefined)) throw new UsageError('give --p12 FILE or --cert FILE with --key FILE, not both');
	if (v.p12 === undefined && v.cert === undefined && v.key === undefined) {
		if (v['passphrase-env'] !== undefined) throw new UsageError('--passphrase-env goes with --p12 or --key');
		return undefined;
	}
	const passphrase = readPassphrase(v['passphrase-env']);
	const secret = passphrase === undefined ? {} : { passphrase };
	if (v.p12 !== undefined) return { pfx: readFlagFile('--p12', v.p12), ...secret };
	if (v.cert === undefined) throw new UsageError('--key needs --cert FILE (the certificate it belongs to)');
	if (v.key === undefined) throw new UsageError('--cert needs --key FILE (its private key)');
	return { cert: readPemFile('--cert', v.cert), key: readPemFile('--key', v.key), ...secret };
}

function readPassphrase(variable: string | undefined): string | undefined {
	if (variable === undefined) return process.env[PASSPHRASE_VARIABLE];
	const value = process.env[variable];
	if (value === undefined) throw new UsageError(`--passphrase-env: the environment variable ${variable} is not set`);
	return value;
}

/** Token auth (`--p8`) or a certificate; exactly one. */
export function managerCredentials(v: FlagValues<typeof CREDENTIAL_FLAGS>): Partial<ApnsManagerOptions> {
	const certificate = certificateOptions(v);
	if (v.p8 === undefined) {
		for (const flag of ['key-id', 'team-id'] as const) if (v[flag] !== undefined) throw new UsageError(`--${flag} goes with --p8 (token auth)`);
		if (certificate === undefined) throw new UsageError('no credentials: give --p8 FILE with --key-id, --team-id and --topic, or --p12 FILE, or --cert FILE with --key FILE');
		return certificate;
	}
	if (certificate !== undefined) throw new UsageError('give --p8 (token auth) or a certificate (--p12, --cert/--key), not both');
	const id = (flag: 'key-id' | 'team-id', what: string): string => {
		const value = v[flag];
		if (value === undefined) throw new UsageError(`--p8 needs --${flag} (${what})`);
		if (!/^[A-Z0-9]{10}$/.test(value)) throw new UsageError(`--${flag} must be ${what}: 10 capital letters and digits, got ${JSON.stringify(value)}`);
		return value;
	};
	const keyId = id('key-id', 'the Key ID of the .p8 key');
	const teamId = id('team-id', 'your Team ID');
	if (v.topic === undefined) throw new UsageError("--p8 needs --topic BUNDLE (the app's bundle ID: token auth has no certificate to take it from)");
	return { token: { key: readPemFile('--p8', v.p8), keyId, teamId } };
}
