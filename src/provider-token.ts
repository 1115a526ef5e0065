/**
 * Provider authentication tokens (JWT, ES256) for the HTTP/2 API. Apple's rules: sign with the .p8 key
 * (P-256), header `{alg: ES256, kid}`, claims `{iss: teamId, iat}`; make a new token at least once an
 * hour (older ones get 403 ExpiredProviderToken) and at most once per 20 minutes (more often gets 429
 * TooManyProviderTokenUpdates). One token is shared by every session.
 */
import { createPrivateKey, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { CredentialsError } from './errors.js';
import type { PemSource } from './credentials.js';

/** Token-based authentication: the .p8 key and its identifiers. */
export interface ProviderTokenOptions {
	/** The .p8 signing key: PEM text, a Buffer of it, or a file path. */
	readonly key: PemSource;
	/** The 10-character Key ID. */
	readonly keyId: string;
	/** The 10-character Team ID. */
	readonly teamId: string;
}

/** Refresh the token when it is this old. */
export const TOKEN_REFRESH_MS = 50 * 60_000;
/** Never make tokens closer together than this. */
export const TOKEN_MIN_INTERVAL_MS = 20 * 60_000;

const b64url = (value: Buffer | string): string => Buffer.from(value).toString('base64url');

/** Makes and caches the provider token. */
export class ProviderToken {
	readonly keyId: string;
	readonly teamId: string;
	readonly #key: KeyObject;
	readonly #now: () => number;
	#token: string | undefined;
	#mintedAt = Number.NEGATIVE_INFINITY;
	#minted = 0;

	/** @throws {@link CredentialsError} when the key cannot be read or is not a P-256 key, or an ID is malformed. */
	constructor(options: ProviderTokenOptions, now: () => number = Date.now) {
		if (typeof options.keyId !== 'string' || !/^[A-Z0-9]{10}$/.test(options.keyId)) {
			throw new CredentialsError(`token.keyId must be the 10-character Key ID, got ${JSON.stringify(options.keyId)}`);
		}
		if (typeof options.teamId !== 'string' || !/^[A-Z0-9]{10}$/.test(options.teamId)) {
			throw new CredentialsError(`token.teamId must be the 10-character Team ID, got ${JSON.stringify(options.teamId)}`);
		}
		let pem: string | Buffer = options.key;
		if (typeof pem === 'string' && !pem.includes('-----BEGIN')) {
			try {
				pem = readFileSync(pem);
			} catch (error) {
				throw new CredentialsError(`Cannot read token.key from ${options.key as string}: ${(error as Error).message}`, { cause: error });
			}
		}
		try {
			this.#key = createPrivateKey(pem);
		} catch (error) {
			throw new CredentialsError(`Cannot read token.key (a .p8 key is expected): ${(error as Error).message}`, { cause: error });
		}
		if (this.#key.asymmetricKeyType !== 'ec' || this.#key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
			throw new CredentialsError('token.key must be an EC P-256 key (an APNs .p8 key)');
		}
		this.keyId = options.keyId;
		this.teamId = options.teamId;
		this.#now = now;
	}

	/** How many tokens have been made. */
	get minted(): number {
		return this.#minted;
	}

	/** The current token, made anew when it is {@link TOKEN_REFRESH_MS} old. */
	current(): string {
		if (this.#token === undefined || this.#now() - this.#mintedAt >= TOKEN_REFRESH_MS) this.#mint();
		return this.#token!;
	}

	/**
	 * APNs said the token expired (403 ExpiredProviderToken): make a new one unless one was made within
	 * {@link TOKEN_MIN_INTERVAL_MS}. Returns whether a new token was made.
	 */
	expired(): boolean {
		if (this.#now() - this.#mintedAt < TOKEN_MIN_INTERVAL_MS) return false;
		this.#mint();
		return true;
	}

	#mint(): void {
		const now = this.#now();
		const head = `${b64url(JSON.stringify({ alg: 'ES256', kid: this.keyId }))}.${b64url(JSON.stringify({ iss: this.teamId, iat: Math.floor(now / 1000) }))}`;
		const signature = sign('sha256', Buffer.from(head), { key: this.#key, dsaEncoding: 'ieee-p1363' });
		this.#token = `${head}.${b64url(signature)}`;
		this.#mintedAt = now;
		this.#minted++;
	}
}
