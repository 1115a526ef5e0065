/**
 * Client credentials for certificate-based connections: PEM text or Buffers, file paths, or PKCS#12.
 * PKCS#12 is opened with node-forge, which also reads the RC2/3DES-encrypted files older Keychain exports
 * produce and OpenSSL 3 refuses ("Unsupported PKCS12 PFX data"). Nothing is ever written to disk: the
 * certificate and key are handed to TLS as PEM text in memory.
 */
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import tls from 'node:tls';
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type Forge from 'node-forge';
import { CredentialsError } from './errors.js';
import { openTunnel, type ResolvedProxy } from './proxy.js';

// node-forge costs ~8 MB of memory and a few ms to load; token-auth HTTP/2 users never need it.
let forgeModule: typeof Forge | undefined;
function forgeLib(): typeof Forge {
	return (forgeModule ??= createRequire(import.meta.url)('node-forge') as typeof Forge);
}

/** PEM text, its bytes, or a path to a file holding it. */
export type PemSource = string | Buffer;

/** The APNs environments. */
export type Environment = 'production' | 'sandbox';

/** Apple's certificate extension that marks a certificate valid for the sandbox (development) gateway. */
export const OID_APPLE_SANDBOX = '1.2.840.113635.100.6.3.1';
/** Apple's certificate extension that marks a certificate valid for the production gateway. */
export const OID_APPLE_PRODUCTION = '1.2.840.113635.100.6.3.2';
/** The subject attribute (userId / UID) that carries the app's bundle ID, the default topic. */
export const OID_USER_ID = '0.9.2342.19200300.100.1.1';

/** Credential options shared by every certificate-based connection. */
export interface CertificateCredentials {
	/** Client certificate: PEM text, a Buffer of it, or a file path. Used with `key`. */
	readonly cert?: PemSource | undefined;
	/** Private key of `cert`: PEM text, a Buffer of it, or a file path. */
	readonly key?: PemSource | undefined;
	/** PKCS#12 (.p12/.pfx): its bytes or a file path. Instead of `cert` and `key`. */
	readonly pfx?: PemSource | undefined;
	/** Passphrase of `pfx`, or of an encrypted `key`. */
	readonly passphrase?: string | undefined;
	/** Extra CA certificate(s) to trust for the gateway and feedback TLS (a local or corporate gateway). */
	readonly ca?: PemSource | readonly PemSource[] | undefined;
}

/** What the client certificate says about itself. */
export interface CertificateInfo {
	/** The subject UID (the app's bundle ID), the default topic; undefined if the certificate has none. */
	readonly topic: string | undefined;
	/** Subject common name. */
	readonly commonName: string | undefined;
	/** Environments the certificate's Apple extensions cover. */
	readonly environments: { readonly sandbox: boolean; readonly production: boolean };
	readonly notBefore: Date;
	readonly notAfter: Date;
}

/** Ready-to-use TLS material plus what the certificate says. */
export interface LoadedCredentials {
	/** The client certificate (and any chain) as PEM. */
	readonly cert: string;
	/** The private key as unencrypted PKCS#8 PEM (kept in memory only). */
	readonly key: string;
	/** Extra trusted CAs as PEM, when given. */
	readonly ca: string[] | undefined;
	readonly info: CertificateInfo;
}

/** A TLS endpoint and the client credentials to show it. */
export interface TlsTarget {
	readonly host: string;
	readonly port: number;
	/** Client certificate and key; absent with HTTP/2 token auth. */
	readonly cert?: string | undefined;
	readonly key?: string | undefined;
	readonly ca: string[] | undefined;
	/** Reach `host:port` through this HTTP proxy (a CONNECT tunnel); TLS still checks `host`'s certificate. */
	readonly proxy?: ResolvedProxy | undefined;
}

/** One TLS context per target: parsing the key and certificates again on every reconnect is wasted work. */
const contexts = new WeakMap<TlsTarget, tls.SecureContext>();

