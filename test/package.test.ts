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
	assert.equal(report['feedbackRead'], 5);
});
