/**
 * Test certificates made at run time with node-forge (no private key is ever committed): a CA, a server
 * certificate for 127.0.0.1/localhost, and Apple-style client certificates carrying the subject UID and
 * the Apple environment extensions, plus PKCS#12 files of them, modern and legacy (RC2-40 + 3DES, as
 * older Keychain exports are, which OpenSSL 3 refuses).
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import forge from 'node-forge';
import { OID_APPLE_PRODUCTION, OID_APPLE_SANDBOX } from '../credentials.js';

/** A certificate and its key, PEM. */
export interface PemPair {
	readonly cert: string;
	readonly key: string;
}

/** Options of {@link makeClientCertificate}. */
export interface ClientCertificateOptions {
	/** Bundle ID, written as the subject UID. @default 'com.example.app' */
	readonly topic?: string;
	/** Which Apple environment extensions to include. @default ['sandbox', 'production'] */
	readonly environments?: ReadonlyArray<'sandbox' | 'production'>;
	readonly notBefore?: Date;
	readonly notAfter?: Date;
}

/** Everything a TLS test needs. */
export interface TestCertificates {
	readonly ca: PemPair;
	readonly server: PemPair;
	/** Apple-style client certificate for both environments, topic `com.example.app`. */
	readonly client: PemPair;
	/** Make another client certificate signed by the same CA. */
	makeClient(options?: ClientCertificateOptions): PemPair;
}

const DAY = 86_400_000;

function rsaKeyPair(): { publicKey: forge.pki.rsa.PublicKey; privateKey: forge.pki.rsa.PrivateKey; keyPem: string } {
	const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
	const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
	const forgeKey = forge.pki.privateKeyFromPem(keyPem) as unknown as forge.pki.rsa.PrivateKey;
	return { privateKey: forgeKey, publicKey: forge.pki.setRsaPublicKey(forgeKey.n, forgeKey.e), keyPem };
}

function serial(): string {
	// Positive, non-zero: the top bit clear.
	const bytes = randomBytes(12);
	bytes[0] = (bytes[0]! & 0x7f) | 0x01;
	return bytes.toString('hex');
}

function sign(
	subject: forge.pki.CertificateField[],
	publicKey: forge.pki.PublicKey,
	issuer: { subject: forge.pki.CertificateField[]; key: forge.pki.rsa.PrivateKey },
	extensions: object[],
	notBefore: Date,
	notAfter: Date,
): string {
	const cert = forge.pki.createCertificate();
	cert.publicKey = publicKey;
	cert.serialNumber = serial();
	cert.validity.notBefore = notBefore;
	cert.validity.notAfter = notAfter;
	cert.setSubject(subject);
	cert.setIssuer(issuer.subject);
	cert.setExtensions(extensions);
	cert.sign(issuer.key, forge.md.sha256.create());
	return forge.pki.certificateToPem(cert);
}

/** Make a CA, a 127.0.0.1 server certificate and an Apple-style client certificate. */
export function makeTestCertificates(): TestCertificates {
	const now = Date.now();
	const caKeys = rsaKeyPair();
	const caSubject = [{ name: 'commonName', value: 'apns-worker test CA' }];
	const caCert = sign(
		caSubject,
		caKeys.publicKey,
		{ subject: caSubject, key: caKeys.privateKey },
		[{ name: 'basicConstraints', cA: true, critical: true }, { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true }],
		new Date(now - DAY),
		new Date(now + 3650 * DAY),
	);
	const issuer = { subject: caSubject, key: caKeys.privateKey };
	const serverKeys = rsaKeyPair();
	const serverCert = sign(
		[{ name: 'commonName', value: 'localhost' }],
		serverKeys.publicKey,
		issuer,
		[
			{ name: 'basicConstraints', cA: false },
			{ name: 'extKeyUsage', serverAuth: true },
			{ name: 'subjectAltName', altNames: [{ type: 2, value: 'localhost' }, { type: 7, ip: '127.0.0.1' }] },
		],
		new Date(now - DAY),
		new Date(now + 3650 * DAY),
	);
	const makeClient = (options: ClientCertificateOptions = {}): PemPair => {
		const keys = rsaKeyPair();
		const topic = options.topic ?? 'com.example.app';
		const environments = options.environments ?? ['sandbox', 'production'];
		const extensions: object[] = [{ name: 'basicConstraints', cA: false }, { name: 'extKeyUsage', clientAuth: true }];
		// Apple marks the environments with extensions whose value is an ASN.1 NULL.
		const marker = forge.asn1.toDer(forge.asn1.create(forge.asn1.Class.UNIVERSAL, forge.asn1.Type.NULL, false, '')).getBytes();
		if (environments.includes('sandbox')) extensions.push({ id: OID_APPLE_SANDBOX, value: marker });
		if (environments.includes('production')) extensions.push({ id: OID_APPLE_PRODUCTION, value: marker });
		const cert = sign(
			[
				{ type: '0.9.2342.19200300.100.1.1', value: topic, valueTagClass: forge.asn1.Type.UTF8 as unknown as forge.asn1.Class },
				{ name: 'commonName', value: `Apple Push Services: ${topic}` },
				{ name: 'countryName', value: 'US' },
			],
			keys.publicKey,
			issuer,
			extensions,
			options.notBefore ?? new Date(now - DAY),
			options.notAfter ?? new Date(now + 365 * DAY),
		);
		return { cert, key: keys.keyPem };
	};
	return { ca: { cert: caCert, key: caKeys.keyPem }, server: { cert: serverCert, key: serverKeys.keyPem }, client: makeClient(), makeClient };
}