/**
 * Open a TLS connection to `target` with its client certificate (SNI only for host names, not IPs),
 * through its proxy if it has one: the socket is the same either way, and a proxy that fails makes it emit
 * `'error'` and `'close'` as a failed connect does.
 */
export function connectTls(target: TlsTarget, extra: tls.ConnectionOptions = {}): tls.TLSSocket {
	let secureContext = contexts.get(target);
	if (secureContext === undefined) {
		secureContext = tls.createSecureContext({
			...(target.cert === undefined ? {} : { cert: target.cert }),
			...(target.key === undefined ? {} : { key: target.key }),
			...(target.ca === undefined ? {} : { ca: target.ca }),
		});
		contexts.set(target, secureContext);
	}
	return tls.connect({
		host: target.host,
		port: target.port,
		// TLS over the tunnel starts once the proxy has answered; `host` is still what the certificate must name.
		...(target.proxy === undefined ? {} : { socket: openTunnel(target.proxy, target.host, target.port) }),
		secureContext,
		...(isIP(target.host) === 0 ? { servername: target.host } : {}),
		...extra,
	});
}

/**
 * Load and check client credentials for `environment`.
 * @throws {@link CredentialsError} when they cannot be read, the key does not match the certificate, the
 * certificate is expired or not yet valid, or (with `checkEnvironment`) it does not cover `environment`.
 */
export function loadCredentials(
	options: CertificateCredentials,
	environment: Environment,
	checks: { checkEnvironment: boolean; now?: Date } = { checkEnvironment: true },
): LoadedCredentials {
	let certPem: string;
	let key: KeyObject;
	if (options.pfx !== undefined) {
		if (options.cert !== undefined || options.key !== undefined) throw new CredentialsError('Give either pfx or cert and key, not both');
		({ certPem, key } = openPkcs12(readBytes(options.pfx, 'pfx'), options.passphrase ?? ''));
	} else {
		if (options.cert === undefined || options.key === undefined) {
			throw new CredentialsError('A client certificate is needed: give cert and key (PEM text, Buffer or file path), or pfx');
		}
		certPem = readPem(options.cert, 'cert', 'CERTIFICATE');
		const keyPem = readPem(options.key, 'key', 'PRIVATE KEY');
		try {
			key = createPrivateKey({ key: keyPem, ...(options.passphrase === undefined ? {} : { passphrase: options.passphrase }) });
		} catch (error) {
			throw new CredentialsError(`Cannot read the private key: ${(error as Error).message}`, { cause: error });
		}
	}
	const info = certificateInfo(certPem);
	let x509: X509Certificate;
	try {
		x509 = new X509Certificate(certPem);
	} catch (error) {
		throw new CredentialsError(`Cannot read the certificate: ${(error as Error).message}`, { cause: error });
	}
	if (!x509.checkPrivateKey(key)) throw new CredentialsError('The private key does not match the certificate');
	const now = checks.now ?? new Date();
	if (info.notAfter.getTime() < now.getTime()) {
		throw new CredentialsError(`The certificate expired on ${info.notAfter.toISOString()}`);
	}
	if (info.notBefore.getTime() > now.getTime()) {
		throw new CredentialsError(`The certificate is not valid before ${info.notBefore.toISOString()}`);
	}
	if (checks.checkEnvironment && !info.environments[environment]) {
		const covered = (['sandbox', 'production'] as const).filter((e) => info.environments[e]);
		throw new CredentialsError(
			`The certificate does not cover the ${environment} environment (it covers ${covered.length > 0 ? covered.join(' and ') : 'neither'}; ` +
				`Apple marks them with extensions ${OID_APPLE_SANDBOX} and ${OID_APPLE_PRODUCTION})`,
		);
	}
	const ca = options.ca === undefined ? undefined : loadCa(options.ca);
	return { cert: certPem, key: key.export({ type: 'pkcs8', format: 'pem' }).toString(), ca, info };
}

/** Read extra trusted CA certificates (PEM text, Buffers or paths). */
export function loadCa(ca: PemSource | readonly PemSource[]): string[] {
	return (Array.isArray(ca) ? ca : [ca]).map((c: PemSource, i: number) => readPem(c, `ca[${i}]`, 'CERTIFICATE'));
}

