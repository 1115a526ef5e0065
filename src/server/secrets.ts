/**
 * Credentials at rest. The daemon seals every secret it stores (a .p8 key, a PKCS#12 and its passphrase,
 * a certificate's private key) with AES-256-GCM under a key derived from `APNS_WORKER_SECRET` (scrypt,
 * with a salt kept in the database), and binds each sealed value to the app it belongs to (additional
 * authenticated data), so a value copied onto another app's row does not open. Without a secret, the
 * daemon stores no credential unless started with `--insecure-plaintext-secrets`.
 */
import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from 'node:crypto';
import { ServerError } from '../errors.js';

const SEALED = 'v1:';
const PLAIN = 'plain:';
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** What {@link SecretBox.check} seals: opening it proves the secret is the one the data was sealed with. */
const CHECK = 'apns-worker secret check';

/** Seals and opens secrets for the store. */
export class SecretBox {
	readonly #key: Buffer | undefined;
	readonly #plainAllowed: boolean;

	private constructor(key: Buffer | undefined, plainAllowed: boolean) {
		this.#key = key;
		this.#plainAllowed = plainAllowed;
	}

	/**
	 * A box keyed by `secret` (at least 16 characters) and the database's `salt`. `plainAllowed: false`
	 * refuses values stored unsealed (a shared Redis: whoever can write to it must not plant credentials).
	 */
	static fromSecret(secret: string, salt: Buffer, options: { plainAllowed?: boolean } = {}): SecretBox {
		if (secret.length < 16) throw new ServerError('APNS_SERVER_CONFIG', 'APNS_WORKER_SECRET must be at least 16 characters (32 random bytes, base64, is a good choice)');
		return new SecretBox(scryptSync(secret, salt, 32), options.plainAllowed ?? true);
	}

	/** A box that stores secrets as they are: only with `--insecure-plaintext-secrets`. */
	static insecure(): SecretBox {
		return new SecretBox(undefined, true);
	}

	/** Whether `sealed` was stored unsealed (by a daemon running with `--insecure-plaintext-secrets`). */
	static isPlain(sealed: string): boolean {
		return sealed.startsWith(PLAIN);
	}

	/** Whether this box encrypts. */
	get encrypts(): boolean {
		return this.#key !== undefined;
	}

	/** Seal `plain` for the app `appId`. */
	seal(plain: string, appId: string): string {
		if (this.#key === undefined) return PLAIN + Buffer.from(plain).toString('base64');
		const iv = randomBytes(IV_BYTES);
		const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
		cipher.setAAD(Buffer.from(appId));
		const body = Buffer.concat([cipher.update(plain, 'utf8'), cipher.final()]);
		return SEALED + Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64');
	}

	/**
	 * Open what {@link seal} made for `appId`.
	 * @throws {@link ServerError} `APNS_SERVER_SECRET` when it was sealed under another secret (or tampered
	 *   with), or sealed while this box does not encrypt (or the reverse).
	 */
	open(sealed: string, appId: string): string {
		// Stored while the daemon ran insecure: readable either way (and sealed on the app's next update).
		if (sealed.startsWith(PLAIN)) {
			if (!this.#plainAllowed) throw new ServerError('APNS_SERVER_SECRET', 'a stored credential is not sealed: refused (credentials in a shared Redis are always sealed)');
			return Buffer.from(sealed.slice(PLAIN.length), 'base64').toString('utf8');
		}
		if (!sealed.startsWith(SEALED)) throw new ServerError('APNS_SERVER_SECRET', 'a stored secret is in an unknown format');
		if (this.#key === undefined) throw new ServerError('APNS_SERVER_SECRET', 'stored credentials are encrypted: start the daemon with the APNS_WORKER_SECRET they were sealed with');
		const raw = Buffer.from(sealed.slice(SEALED.length), 'base64');
		const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
		decipher.setAAD(Buffer.from(appId));
		decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
		try {
			return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
		} catch {
			throw new ServerError('APNS_SERVER_SECRET', 'a stored secret does not open with this APNS_WORKER_SECRET (another secret, or the data was altered)');
		}
	}

	/** A value to keep beside the data (when this box encrypts): {@link verify} tells later whether a secret is the same one. */
	check(): string {
		return this.seal(CHECK, '');
	}

	/** Whether `check` (from {@link check}) opens with this box. */
	verify(check: string): boolean {
		try {
			return this.open(check, '') === CHECK;
		} catch {
			return false;
		}
	}
}