/** A PKCS#12 file of `pair` (with the CA certificate as chain), AES-256 encrypted, as current tools write it. */
export function makePkcs12(pair: PemPair, passphrase: string, chain: readonly string[] = []): Buffer {
	const asn1 = forge.pkcs12.toPkcs12Asn1(
		forge.pki.privateKeyFromPem(pair.key) as unknown as forge.pki.rsa.PrivateKey,
		[pair.cert, ...chain].map((c) => forge.pki.certificateFromPem(c)),
		passphrase,
		{ algorithm: 'aes256' },
	);
	return Buffer.from(forge.asn1.toDer(asn1).getBytes(), 'binary');
}

/**
 * A legacy PKCS#12 file as older macOS Keychain exports are: certificates encrypted with
 * pbeWithSHAAnd40BitRC2-CBC, the key with pbeWithSHAAnd3-KeyTripleDES-CBC, SHA-1 MAC. Node's OpenSSL 3
 * refuses such files ("Unsupported PKCS12 PFX data").
 */
export function makeLegacyPkcs12(pair: PemPair, passphrase: string): Buffer {
	const { asn1, pki, util } = forge;
	// @types/node-forge leaves out the PKCS#12 key derivation that forge has.
	const pbe = (pki as unknown as { pbe: { generatePkcs12Key(password: string, salt: forge.util.ByteStringBuffer, id: number, iterations: number, bytes: number): forge.util.ByteStringBuffer } }).pbe;
	const { Class, Type } = asn1;
	// Start from forge's file (plain certificate bag, 3DES key bag, no MAC), then encrypt the certificate
	// bag with RC2-40 and add the MAC.
	const base = forge.pkcs12.toPkcs12Asn1(pki.privateKeyFromPem(pair.key) as unknown as forge.pki.rsa.PrivateKey, [pki.certificateFromPem(pair.cert)], passphrase, {
		algorithm: '3des',
		useMac: false,
	});
	const authSafeDer = (((base.value as forge.asn1.Asn1[])[1]!.value as forge.asn1.Asn1[])[1]!.value as forge.asn1.Asn1[])[0]!.value as string;
	const contentInfos = asn1.fromDer(authSafeDer).value as forge.asn1.Asn1[];
	const [certInfo, keyInfo] = contentInfos;
	const certSafeContents = ((certInfo!.value as forge.asn1.Asn1[])[1]!.value as forge.asn1.Asn1[])[0]!.value as string;

	const salt = forge.random.getBytesSync(8);
	const iterations = 2048;
	const saltBuffer = (): forge.util.ByteStringBuffer => util.createBuffer(salt);
	const rc2Key = pbe.generatePkcs12Key(passphrase, saltBuffer(), 1, iterations, 5);
	const rc2Iv = pbe.generatePkcs12Key(passphrase, saltBuffer(), 2, iterations, 8);
	const cipher = forge.rc2.createEncryptionCipher(rc2Key, 40);
	cipher.start(rc2Iv);
	cipher.update(util.createBuffer(certSafeContents));
	cipher.finish();
	const int = (n: number): forge.asn1.Asn1 => asn1.create(Class.UNIVERSAL, Type.INTEGER, false, asn1.integerToDer(n).getBytes());
	const oid = (id: string): forge.asn1.Asn1 => asn1.create(Class.UNIVERSAL, Type.OID, false, asn1.oidToDer(id).getBytes());
	const seq = (items: forge.asn1.Asn1[]): forge.asn1.Asn1 => asn1.create(Class.UNIVERSAL, Type.SEQUENCE, true, items);
	const octets = (bytes: string): forge.asn1.Asn1 => asn1.create(Class.UNIVERSAL, Type.OCTETSTRING, false, bytes);
	const encryptedCertInfo = seq([
		oid(pki.oids['encryptedData']!),
		asn1.create(Class.CONTEXT_SPECIFIC, 0, true, [
			seq([
				int(0),
				seq([
					oid(pki.oids['data']!),
					seq([oid(pki.oids['pbewithSHAAnd40BitRC2-CBC']!), seq([octets(salt), int(iterations)])]),
					asn1.create(Class.CONTEXT_SPECIFIC, 0, false, cipher.output.getBytes()),
				]),
			]),
		]),
	]);
	const newAuthSafe = asn1.toDer(seq([encryptedCertInfo, keyInfo!])).getBytes();
	const macSalt = forge.random.getBytesSync(8);
	const macKey = pbe.generatePkcs12Key(passphrase, util.createBuffer(macSalt), 3, iterations, 20);
	const hmac = forge.hmac.create();
	hmac.start('sha1', macKey);
	hmac.update(newAuthSafe);
	const pfx = seq([
		int(3),
		seq([oid(pki.oids['data']!), asn1.create(Class.CONTEXT_SPECIFIC, 0, true, [octets(newAuthSafe)])]),
		seq([seq([seq([oid(pki.oids['sha1']!), asn1.create(Class.UNIVERSAL, Type.NULL, false, '')]), octets(hmac.digest().getBytes())]), octets(macSalt), int(iterations)]),
	]);
	return Buffer.from(asn1.toDer(pfx).getBytes(), 'binary');
}
