/**
 * The published surface: the `exports` map resolves (by the package's own name, as a user imports it)
 * to the built files, and the CLI's main job runs.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

test("'apns-worker' and 'apns-worker/testing' resolve through the exports map", async () => {
	const main = await import('apns-worker');
	const testing = await import('apns-worker/testing');
	for (const name of ['ApnsManager', 'Message', 'DeliveryError', 'Feedback', 'ApnsError', 'DEFAULT_OPTIONS']) assert.ok(name in main, name);
	for (const name of ['startMockGateway', 'startMockFeedback', 'makeTestCertificates', 'makePkcs12', 'makeLegacyPkcs12']) assert.ok(name in testing, name);
	assert.ok(!('startMockGateway' in main), 'the mock is not loaded by the main entry');
});

test('the CLI demo delivers every notification and reports the expected failures', async () => {
	const cli = fileURLToPath(new URL('../../dist/cli.js', import.meta.url));
	const { stdout } = await promisify(execFile)(process.execPath, [cli, 'demo', '--count', '3000', '--json']);
	const report = JSON.parse(stdout) as Record<string, number>;
	assert.equal(report['lost'], 0);
	assert.equal(report['failedReported'], 6);
	assert.equal(report['expectedFailures'], 6);
	assert.equal(report['feedbackRead'], 3, 'HTTP/2 (the default): the 410 answers, 1 token in 1,000');
});

test('node-forge (~8 MB) is not loaded for token auth', async () => {
	// In a fresh process: importing the package and building a token-auth HTTP/2 manager must not load it.
	// (Certificate and PKCS#12 reading load it on first use: test/credentials.test.ts goes through that path.)
	const script = `
		import { createRequire } from 'node:module';
		import { generateKeyPairSync } from 'node:crypto';
		import { ApnsManager } from 'apns-worker';
		const forgeLoaded = () => Object.keys(createRequire(import.meta.url).cache).some((k) => k.includes('node-forge'));
		const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
		const m = new ApnsManager({ protocol: 'http2', token: { key, keyId: 'KEY1234567', teamId: 'TEAM123456' }, topic: 'com.example.app', gateway: { host: '127.0.0.1', port: 9 } });
		const loaded = forgeLoaded();
		m.destroy();
		console.log(JSON.stringify({ loaded }));
	`;
	const cwd = fileURLToPath(new URL('../..', import.meta.url));
	const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd });
	assert.deepEqual(JSON.parse(stdout), { loaded: false });
});

test("the daemon's packages are optional peer dependencies, never loaded by the library", async () => {
	const { readFileSync } = await import('node:fs');
	const pkg = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as Record<string, Record<string, unknown>>;
	const daemon = ['better-sqlite3', 'fastify', 'pino', 'prom-client', 'bullmq', 'ioredis'];
	for (const name of daemon) {
		assert.ok(!(name in (pkg['dependencies'] ?? {})), `${name} is not a dependency: library users never install it`);
		assert.ok(name in (pkg['peerDependencies'] ?? {}), `${name} is a peer dependency`);
		assert.deepEqual(pkg['peerDependenciesMeta']?.[name], { optional: true });
	}
	const script = `
		import { createRequire } from 'node:module';
		await import('apns-worker');
		const loaded = Object.keys(createRequire(import.meta.url).cache).filter((k) => ${JSON.stringify(daemon)}.some((d) => k.includes('/node_modules/' + d + '/')));
		console.log(JSON.stringify(loaded));
	`;
	const cwd = fileURLToPath(new URL('../..', import.meta.url));
	const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script], { cwd });
	assert.deepEqual(JSON.parse(stdout), []);
});
