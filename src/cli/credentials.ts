/**
 * The certificate flags `send` and `feedback` share: `--p12 FILE`, or `--cert FILE --key FILE`, with the
 * passphrase taken from the environment, never from the command line (other users can read a command
 * line in `ps`, and shells keep it in their history).
 */
import { readFlagFile, readPemFile, UsageError, type FlagValues } from './args.js';

export const CERTIFICATE_FLAGS = {
	p12: { type: 'string' },
	cert: { type: 'string' },
	key: { type: 'string' },
	passphrase: { type: 'string' },
	'passphrase-env': { type: 'string' },
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
