/**
 * The `apns-worker` command, run as a child process from build/ against mocks this process starts on
 * 127.0.0.1: `send` over HTTP/2 (token auth, a tokens file, stdin, a payload file), every usage error,
 * `--help`, `--version`, `demo` on both protocols and `feedback`. Every run is checked for secrets in
 * its output. The progress line and the token reader are tested in-process.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test, type TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makePkcs12, startMockApnsHttp2, startMockProxy, type MockApnsHttp2Faults } from '../src/testing.js';
import { duration, parseProxy, UsageError } from '../src/cli/args.js';
import * as demoCommand from '../src/cli/demo.js';
import * as feedbackCommand from '../src/cli/feedback.js';
import { ProgressLine, REDRAW_MS } from '../src/cli/progress.js';
import * as sendCommand from '../src/cli/send.js';
import { tokensFromFlags, tokensFromStream } from '../src/cli/tokens.js';
import { certs, feedbackService, gateway, makeTokens } from './support/helpers.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const TOPIC = 'com.example.app';
const KEY_ID = 'ABC123DEFG';
const TEAM_ID = 'TEAM123456';
const PASSPHRASE = 'correct horse battery staple';

const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const p8Pem = p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
const dir = mkdtempSync(join(tmpdir(), 'apns-cli-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Buffer): string {
	const path = join(dir, name);
	writeFileSync(path, content);
	return path;
}

const files = {
	p8: file('AuthKey.p8', p8Pem),
	ca: file('ca.pem', certs().ca.cert),
	cert: file('client.pem', certs().client.cert),
	key: file('client-key.pem', certs().client.key),
	p12: file('client.p12', makePkcs12(certs().client, PASSPHRASE)),
};

/** Text that must never appear in any output: every base64 line of the .p8 key, and the passphrase. */
const SECRETS = [...p8Pem.split('\n').filter((line) => line.length >= 16 && !line.startsWith('-----')), PASSPHRASE, 's3cret-proxy-pw'];

interface Run {
	code: number | null;
	stdout: string;
	stderr: string;
}

