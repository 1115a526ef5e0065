/**
 * `apns-worker demo`: the library's main job against a mock on 127.0.0.1, with faults on, and every
 * number it prints explained. HTTP/2 by default (the mock of Apple's API, token auth); `--protocol
 * binary` runs the binary mock gateway and its feedback service. No Apple account, nothing leaves the
 * machine. Uses the public API and the `apns-worker/testing` mocks only.
 */
import { generateKeyPairSync } from 'node:crypto';
import { ApnsManager } from '../index.js';
import { makeTestCertificates, startMockApnsHttp2, startMockFeedback, startMockGateway, type MockApnsHttp2Faults } from '../testing.js';
import { oneOf, parseFlags, wholeNumber } from './args.js';

export const FLAGS = {
	protocol: { type: 'string' },
	count: { type: 'string' },
	'no-faults': { type: 'boolean' },
	json: { type: 'boolean' },
} as const;

export const HELP = `Usage: apns-worker demo [--protocol http2|binary] [--count N] [--no-faults] [--json]

Start a mock gateway on 127.0.0.1 with faults switched on, send N notifications (default 50,000)
through the manager, and print what became of every one, each number with what it means.

  --protocol http2         (default) the mock of Apple's HTTP/2 API, token auth (a .p8 key made now).
                           Faults: 410 Unregistered for 1 token in 1,000, 400 BadDeviceToken for 1 in
                           1,000, 500 for every 997th request, 429 once for 1 token in 2,000, GOAWAY
                           after 20,000 streams on a session, and one connection cut mid-run
  --protocol binary        the binary mock gateway and feedback service. Faults: 1 invalid token per 500,
                           status 10 (shutdown) every 30,000, a silent drop every 40,000, error answers
                           up to 50 ms late
  --count N                notifications to send
  --no-faults              a clean run
  --json                   one JSON object instead of the table

Exit code: 0 when nothing was lost and exactly the expected tokens failed, 1 otherwise, 2 usage error.
`;

/** What a run measured; the JSON object `--json` prints. */
interface DemoReport {
	protocol: 'http2' | 'binary';
	notifications: number;
	faults: string;
	/** Every copy the mock accepted, duplicates included. */
	deliveredByGateway: number;
	/** Distinct tokens the mock accepted. */
	delivered: number;
	failedReported: number;
	expectedFailures: number;
	failuresByReason: Record<string, number>;
	lost: number;
	duplicated: number;
	resent: number;
	resentInDoubt: number;
	connections: number;
	seconds: number;
	perSecond: number;
	feedbackRead: number;
	/** Binary: probes answered; HTTP/2: GOAWAYs the mock sent. */
	confirmations?: number;
	silentDrops?: number;
	goaways?: number;
}

const APS = { alert: 'Hello from apns-worker', badge: 1, sound: 'default' };
const BATCH = 10_000;

export async function run(args: readonly string[]): Promise<number> {
	const v = parseFlags(args, FLAGS);
	const protocol = oneOf('--protocol', v.protocol ?? 'http2', ['http2', 'binary'] as const);
	const count = wholeNumber('--count', v.count ?? '50000', 1, 10_000_000);
	const faultsOn = v['no-faults'] !== true;
	const tokens = Array.from({ length: count }, (_, i) => `${'d0'.repeat(28)}${i.toString(16).padStart(8, '0')}`);
	const report = await measure(tokens, protocol === 'http2' ? await http2Stage(tokens, faultsOn) : await binaryStage(tokens, faultsOn));
	if (v.json === true) process.stdout.write(`${JSON.stringify(report)}\n`);
	else process.stdout.write(table(report));
	if (report.lost !== 0 || report.failedReported !== report.expectedFailures) {
		process.stderr.write('demo: delivery accounting does not add up\n');
		return 1;
	}
	return 0;
}

/** A mock started for one protocol, and a manager pointed at it. */
interface Stage {
	readonly protocol: 'http2' | 'binary';
	readonly manager: ApnsManager;
	/** The tokens the mock rejects for good. */
	readonly expected: ReadonlySet<string>;
	readonly faults: string;
	/** How many times the mock accepted each token, and in all. */
	readonly mock: { readonly counts: ReadonlyMap<string, number>; readonly acceptedCount: number };
	/** The protocol's own numbers for the report. */
	extra(): Partial<DemoReport>;
	/** Stop the mock(s). */
	close(): Promise<void>;
}

