/**
 * Credentials: PEM text, Buffers, file paths, PKCS#12 (modern and legacy), certificate facts, and the
 * refusals at construction. The legacy file is one Node's own TLS refuses; the manager still connects.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import tls from 'node:tls';
import { ApnsManager, CredentialsError } from '../src/index.js';
import { makeLegacyPkcs12, makePkcs12 } from '../src/testing.js';
import { account, certs, gateway, makeTokens, manager } from './support/helpers.js';

function refuses(options: object, pattern: RegExp): void {
	assert.throws(() => new ApnsManager(options as never), (e: unknown) => e instanceof CredentialsError && e.code === 'APNS_CREDENTIALS' && pattern.test(e.message));
}

test('certificate facts: topic from the subject UID, environments from the Apple OIDs, validity', () => {
	const c = certs();
	const both = new ApnsManager({ cert: c.client.cert, key: c.client.key });
	assert.equal(both.certificate!.topic, 'com.example.app');
	assert.deepEqual(both.certificate!.environments, { sandbox: true, production: true });
	assert.ok(both.certificate!.notAfter > new Date());
	const sandboxOnly = c.makeClient({ topic: 'com.example.other', environments: ['sandbox'] });
	const m = new ApnsManager({ ...sandboxOnly, environment: 'sandbox' });
	assert.deepEqual([m.certificate!.topic, m.certificate!.environments], ['com.example.other', { sandbox: true, production: false }]);
});

test('PEM as text, as Buffers and as file paths', (t) => {
	const c = certs();
	const dir = mkdtempSync(join(tmpdir(), 'apns-worker-test-'));
	t.after(() => rmSync(dir, { recursive: true, force: true }));
	writeFileSync(join(dir, 'cert.pem'), c.client.cert);
	writeFileSync(join(dir, 'key.pem'), c.client.key);
	for (const options of [
		{ cert: c.client.cert, key: c.client.key },
		{ cert: Buffer.from(c.client.cert), key: Buffer.from(c.client.key) },
		{ cert: join(dir, 'cert.pem'), key: join(dir, 'key.pem') },
	]) {
		assert.equal(new ApnsManager(options).certificate?.topic, 'com.example.app');
	}
	refuses({ cert: join(dir, 'missing.pem'), key: c.client.key }, /Cannot read cert from .*missing\.pem/);
	refuses({ cert: c.client.key, key: c.client.key }, /cert is not a PEM certificate/);
	refuses({}, /A client certificate is needed/);
});

test('refused at construction: expired, not yet valid, key mismatch, environment not covered', () => {
	const c = certs();
	const expired = c.makeClient({ notBefore: new Date(Date.now() - 10 * 86_400_000), notAfter: new Date(Date.now() - 86_400_000) });
	refuses(expired, /expired on/);
	const future = c.makeClient({ notBefore: new Date(Date.now() + 86_400_000), notAfter: new Date(Date.now() + 10 * 86_400_000) });
	refuses(future, /not valid before/);
	refuses({ cert: c.client.cert, key: c.makeClient().key }, /private key does not match/);
	const sandboxOnly = c.makeClient({ environments: ['sandbox'] });
	refuses({ ...sandboxOnly, environment: 'production' }, /does not cover the production environment \(it covers sandbox/);
	const none = c.makeClient({ environments: [] });
	refuses({ ...none, environment: 'sandbox' }, /covers neither/);
	assert.doesNotThrow(() => new ApnsManager({ ...none, checkCertificateEnvironment: false }));
});

test('PKCS#12: modern file, from bytes and from a path; a wrong passphrase is named', (t) => {
	const c = certs();
	const p12 = makePkcs12(c.client, 'secret', [c.ca.cert]);
	assert.equal(new ApnsManager({ pfx: p12, passphrase: 'secret' }).certificate?.topic, 'com.example.app');
	const dir = mkdtempSync(join(tmpdir(), 'apns-worker-test-'));
	t.after(() => rmSync(dir, { recursive: true, force: true }));
	writeFileSync(join(dir, 'push.p12'), p12);
	assert.equal(new ApnsManager({ pfx: join(dir, 'push.p12'), passphrase: 'secret' }).certificate?.topic, 'com.example.app');
	refuses({ pfx: p12, passphrase: 'wrong' }, /Cannot open the PKCS#12 file \(wrong passphrase\?\)/);
	refuses({ pfx: p12, cert: c.client.cert, passphrase: 'secret' }, /either pfx or cert and key/);
});

test('PKCS#12: a legacy RC2/3DES file that Node refuses is opened with node-forge and used over TLS', async (t) => {
	const c = certs();
	const legacy = makeLegacyPkcs12(c.client, 'keychain');
	assert.throws(() => tls.createSecureContext({ pfx: legacy, passphrase: 'keychain' }), /Unsupported PKCS12 PFX data/);
	const gw = await gateway(t);
	const m = manager(t, gw, { cert: undefined, key: undefined, pfx: legacy, passphrase: 'keychain' });
	const tokens = makeTokens(50, 40);
	m.sendAps(tokens, { alert: 'legacy' });
	await m.flushMessages();
	assert.deepEqual(account(gw, tokens), { lost: 0, duplicated: 0, deliveredRejected: 0, unexpected: 0 });
});

test('a client certificate from another CA is refused by the gateway: retried with backoff, never thrown', async (t) => {
	const gw = await gateway(t);
	const stranger = (await import('../src/testing.js')).makeTestCertificates().client;
	const m = manager(t, gw, { cert: stranger.cert, key: stranger.key, reconnect: { initialDelayMs: 50, maxDelayMs: 100 } });
	m.sendAps(makeTokens(3, 41), { alert: 'x' });
	const [error] = await new Promise<[Error]>((resolve) => m.once('connectError', (e) => resolve([e])));
	// TLS 1.3: our side of the handshake completes before the server checks our certificate, so the
	// refusal shows as a close right after connecting; either way it is a failed connect attempt.
	assert.match(error.message, /^(Cannot connect to|Connection to) 127\.0\.0\.1:\d+/);
	assert.equal(gw.acceptedCount, 0);
	assert.equal(m.pending, 3);
});