/** Run the built CLI; stdin gets `input` (and is closed: not a terminal). Asserts no secret was printed. */
async function cli(args: readonly string[], options: { input?: string; env?: Record<string, string> } = {}): Promise<Run> {
	const { APNS_PASSPHRASE: _ignored, ...env } = process.env;
	const child = spawn(process.execPath, [CLI, ...args], { env: { ...env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
	let stdout = '';
	let stderr = '';
	child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
	child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
	child.stdin.end(options.input ?? '');
	const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
	for (const secret of SECRETS) assert.ok(!stdout.includes(secret) && !stderr.includes(secret), `a secret appeared in the output of ${args.join(' ')}`);
	return { code, stdout, stderr };
}

async function mock(t: TestContext, faults: MockApnsHttp2Faults = {}) {
	const m = await startMockApnsHttp2({ server: certs().server, keys: [{ keyId: KEY_ID, teamId: TEAM_ID, publicKey: p8.publicKey }], topics: [TOPIC], faults });
	t.after(() => m.close());
	return m;
}

/** Token-auth flags for `send` against `server`. */
const p8Flags = (server: { port: number }): string[] => ['--p8', files.p8, '--key-id', KEY_ID, '--team-id', TEAM_ID, '--topic', TOPIC, '--gateway', `127.0.0.1:${server.port}`, '--ca', files.ca];

const byToken = (a: { token: string }, b: { token: string }): number => a.token.localeCompare(b.token);

test('send --threads 2 --min-threads 2: the connections run in worker threads, both taking work; the same report, every token once', async (t) => {
	const tokens = makeTokens(500, 0x34);
	const server = await mock(t, { badTokens: [tokens[7]!] });
	const run = await cli(['send', ...p8Flags(server), ...tokens.flatMap((tk) => ['--token', tk]), '--alert', 'Hi', '--threads', '2', '--min-threads', '2', '--json']);
	assert.equal(run.code, 1, run.stderr);
	assert.deepEqual(
		{ ...JSON.parse(run.stdout), seconds: 0 },
		{ protocol: 'http2', gateway: `127.0.0.1:${server.port}`, sent: 500, delivered: 499, failed: [{ token: tokens[7], status: 400, reason: 'BadDeviceToken' }], notSent: 0, resent: 0, inDoubt: 0, seconds: 0 },
	);
	assert.equal(tokens.filter((tk) => server.counts.get(tk) === (tk === tokens[7] ? undefined : 1)).length, 500);
});

test('send over HTTP/2 with --p8 and a --tokens-file of 1,000: the rejected ones listed exactly, the rest delivered once, exit 1', async (t) => {
	const tokens = makeTokens(1000, 0x31);
	const gone = [tokens[3]!, tokens[250]!, tokens[500]!, tokens[750]!, tokens[999]!];
	const bad = [tokens[0]!, tokens[1]!, tokens[400]!, tokens[401]!, tokens[998]!];
	const retried = [tokens[10]!, tokens[20]!, tokens[30]!];
	const server = await mock(t, { unregistered: gone, badTokens: bad, transient: { tokens: retried, status: 429, times: 1 } });
	const tokensFile = file('tokens-1000.txt', `${tokens.join('\n')}\n`);
	const run = await cli(['send', ...p8Flags(server), '--tokens-file', tokensFile, '--alert', 'Hello', '--json']);
	assert.equal(run.code, 1);
	assert.equal(run.stderr, '');
	const report = JSON.parse(run.stdout) as { seconds: number; failed: Array<{ token: string }> };
	assert.equal(typeof report.seconds, 'number');
	const expectedFailed = [...gone.map((token) => ({ token, status: 410, reason: 'Unregistered' })), ...bad.map((token) => ({ token, status: 400, reason: 'BadDeviceToken' }))].sort(byToken);
	assert.deepEqual(
		{ ...report, seconds: 0, failed: [...report.failed].sort(byToken) },
		{ protocol: 'http2', gateway: `127.0.0.1:${server.port}`, sent: 1000, delivered: 990, failed: expectedFailed, notSent: 0, resent: 3, inDoubt: 0, seconds: 0 },
	);
	// At the mock: every other token exactly once, the rejected ones never.
	assert.equal(server.acceptedCount, 990);
	const rejected = new Set([...gone, ...bad]);
	assert.equal(tokens.filter((tk) => server.counts.get(tk) === (rejected.has(tk) ? undefined : 1)).length, 1000);
	assert.deepEqual(JSON.parse(server.received[0]!.payload), { aps: { alert: 'Hello' } });
	assert.equal(server.received[0]!.topic, TOPIC);
});

test('send: one token is "1 notification", not "1 notifications"', async (t) => {
	const server = await mock(t);
	const run = await cli(['send', ...p8Flags(server), '--token', makeTokens(1, 0x31)[0]!, '--alert', 'Hi']);
	assert.equal(run.code, 0, run.stderr);
	assert.match(run.stdout, /^apns-worker send: 1 notification over HTTP\/2 to /);
});

test('send: human output — each failure on stderr, the summary on stdout', async (t) => {
	const tokens = makeTokens(20, 0x32);
	const server = await mock(t, { unregistered: [tokens[4]!], badTokens: [tokens[9]!] });
	const run = await cli(['send', ...p8Flags(server), ...tokens.flatMap((tk) => ['--token', tk]), '--alert', 'Hi']);
	assert.equal(run.code, 1);
	assert.deepEqual(run.stderr.trim().split('\n').sort(), [`failed ${tokens[4]} 410 Unregistered`, `failed ${tokens[9]} 400 BadDeviceToken`].sort());
	const lines = run.stdout.trim().split('\n');
	assert.match(lines[0]!, new RegExp(`^apns-worker send: 20 notifications over HTTP/2 to 127\\.0\\.0\\.1:${server.port} in `));
	assert.match(lines[1]!, /^ {2}delivered +18 {2}accepted by the gateway$/);
	assert.match(lines[2]!, /^ {2}failed +2 {2}\((410 Unregistered: 1, 400 BadDeviceToken: 1|400 BadDeviceToken: 1, 410 Unregistered: 1)\)$/);
	assert.match(lines[3]!, /^ {2}re-sent +0 {2}/);
	assert.equal(lines.length, 4);
});

test('send: every token delivered → exit 0', async (t) => {
	const tokens = makeTokens(3, 0x33);
	const server = await mock(t);
	const run = await cli(['send', ...p8Flags(server), ...tokens.flatMap((tk) => ['--token', tk]), '--alert', 'Hi', '--json']);
	assert.equal(run.code, 0, run.stderr);
	assert.deepEqual({ ...JSON.parse(run.stdout), seconds: 0 }, { protocol: 'http2', gateway: `127.0.0.1:${server.port}`, sent: 3, delivered: 3, failed: [], notSent: 0, resent: 0, inDoubt: 0, seconds: 0 });
	assert.deepEqual([...server.counts.entries()].sort(), tokens.map((tk) => [tk, 1]).sort());
});

test('send: tokens from stdin, one per line (blank lines, CRLF, spaces and capitals taken in stride)', async (t) => {
	const tokens = makeTokens(50, 0x34);
	const server = await mock(t);
	const input = tokens.map((tk, i) => (i % 7 === 0 ? ` ${tk.toUpperCase()}\r` : tk)).join('\n').replace(tokens[20]!, `\n${tokens[20]!}`);
	const run = await cli(['send', ...p8Flags(server), '--alert', 'Hi', '--json'], { input });
	assert.equal(run.code, 0, run.stderr);
	const report = JSON.parse(run.stdout) as { sent: number; delivered: number };
	assert.deepEqual([report.sent, report.delivered], [50, 50]);
	assert.deepEqual([...server.counts.keys()].sort(), [...tokens].sort());
	assert.equal(server.acceptedCount, 50);
});

test('send: --payload-file and the delivery flags reach the gateway as headers', async (t) => {
	const [token] = makeTokens(1, 0x35);
	const server = await mock(t);
	const payload = { aps: { 'content-available': 1 }, orderId: 42 };
	const payloadFile = file('payload.json', JSON.stringify(payload));
	const run = await cli(['send', ...p8Flags(server), '--token', token!, '--payload-file', payloadFile, '--push-type', 'background', '--priority', '5', '--collapse-id', 'order-42', '--expiration', '2000000000']);
	assert.equal(run.code, 0, run.stderr);
	assert.equal(server.received.length, 1);
	const r = server.received[0]!;
	assert.deepEqual(JSON.parse(r.payload), payload);
	assert.deepEqual([r.pushType, r.priority, r.collapseId, r.expiration, r.topic], ['background', '5', 'order-42', '2000000000', TOPIC]);
});

test('send --protocol binary with --cert/--key: a compatible gateway, rejected tokens listed with their status', async (t) => {
	const tokens = makeTokens(200, 0x3b);
	const gw = await gateway(t, { rejectTokens: { [tokens[50]!]: 8, [tokens[150]!]: 8 } });
	const run = await cli(['send', '--protocol', 'binary', '--cert', files.cert, '--key', files.key, '--ca', files.ca, '--gateway', `127.0.0.1:${gw.port}`, '--tokens-file', file('binary-tokens.txt', tokens.join('\n')), '--alert', 'Hi', '--json']);
	assert.equal(run.code, 1, run.stderr);
	const report = JSON.parse(run.stdout) as { protocol: string; sent: number; delivered: number; failed: Array<{ token: string }> };
	assert.deepEqual([report.protocol, report.sent, report.delivered], ['binary', 200, 198]);
	assert.deepEqual([...report.failed].sort(byToken), [tokens[50]!, tokens[150]!].map((token) => ({ token, status: 8, reason: 'Invalid token' })).sort(byToken));
	assert.equal(tokens.filter((tk) => (gw.counts.get(tk) ?? 0) >= 1).length, 198);
});

test('send --timeout: tokens never answered are reported failed with reason Timeout, exit 1', async (t) => {
	const tokens = makeTokens(30, 0x36);
	const silent = [tokens[5]!, tokens[17]!];
	const server = await mock(t, { neverAnswer: silent });
	const run = await cli(['send', ...p8Flags(server), ...tokens.flatMap((tk) => ['--token', tk]), '--alert', 'Hi', '--timeout', '2', '--json']);
	assert.equal(run.code, 1);
	const report = JSON.parse(run.stdout) as { delivered: number; failed: Array<{ token: string }>; notSent: number };
	assert.equal(report.delivered, 28);
	assert.deepEqual([...report.failed].sort(byToken), silent.map((token) => ({ token, status: 0, reason: 'Timeout' })).sort(byToken));
	assert.equal(report.notSent, 0);
	assert.equal(server.acceptedCount, 28);
});

test('send: each usage error exits 2 with one line naming the flag and a hint, before anything is sent', async (t) => {
	const server = await mock(t);
	const good = makeTokens(3, 0x37);
	const base = [...p8Flags(server), '--token', good[0]!];
	const badFile = file('bad-tokens.txt', `${good[0]}\n\n${good[1]}\nnot-a-token\n`);
	const cases: Array<[string, string[], RegExp, { input?: string; env?: Record<string, string> }?]> = [
		['unknown flag', [...base, '--alert', 'x', '--bogus'], /^apns-worker send: unknown flag --bogus$/],
		['flag without its value', [...base, '--alert'], /^apns-worker send: --alert needs a value$/],
		['stray argument', [...base, '--alert', 'x', 'extra'], /^apns-worker send: unexpected argument "extra"/],
		['no payload', base, /^apns-worker send: no payload: give --alert TEXT/],
		['empty payload', [...base, '--payload', '{}'], /^apns-worker send: --payload has no content/],
		['empty aps', [...base, '--payload', '{"aps":{}}'], /^apns-worker send: --payload has no content/],
		['empty alert', [...base, '--alert', ''], /^apns-worker send: --alert is empty/],
		['payload not JSON', [...base, '--payload', '{aps'], /^apns-worker send: --payload is not JSON/],
		['payload not an object', [...base, '--payload', '[1]'], /^apns-worker send: --payload must be a JSON object/],
		['two payloads', [...base, '--alert', 'x', '--payload', '{"aps":{"alert":"y"}}'], /^apns-worker send: give the payload one way: --payload or --alert\/--badge\/--sound/],
		['payload too large', [...base, '--alert', 'x'.repeat(5000)], /^apns-worker send: payload: .*at most 4096 bytes/],
		['bad --token', [...p8Flags(server), '--token', 'xyz', '--alert', 'x'], /^apns-worker send: --token: not a device token \(64 hexadecimal characters\): "xyz"$/],
		['bad line in --tokens-file', [...p8Flags(server), '--tokens-file', badFile, '--alert', 'x'], /^apns-worker send: --tokens-file .*bad-tokens\.txt line 4: not a device token/],
		['bad line on stdin', [...p8Flags(server), '--alert', 'x'], /^apns-worker send: stdin line 2: not a device token/, { input: `${good[0]}\nnope\n` }],
		['no tokens on stdin', [...p8Flags(server), '--alert', 'x'], /^apns-worker send: no tokens: stdin holds none$/],
		['unreadable --tokens-file', [...p8Flags(server), '--tokens-file', join(dir, 'missing.txt'), '--alert', 'x'], /^apns-worker send: --tokens-file: cannot read .*missing\.txt: no such file$/],
		['unreadable --payload-file', [...base, '--payload-file', join(dir, 'missing.json')], /^apns-worker send: --payload-file: cannot read .*: no such file$/],
		['unreadable --p8', ['--p8', join(dir, 'none.p8'), '--key-id', KEY_ID, '--team-id', TEAM_ID, '--topic', TOPIC, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --p8: cannot read .*none\.p8: no such file$/],
		['--p8 not a key', ['--p8', files.ca, '--key-id', KEY_ID, '--team-id', TEAM_ID, '--topic', TOPIC, '--gateway', `127.0.0.1:${server.port}`, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: Cannot read token\.key/],
		['--p8 without --topic', ['--p8', files.p8, '--key-id', KEY_ID, '--team-id', TEAM_ID, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --p8 needs --topic BUNDLE/],
		['--p8 without --key-id', ['--p8', files.p8, '--team-id', TEAM_ID, '--topic', TOPIC, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --p8 needs --key-id/],
		['malformed --team-id', ['--p8', files.p8, '--key-id', KEY_ID, '--team-id', 'team', '--topic', TOPIC, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --team-id must be your Team ID/],
		['no credentials', ['--token', good[0]!, '--alert', 'x'], /^apns-worker send: no credentials/],
		['two kinds of credentials', [...base, '--p12', files.p12, '--alert', 'x'], /^apns-worker send: give --p8 \(token auth\) or a certificate/],
		['--cert without --key', ['--cert', files.cert, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --cert needs --key FILE/],
		['passphrase on the command line', ['--p12', files.p12, '--passphrase', PASSPHRASE, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --passphrase is not taken on the command line/],
		['wrong passphrase', ['--p12', files.p12, '--gateway', `127.0.0.1:${server.port}`, '--token', good[0]!, '--alert', 'x'], /^apns-worker send: Cannot open the PKCS#12 file \(wrong passphrase\?\)/, { env: { APNS_PASSPHRASE: 'wrong' } }],
		['unset --passphrase-env', ['--p12', files.p12, '--passphrase-env', 'NO_SUCH_VARIABLE_X', '--token', good[0]!, '--alert', 'x'], /^apns-worker send: --passphrase-env: the environment variable NO_SUCH_VARIABLE_X is not set$/],
		['bad --priority', [...base, '--alert', 'x', '--priority', '7'], /^apns-worker send: --priority must be 10, 5 or 1, got "7"$/],
		['bad --push-type', [...base, '--alert', 'x', '--push-type', 'loud'], /^apns-worker send: --push-type must be alert, background, .* or controls, got "loud"$/],
		['background at priority 10', [...base, '--payload', '{"aps":{"content-available":1}}', '--push-type', 'background', '--priority', '10'], /^apns-worker send: --priority: /],
		['long --collapse-id', [...base, '--alert', 'x', '--collapse-id', 'c'.repeat(65)], /^apns-worker send: --collapse-id must be 1 to 64 bytes, got 65$/],
		['bad --expiration', [...base, '--alert', 'x', '--expiration', 'tomorrow'], /^apns-worker send: --expiration must be UNIX seconds or an ISO date/],
		['bad --timeout', [...base, '--alert', 'x', '--timeout', '0'], /^apns-worker send: --timeout must be a whole number from 1 to 86400, got "0"$/],
		['bad --threads', [...base, '--alert', 'x', '--threads', '0'], /^apns-worker send: --threads must be a whole number from 1 to 64, got "0"$/],
		['--min-threads without --threads', [...base, '--alert', 'x', '--min-threads', '1'], /^apns-worker send: --min-threads goes with --threads N$/],
		['--min-threads above --threads', [...base, '--alert', 'x', '--threads', '2', '--min-threads', '3'], /^apns-worker send: --min-threads must be a whole number from 1 to 2, got "3"$/],
		['bad --gateway', [...base, '--alert', 'x', '--gateway', 'localhost'], /^apns-worker send: --gateway must be HOST:PORT, got "localhost"$/],
		['bad --environment', [...base, '--alert', 'x', '--environment', 'staging'], /^apns-worker send: --environment must be production or sandbox, got "staging"$/],
		['bad --protocol', [...base, '--alert', 'x', '--protocol', 'spdy'], /^apns-worker send: --protocol must be http2 or binary, got "spdy"$/],
		['--p8 with --protocol binary', [...base, '--alert', 'x', '--protocol', 'binary'], /^apns-worker send: --p8 is an HTTP\/2 feature: not with --protocol binary$/],
		['--collapse-id with --protocol binary', ['--cert', files.cert, '--key', files.key, '--token', good[0]!, '--alert', 'x', '--protocol', 'binary', '--collapse-id', 'c'], /^apns-worker send: --collapse-id is an HTTP\/2 feature/],
		['--priority 1 with --protocol binary', ['--cert', files.cert, '--key', files.key, '--token', good[0]!, '--alert', 'x', '--protocol', 'binary', '--priority', '1'], /^apns-worker send: --priority 1 is HTTP\/2 only/],
		['bad --proxy', [...base, '--alert', 'x', '--proxy', 'socks5://u:s3cret-proxy-pw@127.0.0.1:1080'], /^apns-worker send: --proxy must be http:\/\/\[user:password@\]host\[:port\] \(an HTTP CONNECT proxy; https:\/\/ and SOCKS are not supported\)/],
		['unreadable --ca', [...base, '--alert', 'x', '--ca', join(dir, 'none.pem')], /^apns-worker send: --ca: cannot read .*none\.pem: no such file$/],
		['--ca not PEM', [...base, '--alert', 'x', '--ca', files.p12], /^apns-worker send: --ca: .*client\.p12 is not a PEM file/],
	];
	for (const [name, args, expected, options] of cases) {
		await t.test(name, async () => {
			const run = await cli(['send', ...args], options);
			assert.equal(run.code, 2, `${name}: ${run.stderr}`);
			assert.equal(run.stdout, '');
			const lines = run.stderr.trimEnd().split('\n');
			assert.equal(lines.length, 2, run.stderr);
			assert.match(lines[0]!, expected);
			assert.equal(lines[1], "Run 'apns-worker send --help' for the flags.");
		});
	}
	assert.equal(server.requests, 0, 'nothing was sent');
});

test('--help for each command lists every flag the command takes; --help and no command', async () => {
	for (const [name, command] of [['send', sendCommand], ['demo', demoCommand], ['feedback', feedbackCommand]] as const) {
		const run = await cli([name, '--help']);
		assert.equal(run.code, 0);
		assert.equal(run.stdout, command.HELP);
		assert.ok(run.stdout.startsWith(`Usage: apns-worker ${name}`));
		// passphrase is there to be refused (help says where the passphrase comes from instead).
		const missing = Object.keys(command.FLAGS).filter((flag) => flag !== 'passphrase' && !run.stdout.includes(`--${flag}`));
		assert.deepEqual(missing, [], `${name} --help`);
	}
	const help = await cli(['--help']);
	assert.equal(help.code, 0);
	for (const name of ['send', 'demo', 'feedback']) assert.match(help.stdout, new RegExp(`^ {2}${name} `, 'm'));
	const none = await cli([]);
	assert.equal(none.code, 2);
	assert.match(none.stderr, /^apns-worker: no command given\nUsage: apns-worker COMMAND/);
	const unknown = await cli(['sned']);
	assert.equal(unknown.code, 2);
	assert.match(unknown.stderr, /^apns-worker: unknown command "sned"\n/);
});

test('--version prints the version in package.json', async () => {
	const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
	const run = await cli(['--version']);
	assert.deepEqual([run.code, run.stdout, run.stderr], [0, `${pkg.version}\n`, '']);
});

interface DemoJson {
	protocol: string;
	notifications: number;
	delivered: number;
	failedReported: number;
	expectedFailures: number;
	lost: number;
	duplicated: number;
	resentInDoubt: number;
	feedbackRead: number;
	failuresByReason: Record<string, number>;
}

test('demo --json over HTTP/2 (the default): nothing lost, exactly the expected failures, duplicates within "in doubt"', async () => {
	const run = await cli(['demo', '--count', '3000', '--json']);
	assert.equal(run.code, 0, run.stderr);
	const r = JSON.parse(run.stdout) as DemoJson;
	assert.equal(r.protocol, 'http2');
	// 1 in 1,000 each: indexes 999, 1999, 2999 answer 410; 499, 1499, 2499 answer BadDeviceToken.
	assert.deepEqual(r.failuresByReason, { '410 Unregistered': 3, '400 BadDeviceToken': 3 });
	assert.deepEqual([r.notifications, r.delivered, r.failedReported, r.expectedFailures, r.lost, r.feedbackRead], [3000, 2994, 6, 6, 0, 3]);
	assert.ok(r.duplicated <= r.resentInDoubt, `${r.duplicated} duplicated, ${r.resentInDoubt} in doubt`);
});

test('demo --protocol binary --json: nothing lost, exactly the expected failures, the feedback read', async () => {
	const run = await cli(['demo', '--protocol', 'binary', '--count', '3000', '--json']);
	assert.equal(run.code, 0, run.stderr);
	const r = JSON.parse(run.stdout) as DemoJson;
	assert.equal(r.protocol, 'binary');
	assert.deepEqual([r.notifications, r.delivered, r.failedReported, r.expectedFailures, r.lost, r.feedbackRead], [3000, 2994, 6, 6, 0, 5]);
	assert.ok(r.duplicated <= r.resentInDoubt);
});

test("demo: every number printed comes with a line saying what it means, 're-sent' and 'in doubt' included", async () => {
	const run = await cli(['demo', '--count', '1000', '--no-faults']);
	assert.equal(run.code, 0, run.stderr);
	const rows = run.stdout.trimEnd().split('\n').slice(2);
	const labels = rows.map((row) => /^ {2}(\S+(?: \S+)?) +(\S.*?) {2}(\S.*)$/.exec(row)?.[1]);
	assert.deepEqual(labels, ['notifications', 'delivered', 'failed', 'lost', 'duplicated', 're-sent', 'in doubt', 'GOAWAYs', 'connections', 'elapsed', 'rate', 'feedback read']);
	assert.match(run.stdout, /in doubt +0 {2}of those, re-sent without knowing whether the first copy arrived: the most that can be duplicated/);
	assert.match(run.stdout, /re-sent +0 {2}notifications written again after/);
});

test('feedback reads a binary feedback service; over HTTP/2 it says where 410s come instead', async (t) => {
	const tokens = makeTokens(3, 0x38);
	const when = new Date('2026-01-02T03:04:05.000Z');
	const service = await feedbackService(t, { tuples: tokens.map((token) => ({ token, when })) });
	const run = await cli(['feedback', '--p12', files.p12, '--passphrase-env', 'MY_P12_PASS', '--feedback', `127.0.0.1:${service.port}`, '--ca', files.ca], { env: { MY_P12_PASS: PASSPHRASE } });
	assert.equal(run.code, 0, run.stderr);
	assert.deepEqual(run.stdout.trim().split('\n'), tokens.map((token) => `${when.toISOString()} ${token}`));
	assert.equal(run.stderr, '3 tokens reported gone\n');
	const h2 = await cli(['feedback', '--protocol', 'http2', '--cert', files.cert, '--key', files.key, '--feedback', `127.0.0.1:${service.port}`]);
	assert.equal(h2.code, 2);
	assert.match(h2.stderr, /^apns-worker feedback: HTTP\/2 has no feedback service: APNs answers 410 Unregistered to the send itself/);
});

test('--proxy: the URL becomes { host, port, auth }; no error repeats the password', () => {
	assert.deepEqual(parseProxy('http://proxy.internal:3128'), { host: 'proxy.internal', port: 3128 });
	assert.deepEqual(parseProxy('http://me:s3cret-proxy-pw%40x@127.0.0.1:8080'), { host: '127.0.0.1', port: 8080, auth: { username: 'me', password: 's3cret-proxy-pw@x' } });
	assert.deepEqual(parseProxy('http://[::1]:8080/'), { host: '::1', port: 8080 });
	// The library's reading of proxy URLs, as for HTTPS_PROXY: the scheme may be left out, the port defaults to 80.
	assert.deepEqual(parseProxy('me:pw@127.0.0.1:8080'), { host: '127.0.0.1', port: 8080, auth: { username: 'me', password: 'pw' } });
	assert.deepEqual(parseProxy('http://127.0.0.1'), { host: '127.0.0.1', port: 80 });
	for (const bad of ['https://me:s3cret-proxy-pw@127.0.0.1:8080', 'socks5://me:s3cret-proxy-pw@127.0.0.1:1080', 'http://me:s3cret-proxy-pw@127.0.0.1:8080/path', 'http://me:s3cret-proxy-pw%zz@127.0.0.1:8080']) {
		assert.throws(
			() => parseProxy(bad),
			(error: unknown) => error instanceof UsageError && error.message.startsWith('--proxy') && !error.message.includes('s3cret-proxy-pw'),
			bad,
		);
	}
});

test('serve --retry-for: a whole number and a unit (s, m, h, d) within the bounds; anything else names the flag and the form', () => {
	const DAY = 86_400_000;
	assert.deepEqual(['90s', '30m', '24h', '30d'].map((v) => duration('--retry-for', v, 1000, 30 * DAY)), [90_000, 1_800_000, 86_400_000, 30 * DAY]);
	for (const bad of ['24', '1.5h', '-1h', '31d', '0s', 'h', '24 h', '1w']) {
		assert.throws(() => duration('--retry-for', bad, 1000, 30 * DAY), { name: 'UsageError', message: `--retry-for must be a duration from 1s to 30d, a whole number and s, m, h or d (e.g. 24h), got ${JSON.stringify(bad)}` }, bad);
	}
});

test('send --proxy: through an HTTP CONNECT proxy on 127.0.0.1 with credentials; the password never shown', async (t) => {
	const server = await mock(t);
	const proxy = await startMockProxy({ auth: { username: 'me', password: 's3cret-proxy-pw' } });
	t.after(() => proxy.close());
	const tokens = makeTokens(20, 0x39);
	const run = await cli(['send', ...p8Flags(server), ...tokens.flatMap((tk) => ['--token', tk]), '--alert', 'via proxy', '--json', '--proxy', `http://me:s3cret-proxy-pw@127.0.0.1:${proxy.port}`]);
	assert.equal(run.code, 0, run.stderr);
	assert.equal(JSON.parse(run.stdout).delivered, 20);
	assert.deepEqual(proxy.tunnels, [`127.0.0.1:${server.port}`]);
	assert.equal(server.acceptedCount, 20);
	const wrong = await cli(['send', ...p8Flags(server), '--token', tokens[0]!, '--alert', 'x', '--timeout', '2', '--proxy', `http://me:wrong-pw@127.0.0.1:${proxy.port}`]);
	assert.equal(wrong.code, 1, 'nothing delivered: reported, not a usage error');
	assert.match(wrong.stderr, /407/);
	assert.ok(!wrong.stderr.includes('wrong-pw') && !wrong.stdout.includes('wrong-pw'));
});

test('progress line: at most 10 redraws a second, sent / delivered / failed / rate, cleared before other output', (t) => {
	t.mock.timers.enable({ apis: ['setInterval', 'Date'] });
	const writes: string[] = [];
	const counts = { sent: 0, delivered: 0, failed: 0, total: 10_000 as number | undefined };
	const line = new ProgressLine({ write: (s: string) => writes.push(s), columns: 200 }, () => counts);
	line.start();
	for (let ms = 0; ms < 1000; ms += 10) {
		counts.sent += 20;
		counts.delivered += 9;
		counts.failed += 1;
		t.mock.timers.tick(10);
	}
	assert.equal(line.redraws, 1000 / REDRAW_MS);
	assert.equal(writes.length, 10);
	// After 1 s: 2,000 written, 900 delivered and 100 failed: 1,000 settled a second.
	assert.equal(writes.at(-1), '\rsent 2,000/10,000 · delivered 900 · failed 100 · 1,000/s\u001b[K');
	line.print('failed abc 410 Unregistered');
	assert.deepEqual(writes.slice(-2), ['\r\u001b[2K', 'failed abc 410 Unregistered\n']);
	t.mock.timers.tick(REDRAW_MS);
	line.stop();
	assert.equal(writes.at(-1), '\r\u001b[2K');
	t.mock.timers.tick(1000);
	assert.equal(line.redraws, 11, 'nothing drawn after stop()');
});

test('progress line: never wider than the terminal', (t) => {
	t.mock.timers.enable({ apis: ['setInterval', 'Date'] });
	const writes: string[] = [];
	const line = new ProgressLine({ write: (s: string) => writes.push(s), columns: 30 }, () => ({ sent: 123_456, delivered: 123_000, failed: 456, total: 1_000_000 }));
	line.start();
	t.mock.timers.tick(REDRAW_MS);
	line.stop();
	assert.equal(writes[0], `\r${'sent 123,456/1,000,000 · deliv'.slice(0, 29)}\u001b[K`);
});

test('token reader: a file over many chunks is counted, then handed out in batches, and a bad line is named by its number', async () => {
	const tokens = makeTokens(5000, 0x3a);
	// ~330 KB: several 64 KiB chunks, so line numbers must carry across chunk boundaries.
	const good = file('many.txt', `${tokens.join('\r\n')}\r\n\r\n`);
	const source = await tokensFromFlags([tokens[0]!.toUpperCase()], good);
	assert.equal(source.count, 5001);
	const batches: string[][] = [];
	for await (const batch of source.batches(1024)) batches.push(batch);
	assert.deepEqual(batches.map((b) => b.length), [1024, 1024, 1024, 1024, 905]);
	assert.deepEqual(batches.flat(), [tokens[0], ...tokens]);
	const lines = [...tokens];
	lines[4321] = 'zz';
	const bad = file('many-bad.txt', lines.join('\n'));
	await assert.rejects(tokensFromFlags([], bad), { name: 'UsageError', message: `--tokens-file ${bad} line 4322: not a device token (64 hexadecimal characters): "zz"` });
	const fromStdin = await tokensFromStream(Readable.from([`${tokens[1]}\n${tokens[2]}`, `\n\n${tokens[3]}`]));
	const piped: string[] = [];
	for await (const batch of fromStdin.batches(2)) piped.push(...batch);
	assert.deepEqual([fromStdin.count, piped], [3, tokens.slice(1, 4)]);
});

test('channels and broadcast: a Live Activity session from the command line against the mock — create, list, get, broadcast an update and an end, delete; APNs\' refusal is exit 1 with its reason; mistakes exit 2 naming the flag', async (t) => {
	const server = await mock(t);
	const flags = [...p8Flags(server), '--channel-gateway', `127.0.0.1:${server.port}`];
	const created = await cli(['channels', 'create', ...flags, '--json']);
	assert.equal(created.code, 0, created.stderr);
	const { channelId } = JSON.parse(created.stdout) as { channelId: string };
	const kept = await cli(['channels', 'create', ...flags, '--storage-policy', '1']);
	assert.equal(kept.code, 0, kept.stderr);
	const listed = await cli(['channels', 'list', ...flags]);
	assert.deepEqual(listed.stdout.trim().split('\n').sort(), [channelId, kept.stdout.trim()].sort());
	assert.equal((await cli(['channels', 'get', ...flags, '--channel', channelId])).stdout, `${channelId} storage policy 0\n`);
	const update = JSON.stringify({ aps: { timestamp: 1_800_000_000, event: 'update', 'content-state': { score: '1-0' } } });
	const sent = await cli(['broadcast', ...flags, '--channel', channelId, '--payload', update, '--priority', '5']);
	assert.equal(sent.code, 0, sent.stderr);
	assert.match(sent.stdout, new RegExp(`^sent ${channelId.replace(/[+/=]/g, '\\$&')} apns-id [0-9a-f-]{36} unique-id [0-9a-f-]{36}\\n$`));
	const end = await cli(['broadcast', ...flags, '--channel', channelId, '--payload-file', file('end.json', JSON.stringify({ aps: { timestamp: 1_800_000_001, event: 'end', 'content-state': { score: '2-1' } } })), '--json']);
	assert.equal(JSON.parse(end.stdout).sent.length, 1, end.stderr);
	assert.deepEqual(server.broadcasts.map((b) => [b.channel, b.priority, b.expiration, JSON.parse(b.payload).aps.event]), [[channelId, '5', '0', 'update'], [channelId, '10', '0', 'end']]);
	assert.equal((await cli(['channels', 'delete', ...flags, '--channel', channelId])).code, 0);
	const gone = await cli(['broadcast', ...flags, '--channel', channelId, '--payload', update]);
	assert.deepEqual([gone.code, gone.stdout], [1, `failed ${channelId} 400 ChannelNotRegistered\n`]);
	const unknown = await cli(['channels', 'get', ...flags, '--channel', channelId]);
	assert.equal(unknown.code, 1);
	assert.match(unknown.stderr, /getChannel\(\) failed: status 400 ChannelNotRegistered/);
	for (const [args, message] of [
		[['channels', ...flags], /give an action first: create, get, list, delete/],
		[['channels', 'get', ...flags], /channels get needs --channel ID/],
		[['channels', 'list', ...flags, '--storage-policy', '1'], /--storage-policy goes with create/],
		[['broadcast', ...flags, '--payload', update], /no channel: give --channel ID/],
		[['broadcast', ...flags, '--channel', channelId, '--payload', '[1]'], /--payload must be a JSON object/],
		[['broadcast', ...flags, '--channel', channelId, '--payload', update, '--priority', '7'], /--priority must be 10, 5 or 1/],
	] as const) {
		const run = await cli(args);
		assert.equal(run.code, 2, `${args.join(' ')}: ${run.stderr}`);
		assert.match(run.stderr, message);
	}
	assert.equal(server.channels.length, 1, 'only the kept channel is left');
});