/** Read the facts APNs cares about from a PEM certificate, with node-forge. */
export function certificateInfo(certPem: string): CertificateInfo {
	let cert: Forge.pki.Certificate;
	try {
		cert = forgeLib().pki.certificateFromPem(certPem);
	} catch (error) {
		throw new CredentialsError(`Cannot read the certificate: ${(error as Error).message}`, { cause: error });
	}
	const has = (oid: string): boolean => cert.extensions.some((e: { id?: string }) => e.id === oid);
	const attr = (oid: string): string | undefined => {
		const value: unknown = cert.subject.getField({ type: oid })?.value;
		return typeof value === 'string' ? value : undefined;
	};
	return {
		topic: attr(OID_USER_ID),
		commonName: attr('2.5.4.3'),
		environments: { sandbox: has(OID_APPLE_SANDBOX), production: has(OID_APPLE_PRODUCTION) },
		notBefore: cert.validity.notBefore,
		notAfter: cert.validity.notAfter,
	};
}

function isPath(source: string): boolean {
	return !source.includes('-----BEGIN');
}

function readBytes(source: PemSource, name: string): Buffer {
	if (Buffer.isBuffer(source)) return source;
	if (typeof source !== 'string') throw new CredentialsError(`${name} must be a Buffer or a file path`);
	try {
		return readFileSync(source);
	} catch (error) {
		throw new CredentialsError(`Cannot read ${name} from ${source}: ${(error as Error).message}`, { cause: error });
	}
}

function readPem(source: PemSource, name: string, label: string): string {
	if (typeof source !== 'string' && !Buffer.isBuffer(source)) throw new CredentialsError(`${name} must be PEM text, a Buffer or a file path`);
	const text = typeof source === 'string' && isPath(source) ? readBytes(source, name).toString('utf8') : source.toString();
	if (!text.includes('-----BEGIN') || !text.includes(label)) throw new CredentialsError(`${name} is not a PEM ${label.toLowerCase()}`);
	return text;
}

/** Open a PKCS#12 file: the leaf certificate (with any chain, as PEM) and its private key. */
function openPkcs12(bytes: Buffer, passphrase: string): { certPem: string; key: KeyObject } {
	const forge = forgeLib();
	let p12: Forge.pkcs12.Pkcs12Pfx;
	try {
		p12 = forge.pkcs12.pkcs12FromAsn1(forge.asn1.fromDer(bytes.toString('binary')), passphrase);
	} catch (error) {
		const reason = (error as Error).message;
		const hint = /password|mac/i.test(reason) ? ' (wrong passphrase?)' : '';
		throw new CredentialsError(`Cannot open the PKCS#12 file${hint}: ${reason}`, { cause: error });
	}
	const bags = (type: string | undefined): Forge.pkcs12.Bag[] => (type === undefined ? [] : (p12.getBags({ bagType: type })[type] ?? []));
	const { oids } = forge.pki;
	const keyBags = [...bags(oids['pkcs8ShroudedKeyBag']), ...bags(oids['keyBag'])];
	const certs = bags(oids['certBag']).flatMap((b) => (b.cert ? [b.cert] : []));
	const forgeKey = keyBags.find((b) => b.key)?.key;
	if (forgeKey === undefined) throw new CredentialsError('The PKCS#12 file holds no private key');
	if (certs.length === 0) throw new CredentialsError('The PKCS#12 file holds no certificate');
	const key = createPrivateKey(forge.pki.privateKeyToPem(forgeKey));
	const pems = certs.map((c) => forge.pki.certificateToPem(c));
	// The leaf is the certificate that matches the key; any others form its chain.
	const leafAt = pems.findIndex((pem) => new X509Certificate(pem).checkPrivateKey(key));
	if (leafAt < 0) throw new CredentialsError('The private key in the PKCS#12 file matches none of its certificates');
	const leaf = pems[leafAt]!;
	return { certPem: [leaf, ...pems.filter((_, i) => i !== leafAt)].join(''), key };
}
