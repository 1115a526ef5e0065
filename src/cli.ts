#!/usr/bin/env node
/**
 * The `apns-worker` command: a thin layer over the public API.
 *   apns-worker demo       the main job against the embedded mock gateway (no Apple account needed)
 *   apns-worker send       send one notification to one or more tokens
 *   apns-worker feedback   read the feedback service
 */
import { parseArgs } from 'node:util';
import { ApnsManager } from './manager.js';
import { ApnsError } from './errors.js';
import { makeTestCertificates } from './mock/certs.js';
import { startMockFeedback } from './mock/feedback.js';
import { startMockGateway } from './mock/gateway.js';
import type { ApnsManagerOptions } from './options.js';

const USAGE = `Usage:
  apns-worker demo [--count N] [--no-faults] [--json]
      Start the embedded mock gateway on 127.0.0.1 with faults switched on (1 invalid token per 500,
      status 10 every 30,000, a silent drop every 40,000, error frames up to 50 ms late), send N
      notifications (default 100,000) through the manager, read feedback, and print a report.
  apns-worker send --cert FILE --key FILE [--passphrase P] | --pfx FILE [--passphrase P]
                   [--environment production|sandbox] [--gateway HOST:PORT] [--ca FILE]
                   --token HEX [--token HEX ...] (--alert TEXT | --payload JSON) [--badge N] [--sound NAME]
  apns-worker feedback --cert FILE --key FILE | --pfx FILE [--passphrase P]
                   [--environment production|sandbox] [--feedback HOST:PORT] [--ca FILE]
`;

function hostPort(value: string | undefined, name: string): { host: string; port: number } | undefined {
	if (value === undefined) return undefined;
	const match = /^(.+):(\d+)$/.exec(value);
	if (!match) throw new Error(`--${name} must be HOST:PORT, got ${value}`);
	return { host: match[1]!, port: Number(match[2]) };
}

function credentialOptions(values: Record<string, unknown>): ApnsManagerOptions {
	const get = (k: string): string | undefined => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
	const environment = get('environment');
	if (environment !== undefined && environment !== 'production' && environment !== 'sandbox') throw new Error(`--environment must be production or sandbox`);
	const gateway = hostPort(get('gateway'), 'gateway');
	const feedback = hostPort(get('feedback'), 'feedback');
	const cert = get('cert');
	const key = get('key');
	const pfx = get('pfx');
	const passphrase = get('passphrase');
	const ca = get('ca');
	return {
		protocol: 'binary',
		...(cert === undefined ? {} : { cert }),
		...(key === undefined ? {} : { key }),
		...(pfx === undefined ? {} : { pfx }),
		...(passphrase === undefined ? {} : { passphrase }),
		...(ca === undefined ? {} : { ca }),
		...(environment === undefined ? {} : { environment }),
		...(gateway === undefined ? {} : { gateway }),
		...(feedback === undefined ? {} : { feedback }),
	};
}

const CREDENTIAL_FLAGS = {
	cert: { type: 'string' },
	key: { type: 'string' },
	pfx: { type: 'string' },
	passphrase: { type: 'string' },
	ca: { type: 'string' },
	environment: { type: 'string' },
	gateway: { type: 'string' },
	feedback: { type: 'string' },
} as const;