/**
 * Hand every token over in batches, with no waiting between (the manager queues and paces), wait until
 * each is settled, read the feedback, and compare what the mock accepted with what was sent.
 */
async function measure(tokens: readonly string[], stage: Stage): Promise<DemoReport> {
	const { manager, expected } = stage;
	const failuresByReason: Record<string, number> = {};
	let failed = 0;
	let connections = 0;
	manager.on('deliveryError', (e) => {
		failed++;
		const key = `${e.status} ${e.reason ?? e.description}`;
		failuresByReason[key] = (failuresByReason[key] ?? 0) + 1;
	});
	manager.on('connected', () => connections++);
	try {
		const started = performance.now();
		for (let i = 0; i < tokens.length; i += BATCH) manager.sendAps(tokens.slice(i, i + BATCH), APS);
		await manager.flushMessages();
		const seconds = (performance.now() - started) / 1000;
		const feedbackRead = await manager.getFeedback(() => {});
		await manager.close();
		let delivered = 0;
		let lost = 0;
		let duplicated = 0;
		for (const token of tokens) {
			if (expected.has(token)) continue;
			const n = stage.mock.counts.get(token) ?? 0;
			if (n === 0) lost++;
			else {
				delivered++;
				duplicated += n - 1;
			}
		}
		const s = manager.stats;
		return {
			protocol: stage.protocol,
			notifications: tokens.length,
			faults: stage.faults,
			deliveredByGateway: stage.mock.acceptedCount,
			delivered,
			failedReported: failed,
			expectedFailures: expected.size,
			failuresByReason,
			lost,
			duplicated,
			resent: s.resent,
			resentInDoubt: s.inDoubt,
			connections,
			seconds: Number(seconds.toFixed(3)),
			perSecond: Math.round(tokens.length / seconds),
			feedbackRead,
			...stage.extra(),
		};
	} finally {
		manager.destroy();
		await stage.close();
	}
}

async function http2Stage(tokens: readonly string[], faultsOn: boolean): Promise<Stage> {
	const certs = makeTestCertificates();
	const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
	const key = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'DEMOKEY123', teamId: 'DEMOTEAM12' };
	const topic = 'com.example.demo';
	const at = (every: number, offset: number): string[] => tokens.filter((_, i) => i % every === offset);
	const unregistered = faultsOn ? at(1000, 999) : [];
	const badTokens = faultsOn ? at(1000, 499) : [];
	const expected = new Set([...unregistered, ...badTokens]);
	// One connection is cut when this token arrives (then the fault is lifted): what was in flight is in doubt.
	let cutAt = Math.floor(tokens.length * 0.6);
	while (cutAt < tokens.length - 1 && expected.has(tokens[cutAt]!)) cutAt++;
	const cutToken = faultsOn && tokens.length >= 10 ? tokens[cutAt] : undefined;
	const steady: MockApnsHttp2Faults = faultsOn
		? {
				unregistered: new Map(unregistered.map((t, i) => [t, new Date(Date.now() - i * 60_000)])),
				badTokens,
				statusEvery: { every: 997, status: 500 },
				transient: { tokens: at(2000, 250), status: 429, times: 1 },
				goawayAfter: 20_000,
			}
		: {};
	let cut = false;
	const mock = await startMockApnsHttp2({
		server: certs.server,
		keys: [{ keyId: key.keyId, teamId: key.teamId, publicKey: p8.publicKey }],
		topics: [topic],
		faults: cutToken === undefined ? steady : { ...steady, killSessionOnToken: cutToken },
		record: false,
		onRequest: (token) => {
			if (token !== cutToken || cut) return;
			cut = true;
			setImmediate(() => mock.setFaults(steady)); // after this request has cut its connection
		},
	});
	return {
		protocol: 'http2',
		manager: new ApnsManager({ protocol: 'http2', token: key, topic, ca: certs.ca.cert, gateway: { host: mock.host, port: mock.port } }),
		expected,
		faults: faultsOn ? '410 for 1 token in 1,000, 400 BadDeviceToken for 1 in 1,000, 500 every 997th request, 429 once for 1 in 2,000, GOAWAY after 20,000 streams, one connection cut' : 'none',
		mock,
		extra: () => ({ goaways: mock.goaways.length }),
		close: () => mock.close(),
	};
}