async function demo(args: string[]): Promise<void> {
	const { values } = parseArgs({ args, options: { count: { type: 'string', default: '100000' }, 'no-faults': { type: 'boolean', default: false }, json: { type: 'boolean', default: false } } });
	const count = Number(values.count);
	if (!Number.isInteger(count) || count < 1) throw new Error(`--count must be a whole number >= 1, got ${values.count}`);
	const faultsOn = !values['no-faults'];
	const certs = makeTestCertificates();
	const tokens = Array.from({ length: count }, (_, i) => `${'d0'.repeat(28)}${i.toString(16).padStart(8, '0')}`);
	const invalid = faultsOn ? tokens.filter((_, i) => i % 500 === 499) : [];
	const gateway = await startMockGateway({
		server: certs.server,
		ca: certs.ca.cert,
		record: false,
		faults: faultsOn ? { rejectTokens: Object.fromEntries(invalid.map((t) => [t, 8])), shutdownEvery: 30_000, silentDropEvery: 40_000, errorDelayMs: [0, 50] } : {},
	});
	const gone = tokens.slice(0, 5).map((token, i) => ({ token, when: new Date(Date.now() - i * 60_000) }));
	const feedbackService = await startMockFeedback({ server: certs.server, ca: certs.ca.cert, tuples: gone });
	let failed = 0;
	const manager = new ApnsManager({
		protocol: 'binary',
		cert: certs.client.cert,
		key: certs.client.key,
		ca: certs.ca.cert,
		gateway: { host: gateway.host, port: gateway.port },
		feedback: { host: feedbackService.host, port: feedbackService.port },
		errorHandler: () => failed++,
	});
	let connections = 0;
	manager.on('connected', () => connections++);
	const started = performance.now();
	for (let i = 0; i < count; i += 10_000) manager.sendAps(tokens.slice(i, i + 10_000), { alert: 'Hello from apns-worker', badge: 1, sound: 'default' });
	await manager.flushMessages();
	const seconds = (performance.now() - started) / 1000;
	const feedback: string[] = [];
	await manager.getFeedback((f) => feedback.push(f.token));
	await manager.close();
	await gateway.close();
	await feedbackService.close();

	const invalidSet = new Set(invalid);
	let lost = 0;
	let duplicated = 0;
	for (const token of tokens) {
		const n = gateway.counts.get(token) ?? 0;
		if (invalidSet.has(token)) continue;
		if (n === 0) lost++;
		else duplicated += n - 1;
	}
	const s = manager.stats;
	const report = {
		notifications: count,
		faults: faultsOn ? '1 invalid per 500, status 10 every 30,000, silent drop every 40,000, errors ≤ 50 ms late' : 'none',
		deliveredByGateway: gateway.acceptedCount,
		failedReported: failed,
		expectedFailures: invalid.length,
		lost,
		duplicated,
		resent: s.resent,
		resentInDoubt: s.inDoubt,
		confirmations: s.probesAnswered,
		connections,
		silentDrops: gateway.silentDrops,
		seconds: Number(seconds.toFixed(3)),
		perSecond: Math.round(count / seconds),
		feedbackRead: feedback.length,
	};
	if (values.json) {
		process.stdout.write(`${JSON.stringify(report)}\n`);
	} else {
		const rows: Array<[string, string | number]> = [
			['notifications sent', count],
			['faults injected', report.faults],
			['delivered (unique tokens)', count - invalid.length - lost],
			['failed (reported)', `${failed} (expected ${invalid.length})`],
			['lost', lost],
			['duplicated', `${duplicated} (bound: re-sent in doubt = ${s.inDoubt})`],
			['re-sent after errors/closes', s.resent],
			['confirmations (probes answered)', s.probesAnswered],
			['connections', connections],
			['elapsed', `${seconds.toFixed(2)} s`],
			['rate', `${report.perSecond.toLocaleString('en-US')} notifications/s`],
			['feedback tuples read', feedback.length],
		];
		const width = Math.max(...rows.map(([k]) => k.length));
		process.stdout.write(`apns-worker demo — embedded mock gateway on 127.0.0.1, Node ${process.version}\n`);
		for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`);
	}
	if (lost !== 0 || failed !== invalid.length) {
		process.stderr.write('demo: delivery accounting does not add up\n');
		process.exitCode = 1;
	}
}

async function send(args: string[]): Promise<void> {
	const { values } = parseArgs({
		args,
		options: { ...CREDENTIAL_FLAGS, token: { type: 'string', multiple: true }, alert: { type: 'string' }, payload: { type: 'string' }, badge: { type: 'string' }, sound: { type: 'string' } },
	});
	const tokens = values.token ?? [];
	if (tokens.length === 0) throw new Error('--token is required');
	const manager = new ApnsManager({
		...credentialOptions(values),
		errorHandler: (e) => process.stderr.write(`rejected ${e.token}: ${e.description} (status ${e.status})\n`),
	});
	manager.on('connectError', (e, { retryInMs }) => process.stderr.write(`${e.message}; retrying in ${retryInMs} ms\n`));
	if (values.payload !== undefined) {
		const { Message } = await import('./message.js');
		manager.send(new Message(tokens, JSON.parse(values.payload) as Record<string, unknown>));
	} else {
		manager.sendAps(tokens, {
			...(values.alert === undefined ? {} : { alert: values.alert }),
			...(values.badge === undefined ? {} : { badge: Number(values.badge) }),
			...(values.sound === undefined ? {} : { sound: values.sound }),
		});
	}
	await manager.close({ timeoutMs: 30_000 });
	const s = manager.stats;
	process.stdout.write(`delivered ${s.delivered}, failed ${s.failed}\n`);
	if (s.failed > 0) process.exitCode = 1;
}

async function feedback(args: string[]): Promise<void> {
	const { values } = parseArgs({ args, options: CREDENTIAL_FLAGS });
	const manager = new ApnsManager(credentialOptions(values));
	const count = await manager.getFeedback((f) => process.stdout.write(`${f.when.toISOString()} ${f.token}\n`));
	await manager.close();
	process.stderr.write(`${count} feedback tuples\n`);
}

async function main(argv: string[]): Promise<void> {
	const [command, ...rest] = argv;
	switch (command) {
		case 'demo':
			return demo(rest);
		case 'send':
			return send(rest);
		case 'feedback':
			return feedback(rest);
		case undefined:
		case 'help':
		case '--help':
		case '-h':
			process.stdout.write(USAGE);
			return;
		default:
			throw new Error(`Unknown command ${command}`);
	}
}

main(process.argv.slice(2)).catch((error: unknown) => {
	const code = error instanceof ApnsError ? ` [${error.code}]` : '';
	process.stderr.write(`apns-worker: ${error instanceof Error ? error.message : String(error)}${code}\n\n${USAGE}`);
	process.exitCode = 2;
});