async function binaryStage(tokens: readonly string[], faultsOn: boolean): Promise<Stage> {
	const certs = makeTestCertificates();
	const invalid = faultsOn ? tokens.filter((_, i) => i % 500 === 499) : [];
	const gateway = await startMockGateway({
		server: certs.server,
		ca: certs.ca.cert,
		record: false,
		faults: faultsOn ? { rejectTokens: Object.fromEntries(invalid.map((t) => [t, 8])), shutdownEvery: 30_000, silentDropEvery: 40_000, errorDelayMs: [0, 50] } : {},
	});
	const gone = tokens.slice(0, 5).map((token, i) => ({ token, when: new Date(Date.now() - i * 60_000) }));
	const feedbackService = await startMockFeedback({ server: certs.server, ca: certs.ca.cert, tuples: gone });
	const manager = new ApnsManager({
		protocol: 'binary',
		cert: certs.client.cert,
		key: certs.client.key,
		ca: certs.ca.cert,
		gateway: { host: gateway.host, port: gateway.port },
		feedback: { host: feedbackService.host, port: feedbackService.port },
	});
	return {
		protocol: 'binary',
		manager,
		expected: new Set(invalid),
		faults: faultsOn ? '1 invalid per 500, status 10 every 30,000, silent drop every 40,000, errors ≤ 50 ms late' : 'none',
		mock: gateway,
		extra: () => ({ confirmations: manager.stats.probesAnswered, silentDrops: gateway.silentDrops }),
		close: async () => {
			await gateway.close();
			await feedbackService.close();
		},
	};
}

/** The report as a table: each number with one line on what it means. */
function table(r: DemoReport): string {
	const n = (value: number): string => value.toLocaleString('en-US');
	const http2 = r.protocol === 'http2';
	const reasons = Object.entries(r.failuresByReason)
		.map(([reason, count]) => `${reason}: ${n(count)}`)
		.join(', ');
	const rows: Array<[string, string, string]> = [
		['notifications', n(r.notifications), `handed to sendAps() in batches of ${n(BATCH)}, all at once: the manager queues and paces them`],
		['delivered', n(r.delivered), 'distinct tokens the mock accepted (each counted once, however often it arrived)'],
		['failed', n(r.failedReported), `${reasons === '' ? '' : `${reasons} — `}each reported once (deliveryError event); ${n(r.expectedFailures)} expected: the tokens the mock rejects`],
		['lost', n(r.lost), 'neither delivered nor reported failed: a silent loss, what this library exists to keep at 0'],
		['duplicated', n(r.duplicated), "extra copies the mock accepted: never more than 'in doubt'"],
		[
			're-sent',
			n(r.resent),
			http2 ? 'notifications written again after a 429/500 answer, a GOAWAY or a lost connection' : 'notifications written again after an error answer (the ones after it) or a lost connection',
		],
		['in doubt', n(r.resentInDoubt), 'of those, re-sent without knowing whether the first copy arrived: the most that can be duplicated'],
	];
	if (http2) rows.push(['GOAWAYs', n(r.goaways ?? 0), 'sessions the mock closed gracefully: the streams it never processed were re-sent (not in doubt)']);
	else {
		rows.push(['confirmations', n(r.confirmations ?? 0), "probes answered: a known-bad notification whose error answer proves everything before it arrived (binary APNs never says 'delivered')"]);
		rows.push(['silent drops', n(r.silentDrops ?? 0), 'connections the mock closed without a word: what they held was re-sent in doubt']);
	}
	rows.push(
		['connections', n(r.connections), http2 ? 'HTTP/2 sessions opened (a GOAWAY or the cut connection needs a new one)' : 'TLS connections opened (each error answer, shutdown, drop and probe ends one)'],
		['elapsed', `${r.seconds.toFixed(2)} s`, 'from the first sendAps() to flushMessages() resolving: every notification settled'],
		['rate', `${n(r.perSecond)}/s`, 'notifications settled per second, on this machine, mock included'],
		['feedback read', n(r.feedbackRead), http2 ? "410 records from getFeedback(): HTTP/2 has no feedback service, APNs answers 410 to the send itself" : 'tokens read from the mock feedback service with getFeedback()'],
	);
	const labelWidth = Math.max(...rows.map(([label]) => label.length));
	const valueWidth = Math.max(...rows.map(([, value]) => value.length));
	const where = http2 ? "the mock of Apple's HTTP/2 API (token auth)" : 'the binary mock gateway';
	return [
		`apns-worker demo: ${where} on 127.0.0.1, Node ${process.version}`,
		`faults: ${r.faults}`,
		...rows.map(([label, value, note]) => `  ${label.padEnd(labelWidth)}  ${value.padStart(valueWidth)}  ${note}`),
		'',
	].join('\n');
}
