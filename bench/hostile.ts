/**
 * `npm run bench:hostile`: what the library does against a hostile gateway. One scenario per observation
 * (see SCENARIOS); each runs the library's public API (`ApnsManager`) against the bundled mock on 127.0.0.1
 * for a bounded time, then stops it hard (destroy, mock closed) and prints a table row, plus JSON for all.
 *
 * The library runs in a child process of its own, one per scenario, so a crash is a row rather than the
 * end of the run, and RSS and CPU are the library's alone. The mock runs in this (parent) process and
 * keeps counting whatever the child does; the child reports its events every 500 ms, so even a child
 * that had to be killed leaves figures behind.
 *
 * Which library: `APNS_LIB=/path/to/dist/index.js` (default: this checkout's dist/index.js), so the same
 * scenarios measure old and new code. Only documented options are passed (protocol, token/topic or
 * cert/key/ca, gateway, graceMs, maxAttempts, retry).
 *
 * Options: --only TEXT (scenarios whose id or name contains TEXT; repeatable), --bound-ms N (each
 * scenario's run, default 15000; env HOSTILE_BOUND_MS), --out FILE.json (also writes FILE.txt with the
 * table), --list (print the scenarios and exit).
 */
import { fork } from 'node:child_process';
import { mkdirSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { ApnsManager, ApnsManagerOptions, DeliveryError } from '../src/index.js';
import { makeTestCertificates, startMockApnsHttp2, startMockGateway, type MockApnsHttp2, type MockApnsHttp2Faults, type MockGateway, type MockGatewayFaults } from '../src/testing.js';
import { makeCerts, PAYLOAD, TOPIC, tokenIndexOf, tokens as makeTokens, token as tokenAt, type Certs } from './common.js';

/** A hard stop this long after the bound kills a child that did not stop itself. */
const KILL_GRACE_MS = 15_000;
/** The UID of makeTestCertificates()' client certificate. */
const CERT_TOPIC = 'com.example.app';
const PROGRESS_MS = 500;

interface Scenario {
	readonly id: string;
	/** The observation it reproduces (see the brief in the commit message / report). */
	readonly observation: number;
	readonly name: string;
	readonly protocol: 'binary' | 'http2';
	/** HTTP/2 authentication. @default 'token' */
	readonly auth?: 'token' | 'cert';
	/** Notifications queued at the start (tokens 0 … n−1). */
	readonly n: number;
	readonly gatewayFaults?: (tokens: readonly string[]) => MockGatewayFaults;
	readonly http2Faults?: (tokens: readonly string[]) => MockApnsHttp2Faults;
	/** HTTP/2: the mock trusts another CA than the client certificate's and refuses it in the handshake. */
	readonly refuseClientCert?: boolean;
	/** Manager options beyond address and credentials (documented ones only). */
	readonly options?: Partial<ApnsManagerOptions>;
	/** This scenario runs at least this long, whatever --bound-ms says (what it shows takes that long). */
	readonly minBoundMs?: number;
	/** Stop a second after flushMessages() resolves, instead of at the bound (what it measures is the time to settle). */
	readonly stopWhenSettled?: boolean;
	/** What the child calls once everything is queued. */
	readonly then: { readonly call: 'flush' } | { readonly call: 'close'; readonly timeoutMs?: number };
}

const every503 = { every: 1, status: 503 } as const;
/** Black holes: up to 5 minutes to settle, stopped once settled. */
const BLACK_HOLE_RUN = { minBoundMs: 300_000, stopWhenSettled: true, then: { call: 'flush' } } as const;

const SCENARIOS: readonly Scenario[] = [
	{ id: '1a', observation: 1, name: 'h2 503 on every request, 150k queued', protocol: 'http2', n: 150_000, http2Faults: () => ({ statusEvery: every503 }), then: { call: 'flush' } },
	{ id: '1b', observation: 1, name: 'h2 503 + retry-after: 1 on every request, 150k queued', protocol: 'http2', n: 150_000, http2Faults: () => ({ statusEvery: { ...every503, retryAfterSeconds: 1 } }), then: { call: 'flush' } },
	// Certificate auth: a token-auth session is held to one stream until its first 200, which never comes here.
	{ id: '1c', observation: 1, name: 'h2 503 on every request, 150k queued, cert auth', protocol: 'http2', auth: 'cert', n: 150_000, http2Faults: () => ({ statusEvery: every503 }), then: { call: 'flush' } },
	{ id: '1d', observation: 1, name: 'h2 503 + retry-after: 60 on every request, 150k queued, cert auth', protocol: 'http2', auth: 'cert', n: 150_000, http2Faults: () => ({ statusEvery: { ...every503, retryAfterSeconds: 60 } }), then: { call: 'flush' } },
	{ id: '2a', observation: 2, name: 'h2 RST_STREAM REFUSED_STREAM on every stream', protocol: 'http2', n: 1000, http2Faults: () => ({ resetStreams: { code: 'REFUSED_STREAM' } }), then: { call: 'flush' } },
	{ id: '2b', observation: 2, name: 'h2 RST_STREAM INTERNAL_ERROR on every stream', protocol: 'http2', n: 1000, http2Faults: () => ({ resetStreams: { code: 'INTERNAL_ERROR' } }), then: { call: 'flush' } },
	{ id: '2c', observation: 2, name: 'h2 RST_STREAM CANCEL on every stream', protocol: 'http2', n: 1000, http2Faults: () => ({ resetStreams: { code: 'CANCEL' } }), then: { call: 'flush' } },
	{ id: '3a', observation: 3, name: 'h2 first token never answered (token auth)', protocol: 'http2', n: 1000, http2Faults: (t) => ({ neverAnswer: [t[0]!] }), then: { call: 'flush' } },
	{ id: '3b', observation: 3, name: 'h2 first token never answered (cert auth)', protocol: 'http2', auth: 'cert', n: 1000, http2Faults: (t) => ({ neverAnswer: [t[0]!] }), then: { call: 'flush' } },
	{ id: '4a', observation: 4, name: 'h2 TLS 1.3 server refuses the client cert after the handshake', protocol: 'http2', auth: 'cert', n: 100, refuseClientCert: true, then: { call: 'flush' } },
	{ id: '4b', observation: 4, name: 'h2 GOAWAY(0) on every connect', protocol: 'http2', n: 100, http2Faults: () => ({ goawayOnConnect: true }), then: { call: 'flush' } },
	{ id: '5', observation: 5, name: 'h2 503 + retry-after: 99999999', protocol: 'http2', n: 100, http2Faults: () => ({ statusEvery: { ...every503, retryAfterSeconds: 99_999_999 } }), then: { call: 'flush' } },
	{ id: '6a', observation: 6, name: 'h2 GOAWAY after 100 streams, then close() (fixed mock)', protocol: 'http2', n: 2000, http2Faults: () => ({ goawayAfter: 100 }), then: { call: 'close' } },
	{ id: '6b', observation: 6, name: 'h2 GOAWAY after 100 streams, then close() (pre-fix mock: goawayKeepsProcessing)', protocol: 'http2', n: 2000, http2Faults: () => ({ goawayAfter: 100, goawayKeepsProcessing: true }), then: { call: 'close' } },
	// Certificate auth for volume (a 410 is not the 200 that lifts token auth's one-stream limit); nobody calls getFeedback.
	{ id: '7', observation: 7, name: 'h2 410 Unregistered for every token, 300k queued, no getFeedback', protocol: 'http2', auth: 'cert', n: 300_000, http2Faults: (t) => ({ unregistered: new Map(t.map((tk) => [tk, new Date(1_700_000_000_000)])) }), then: { call: 'flush' } },
	{ id: '8a', observation: 8, name: 'bin garbage answer on every connection', protocol: 'binary', n: 1000, gatewayFaults: () => ({ garbage: true }), then: { call: 'flush' } },
	{ id: '8b', observation: 8, name: 'bin wrong command byte on every connection', protocol: 'binary', n: 1000, gatewayFaults: () => ({ wrongCommand: true }), then: { call: 'flush' } },
	{ id: '8c', observation: 8, name: 'bin truncated 3-byte error on every connection', protocol: 'binary', n: 1000, gatewayFaults: () => ({ truncatedError: true }), then: { call: 'flush' } },
	{ id: '8d', observation: 8, name: 'bin error naming an unknown ident on every connection', protocol: 'binary', n: 1000, gatewayFaults: () => ({ errorUnknownIdent: true }), then: { call: 'flush' } },
	{ id: '8e', observation: 8, name: 'bin connection dropped at token #500, every time', protocol: 'binary', n: 1000, gatewayFaults: (t) => ({ dropOnToken: t[500]! }), then: { call: 'flush' } },
	{ id: '9a', observation: 9, name: 'bin gateway never reads, 5,000 queued', protocol: 'binary', n: 5000, gatewayFaults: () => ({ neverRead: true }), then: { call: 'flush' } },
	{ id: '9b', observation: 9, name: 'bin token #2000 rejected 6.5 s late (graceMs 5000)', protocol: 'binary', n: 5000, gatewayFaults: (t) => ({ rejectTokens: { [t[2000]!]: 8 }, errorDelayMs: 6500 }), options: { graceMs: 5000 }, then: { call: 'flush' } },
	{ id: '9c', observation: 9, name: 'bin reading stalled 10 s, token #2000 rejected (graceMs 5000)', protocol: 'binary', n: 5000, gatewayFaults: (t) => ({ rejectTokens: { [t[2000]!]: 8 }, stallReadMs: 10_000 }), options: { graceMs: 5000 }, then: { call: 'flush' } },
	{ id: '10', observation: 10, name: 'bin reading stalled 10 s per connection, 500k queued', protocol: 'binary', n: 500_000, gatewayFaults: () => ({ stallReadMs: 10_000 }), then: { call: 'flush' } },
	{ id: '11a', observation: 11, name: 'bin gateway never reads, close({ timeoutMs: 2000 })', protocol: 'binary', n: 5000, gatewayFaults: () => ({ neverRead: true }), then: { call: 'close', timeoutMs: 2000 } },
	// A grace window shorter than the timeout: the flush is over (by grace) before it, and what is left is closing the sockets.
	{ id: '11b', observation: 11, name: 'bin gateway never reads, close({ timeoutMs: 2000 }), graceMs 1000', protocol: 'binary', n: 5000, gatewayFaults: () => ({ neverRead: true }), options: { graceMs: 1000 }, then: { call: 'close', timeoutMs: 2000 } },
	// Black holes (requests never answered on a session that answers others and its PINGs), default options.
	// Reported within maxAttempts × (requestTimeoutMs + retry backoff) = 5 × 10 s + 1 + 2 + 4 + 8 s = 65 s, plus a margin.
	// 100%, token auth: the first 200 answers prove the key, so the sessions opened beside the black holes are not held to one stream.
	...(['evented', 'threaded'] as const).flatMap((backend, i): Scenario[] => [
		{ id: `12${'ad'[i]}`, observation: 12, name: `h2 1% black-holed: 50 of 5,000 tokens never answered (${backend})`, protocol: 'http2', n: 5000, http2Faults: (t) => ({ neverAnswer: t.filter((_, k) => k % 100 === 50) }), options: { backend }, ...BLACK_HOLE_RUN },
		{ id: `12${'be'[i]}`, observation: 12, name: `h2 100% black-holed: nothing after the 200th request answered (${backend})`, protocol: 'http2', n: 5000, http2Faults: () => ({ neverAnswerAfter: 200 }), options: { backend }, ...BLACK_HOLE_RUN },
		{ id: `12${'cf'[i]}`, observation: 12, name: `h2 100% black-holed: nothing after the 200th request answered (${backend}, cert auth)`, protocol: 'http2', auth: 'cert', n: 5000, http2Faults: () => ({ neverAnswerAfter: 200 }), options: { backend }, ...BLACK_HOLE_RUN },
	]),
];

/** Parent → child, in the environment. */
interface Task {
	readonly scenario: string;
	readonly lib: string;
	readonly boundMs: number;
	readonly port: number;
	readonly certs: Certs;
}

/** What the library's events (and process warnings) said, counted in the child. */
interface LibraryEvents {
	/** deliveryError events. */
	errors: number;
	/** deliveryError reasons seen: "status reason" → count. */
	reasons: Record<string, number>;
	connected: number;
	connectErrors: number;
	/** First connectError message (what the library said). */
	connectErrorSample: string | undefined;
	/** disconnected events by reason; delivered by how; resent by reason (counts of notifications). */
	disconnected: Record<string, number>;
	delivered: Record<string, number>;
	resent: Record<string, number>;
	identNotFound: number;
	/** 'error' events (a listener threw). */
	errorEvents: number;
	warnings: Record<string, number>;
	warningSample: string | undefined;
	/** Whether flushMessages()/close() settled within the bound, after how long, and how (a TimeoutError's `pending`: what it says it dropped). */
	settle: { call: string; afterMs: number | undefined; outcome: string | undefined; pending?: number | undefined };
}

function noEvents(call: string): LibraryEvents {
	return {
		errors: 0,
		reasons: {},
		connected: 0,
		connectErrors: 0,
		connectErrorSample: undefined,
		disconnected: {},
		delivered: {},
		resent: {},
		identNotFound: 0,
		errorEvents: 0,
		warnings: {},
		warningSample: undefined,
		settle: { call, afterMs: undefined, outcome: undefined },
	};
}

/** What the child knows of the library's behaviour. */
interface ChildFigures extends LibraryEvents {
	elapsedMs: number;
	stats: Record<string, number> | undefined;
	rssPeakBytes: number;
	rssBaselineBytes: number;
	heapGrowthBytes: number | undefined;
	cpuMs: number;
	crashed: string | undefined;
}

/** Token indexes reported since the last message: failed (deliveryError), and dropped (the receipt's `dropped`). */
type ChildMessage =
	| { type: 'started' }
	| { type: 'progress'; figures: ChildFigures; failed: number[]; dropped: number[] }
	| { type: 'result'; figures: ChildFigures; failed: number[]; dropped: number[] };

interface Row extends LibraryEvents {
	id: string;
	observation: number;
	name: string;
	protocol: 'binary' | 'http2';
	queued: number;
	/** How long the library ran, ms (start of sending to the stop or the crash). */
	ranMs: number;
	/** Mock side. */
	connects: number;
	connectsPerSecond: number;
	handshakes: number;
	/** HTTP/2 requests (streams) or binary notification frames the mock received. */
	received: number;
	answered: number | undefined;
	resets: number | undefined;
	goaways: number | undefined;
	/** Binary: error responses the mock sent (errorUnknownIdent's included), other garbled answers, silent drops. */
	errorFramesSent: number | undefined;
	garbledAnswers: number | undefined;
	silentDrops: number | undefined;
	/** Most requests/frames one token got. */
	hottestToken: number;
	acceptedDistinct: number;
	duplicates: number;
	/** Per second of the run: [connects, received] in that second. */
	perSecond: Array<[number, number]>;
	/** Library side: its events (above), and manager.stats at the stop. */
	pending: number | undefined;
	inDoubt: number | undefined;
	stats: Record<string, number> | undefined;
	settle: { call: string; afterMs: number | undefined; outcome: string | undefined; pending?: number | undefined };
	/**
	 * Dropped by a `close({ timeoutMs })` that ran out, before the stop, and reported so: the tokens its
	 * receipt lists as dropped (the TimeoutError's own count is `settle.pending`). Only such a close can
	 * drop before the stop.
	 */
	dropped: number;
	/** Never accepted by the mock and never reported failed or dropped. */
	unaccounted: number;
	/** Of those, at least this many are no longer pending either: silently lost (all of them after a crash). */
	lost: number;
	rssPeakMB: number;
	rssGrowthMB: number;
	/** Heap (after a full GC) at the stop over the heap just after queueing, and that per 100,000 reported failures. */
	heapGrowthMB: number | undefined;
	heapGrowthBytesPer100kFailures: number | undefined;
	cpuMs: number;
	crashed: string | undefined;
	/** The child did not stop itself and was killed. */
	killed: boolean;
	stderrTail: string;
}

const here = fileURLToPath(import.meta.url);
const DEFAULT_LIB = fileURLToPath(new URL('../../dist/index.js', import.meta.url));

// ---------------------------------------------------------------------------------------------------------------------
// Parent: mocks, children, accounting.

async function main(): Promise<void> {
	const { values } = parseArgs({
		options: { only: { type: 'string', multiple: true }, 'bound-ms': { type: 'string' }, out: { type: 'string' }, list: { type: 'boolean' } },
	});
	if (values.list) {
		for (const s of SCENARIOS) console.log(`${s.id.padEnd(3)} obs ${String(s.observation).padEnd(2)} ${s.name}`);
		return;
	}
	const boundMs = Number(values['bound-ms'] ?? process.env['HOSTILE_BOUND_MS'] ?? 15_000);
	if (!Number.isInteger(boundMs) || boundMs < 1000 || boundMs > 120_000) throw new Error('--bound-ms: a whole number of ms from 1000 to 120000');
	const lib = resolve(process.env['APNS_LIB'] ?? DEFAULT_LIB);
	const only = values.only ?? [];
	// An id picks that scenario; any other text, the scenarios whose name contains it.
	const ids = new Set(SCENARIOS.map((s) => s.id));
	const chosen = SCENARIOS.filter((s) => only.length === 0 || only.some((o) => (ids.has(o) ? s.id === o : s.name.includes(o))));
	const certs = makeCerts();
	// 4a: a CA that did not sign the client certificate.
	const foreign = makeTestCertificates();
	console.error(`library: ${lib}; ${chosen.length} scenarios, ${boundMs} ms each`);
	const rows: Row[] = [];
	for (const scenario of chosen) {
		const row = await runScenario(scenario, { lib, boundMs, certs, foreignCa: foreign.ca.cert });
		rows.push(row);
		console.error(tableRows([row])[0]);
	}
	const table = [TABLE_HEADER, TABLE_RULE, ...tableRows(rows)].join('\n');
	const report = {
		date: new Date().toISOString(),
		lib,
		libModified: statSync(lib).mtime.toISOString(),
		node: process.version,
		cpus: os.cpus().length,
		cpuModel: os.cpus()[0]?.model,
		boundMs,
		rows,
	};
	const json = JSON.stringify(report, null, 2);
	console.log(table);
	console.log(json);
	if (values.out !== undefined) {
		mkdirSync(dirname(values.out), { recursive: true });
		writeFileSync(values.out, `${json}\n`);
		writeFileSync(values.out.replace(/\.json$/, '') + '.txt', `${legend(report)}\n\n${table}\n`);
	}
}

type AnyMock = { kind: 'binary'; mock: MockGateway } | { kind: 'http2'; mock: MockApnsHttp2 };

async function runScenario(scenario: Scenario, env: { lib: string; boundMs: number; certs: Certs; foreignCa: string }): Promise<Row> {
	const { certs } = env;
	const tokens = makeTokens(scenario.n);
	// Sends per token as the mock saw them, by token index (typed: 500k tokens).
	const sends = new Uint32Array(scenario.n);
	const seen = (index: number): void => {
		if (index >= 0 && index < scenario.n) sends[index]!++;
	};
	let m: AnyMock;
	if (scenario.protocol === 'binary') {
		const mock = await startMockGateway({
			server: certs.server,
			ca: certs.ca,
			faults: scenario.gatewayFaults?.(tokens) ?? {},
			record: false,
			onFrame: (token) => token.length === 32 && seen(token.readUInt32BE(28)),
		});
		m = { kind: 'binary', mock };
	} else {
		const mock = await startMockApnsHttp2({
			server: certs.server,
			ca: scenario.refuseClientCert ? env.foreignCa : certs.ca,
			requireClientCert: scenario.refuseClientCert === true,
			keys: [{ keyId: certs.p8.keyId, teamId: certs.p8.teamId, publicKey: certs.p8.publicKey }],
			// The bench topic (token auth) and the client certificate's UID (certificate auth's default topic).
			topics: [TOPIC, CERT_TOPIC],
			faults: scenario.http2Faults?.(tokens) ?? {},
			record: false,
			onRequest: (token) => token.length === 64 && seen(tokenIndexOf(token)),
		});
		m = { kind: 'http2', mock };
	}
	const counters = (): [number, number] => (m.kind === 'binary' ? [m.mock.connectionsAccepted, m.mock.framesReceived] : [m.mock.connectionsAccepted, m.mock.requests]);
	const boundMs = Math.max(env.boundMs, scenario.minBoundMs ?? 0);
	const task: Task = { scenario: scenario.id, lib: env.lib, boundMs, port: m.mock.port, certs };
	const child = fork(here, [], {
		env: { ...process.env, HOSTILE_TASK: JSON.stringify(task) },
		// --no-warnings: a warning storm (TimeoutOverflowWarning) must not flood stderr; the child still counts them.
		execArgv: ['--expose-gc', '--no-warnings'],
		stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
	});
	let stderr = '';
	child.stderr!.on('data', (chunk: Buffer) => {
		stderr = (stderr + chunk.toString('utf8')).slice(-4000);
	});
	let figures: ChildFigures | undefined;
	const failed = new Set<number>();
	const dropped = new Set<number>();
	let startedAt: number | undefined;
	let stoppedAt: number | undefined;
	const perSecond: Array<[number, number]> = [];
	let last = counters();
	const sampler = setInterval(() => {
		const now = counters();
		perSecond.push([now[0] - last[0], now[1] - last[1]]);
		last = now;
	}, 1000);
	let killed = false;
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
	const killer = setTimeout(() => {
		killed = true;
		child.kill('SIGKILL');
	}, boundMs + KILL_GRACE_MS);
	child.on('message', (message: ChildMessage) => {
		if (message.type === 'started') {
			startedAt = performance.now();
			return;
		}
		figures = message.figures;
		for (const i of message.failed) failed.add(i);
		for (const i of message.dropped) dropped.add(i);
		if (message.type === 'result') stoppedAt = performance.now();
	});
	await exited;
	clearTimeout(killer);
	clearInterval(sampler);
	stoppedAt ??= performance.now();
	const ranMs = figures?.elapsedMs !== undefined && !killed ? figures.elapsedMs : stoppedAt - (startedAt ?? stoppedAt);
	// Read the mock once the child is gone: everything it will ever receive has arrived.
	const [connects, received] = counters();
	let acceptedDistinct = 0;
	let duplicates = 0;
	const accepted = new Uint8Array(scenario.n);
	for (const [token, count] of m.mock.counts) {
		const i = tokenIndexOf(token);
		if (token !== tokenAt(i) || i >= scenario.n) continue;
		accepted[i] = 1;
		acceptedDistinct++;
		duplicates += count - 1;
	}
	let unaccounted = 0;
	for (let i = 0; i < scenario.n; i++) if (accepted[i] === 0 && !failed.has(i) && !dropped.has(i)) unaccounted++;
	let hottestToken = 0;
	for (const s of sends) if (s > hottestToken) hottestToken = s;
	const stats = figures?.stats;
	const pending = stats?.['pending'];
	const crashed = figures?.crashed ?? (killed ? 'killed after the bound' : undefined);
	const failures = figures?.errors ?? 0;
	// The child's event figures, without its other fields (they are reported below, converted).
	const events = noEvents(scenario.then.call);
	if (figures !== undefined) for (const key of Object.keys(events) as Array<keyof LibraryEvents>) Object.assign(events, { [key]: figures[key] });
	const row: Row = {
		...events,
		id: scenario.id,
		observation: scenario.observation,
		name: scenario.name,
		protocol: scenario.protocol,
		queued: scenario.n,
		ranMs: Math.round(ranMs),
		connects,
		connectsPerSecond: ranMs > 0 ? Math.round((connects / ranMs) * 10_000) / 10 : 0,
		handshakes: m.kind === 'binary' ? m.mock.connections : m.mock.sessions,
		received,
		answered: m.kind === 'http2' ? m.mock.answered : undefined,
		resets: m.kind === 'http2' ? m.mock.resets : undefined,
		goaways: m.kind === 'http2' ? m.mock.goaways.length : undefined,
		errorFramesSent: m.kind === 'binary' ? m.mock.errorsSent.length : undefined,
		garbledAnswers: m.kind === 'binary' ? m.mock.garbledAnswers : undefined,
		silentDrops: m.kind === 'binary' ? m.mock.silentDrops : undefined,
		hottestToken,
		acceptedDistinct,
		duplicates,
		perSecond,
		pending,
		inDoubt: stats?.['inDoubt'],
		stats,
		dropped: dropped.size,
		unaccounted,
		lost: crashed !== undefined || pending === undefined ? unaccounted : Math.max(0, unaccounted - pending),
		rssPeakMB: Math.round((figures?.rssPeakBytes ?? 0) / 1e5) / 10,
		rssGrowthMB: Math.round(((figures?.rssPeakBytes ?? 0) - (figures?.rssBaselineBytes ?? 0)) / 1e5) / 10,
		heapGrowthMB: figures?.heapGrowthBytes === undefined ? undefined : Math.round(figures.heapGrowthBytes / 1e5) / 10,
		heapGrowthBytesPer100kFailures: figures?.heapGrowthBytes !== undefined && failures > 0 ? Math.round((figures.heapGrowthBytes / failures) * 100_000) : undefined,
		cpuMs: Math.round(figures?.cpuMs ?? 0),
		crashed,
		killed,
		stderrTail: stderr.slice(-1500),
	};
	// Bounded: a mock that cannot close in 5 s is left behind rather than holding up the run.
	await Promise.race([m.mock.close(), new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
	return row;
}

const TABLE_HEADER =
	'| id  | scenario                                                         | ran s | connects (/s)   | mock got | got/s 1st→last | hottest | accepted      | dup    | errors reported           | connErr | pending | inDoubt | flush/close        | dropped | lost  | RSS MB (+)     | CPU s | warnings | crash |';
const TABLE_RULE = TABLE_HEADER.replace(/[^|]/g, '-');

function tableRows(rows: readonly Row[]): string[] {
	const cell = (v: unknown, w: number): string => String(v).padEnd(w);
	return rows.map((r) => {
		const reasons = Object.entries(r.reasons)
			.map(([k, v]) => `${v}× ${k}`)
			.join(', ');
		const settle = r.settle.afterMs === undefined ? `${r.settle.call}: no` : `${r.settle.call}: ${(r.settle.afterMs / 1000).toFixed(1)} s ${r.settle.outcome === 'resolved' ? 'ok' : r.settle.outcome}${r.settle.pending === undefined ? '' : ` (${r.settle.pending} dropped)`}`;
		const warnings = Object.values(r.warnings).reduce((a, b) => a + b, 0);
		return [
			'',
			cell(r.id, 3),
			cell(r.name, 64),
			cell((r.ranMs / 1000).toFixed(1), 5),
			cell(`${r.connects} (${r.connectsPerSecond})`, 15),
			cell(r.received, 8),
			cell(rateSpan(r.perSecond), 14),
			cell(r.hottestToken, 7),
			cell(`${r.acceptedDistinct}/${r.queued}`, 13),
			cell(r.duplicates, 6),
			cell(r.errors === 0 ? '0' : `${r.errors}: ${reasons}`, 25),
			cell(r.connectErrors, 7),
			cell(r.pending ?? '?', 7),
			cell(r.inDoubt ?? '?', 7),
			cell(settle, 18),
			cell(r.dropped, 7),
			cell(r.lost, 5),
			cell(`${r.rssPeakMB} (+${r.rssGrowthMB})`, 14),
			cell((r.cpuMs / 1000).toFixed(1), 5),
			cell(warnings, 8),
			cell(r.crashed === undefined ? '' : r.crashed.split('\n')[0]!.slice(0, 60), 5),
			'',
		].join(' | ').trim();
	});
}

/** Received per second in the first and the last whole second of the run (a falling rate shows up here). */
function rateSpan(perSecond: ReadonlyArray<readonly [number, number]>): string {
	const whole = perSecond.slice(0, -1); // the last sample may straddle the stop
	if (whole.length === 0) return '';
	return `${whole[0]![1]}→${whole[whole.length - 1]![1]}`;
}

function legend(report: { date: string; lib: string; node: string; cpus: number; cpuModel: string | undefined; boundMs: number }): string {
	return [
		`hostile-gateway reproduction, ${report.date}; library ${report.lib}; Node ${report.node}; ${report.cpus} × ${report.cpuModel ?? 'CPU'}; each scenario ${report.boundMs} ms (12a-12f: up to 300 s, stopped 1 s after the flush resolved), then destroy().`,
		'connects: TCP connections the mock accepted (failed handshakes included), and per second. mock got: HTTP/2 requests (streams) or binary notification frames the mock received; got/s: in the first and the last whole second.',
		'hottest: most requests/frames one token got. accepted: distinct tokens the mock accepted / queued. dup: acceptances beyond the first.',
		'errors reported: deliveryError events (status reason). connErr: connectError events. pending, inDoubt: manager.stats at the stop.',
		'flush/close: whether flushMessages()/close() settled within the bound, after how long, and how. dropped: tokens the receipt of a close({ timeoutMs }) that ran out lists as dropped, i.e. reported (the flush/close cell gives the TimeoutError\'s own count). lost: never accepted, never reported failed or dropped, and (at least this many) no longer pending; after a crash, all never accepted nor reported.',
		'RSS MB: peak RSS of the library process (+ growth over the process before the library loaded). CPU s: the library process. warnings: process warnings (see JSON for names). crash: uncaught exception, or killed when it did not stop.',
	].join('\n');
}

// ---------------------------------------------------------------------------------------------------------------------
// Child: the library under test.

async function child(task: Task): Promise<void> {
	const scenario = SCENARIOS.find((s) => s.id === task.scenario)!;
	let tokens: string[] | undefined = makeTokens(scenario.n);
	const rssBaselineBytes = process.memoryUsage.rss();
	const cpu0 = process.cpuUsage();
	const figures: ChildFigures = {
		...noEvents(scenario.then.call),
		elapsedMs: 0,
		stats: undefined,
		rssPeakBytes: rssBaselineBytes,
		rssBaselineBytes,
		heapGrowthBytes: undefined,
		cpuMs: 0,
		crashed: undefined,
	};
	let failedSince: number[] = [];
	let droppedSince: number[] = [];
	const bump = (record: Record<string, number>, key: string, by = 1): void => {
		record[key] = (record[key] ?? 0) + by;
	};
	process.on('warning', (warning) => {
		bump(figures.warnings, warning.name);
		figures.warningSample ??= `${warning.name}: ${warning.message}`;
	});
	let manager: ApnsManager | undefined;
	let t0 = performance.now();
	let finished = false;
	const gc = (globalThis as { gc?: () => void }).gc;
	let heap0 = 0;
	// Sampled, not getrusage's maxRSS: Linux carries that high-water mark over from the parent through fork and exec.
	const sampleRss = (): void => {
		figures.rssPeakBytes = Math.max(figures.rssPeakBytes, process.memoryUsage.rss());
	};
	setInterval(sampleRss, 50).unref();
	const snapshot = (): void => {
		figures.elapsedMs = performance.now() - t0;
		figures.cpuMs = (() => {
			const u = process.cpuUsage(cpu0);
			return (u.user + u.system) / 1000;
		})();
		sampleRss();
		try {
			if (manager !== undefined) figures.stats = { ...(manager.stats as unknown as Record<string, number>) };
		} catch (error) {
			figures.crashed ??= `stats threw: ${String(error)}`;
		}
	};
	const send = (message: ChildMessage): Promise<void> => new Promise((resolve) => (process.connected ? process.send!(message, undefined, {}, () => resolve()) : resolve()));
	const progress = setInterval(() => {
		snapshot();
		const failed = failedSince;
		const dropped = droppedSince;
		failedSince = [];
		droppedSince = [];
		void send({ type: 'progress', figures, failed, dropped });
	}, PROGRESS_MS);
	const finish = async (crash?: unknown): Promise<void> => {
		if (finished) return;
		finished = true;
		clearInterval(progress);
		if (crash !== undefined) figures.crashed = crash instanceof Error ? `${crash.name}: ${crash.message}` : String(crash);
		snapshot();
		if (gc !== undefined && crash === undefined) {
			gc();
			figures.heapGrowthBytes = process.memoryUsage().heapUsed - heap0;
		}
		try {
			manager?.destroy();
		} catch (error) {
			figures.crashed ??= `destroy threw: ${String(error)}`;
		}
		await send({ type: 'result', figures, failed: failedSince, dropped: droppedSince });
		process.exit(crash === undefined ? 0 : 70);
	};
	process.on('uncaughtException', (error) => void finish(error));
	process.on('unhandledRejection', (error) => void finish(error));

	const lib = (await import(pathToFileURL(task.lib).href)) as typeof import('../src/index.js');
	const c = task.certs;
	const auth: Partial<ApnsManagerOptions> =
		scenario.protocol === 'binary'
			? { protocol: 'binary', cert: c.client.cert, key: c.client.key, ca: c.ca }
			: scenario.auth === 'cert'
				? { protocol: 'http2', cert: c.client.cert, key: c.client.key, ca: c.ca }
				: { protocol: 'http2', token: { key: c.p8.key, keyId: c.p8.keyId, teamId: c.p8.teamId }, topic: TOPIC, ca: c.ca };
	manager = new lib.ApnsManager({ ...auth, gateway: { host: '127.0.0.1', port: task.port }, ...scenario.options } as ApnsManagerOptions);
	manager.on('deliveryError', (e: DeliveryError) => {
		figures.errors++;
		bump(figures.reasons, `${e.status} ${e.reason ?? e.description}`);
		const i = tokenIndexOf(e.token);
		if (i < scenario.n && tokenAt(i) === e.token) failedSince.push(i);
	});
	manager.on('connected', () => figures.connected++);
	manager.on('connectError', (e) => {
		figures.connectErrors++;
		figures.connectErrorSample ??= e.message;
	});
	manager.on('disconnected', (info) => bump(figures.disconnected, info.reason));
	// Older versions said how ('confirmed' or 'grace'); now every delivery is confirmed.
	manager.on('delivered', (info) => bump(figures.delivered, (info as { how?: string }).how ?? 'confirmed', info.count));
	manager.on('resent', (info) => bump(figures.resent, info.reason, info.count));
	manager.on('identNotFound', () => figures.identNotFound++);
	manager.on('error', () => figures.errorEvents++);
	await send({ type: 'started' });
	t0 = performance.now();
	const receipt = manager.sendAps(tokens, PAYLOAD.aps);
	// A close that runs out of time drops what is left and says which in the receipt: reported, not lost.
	// Held only for those: a receipt keeps every outcome (300,000 in scenario 7's heap figure).
	if (scenario.then.call === 'close' && scenario.then.timeoutMs !== undefined) {
		void receipt?.settled.then((result) => {
			if (finished) return; // our own destroy() at the stop: those were pending then
			for (const token of result.dropped) {
				const i = tokenIndexOf(token);
				if (i < scenario.n && tokenAt(i) === token) droppedSince.push(i);
			}
		});
	}
	// The heap baseline holds the queue, not our input: what grows from here is the library's doing (e.g. 410 records).
	tokens = undefined;
	if (gc !== undefined) {
		gc();
		heap0 = process.memoryUsage().heapUsed;
	}
	const then = scenario.then;
	const settled = then.call === 'flush' ? manager.flushMessages() : manager.close(then.timeoutMs === undefined ? {} : { timeoutMs: then.timeoutMs });
	settled.then(
		() => {
			figures.settle = { call: then.call, afterMs: Math.round(performance.now() - t0), outcome: 'resolved' };
			if (scenario.stopWhenSettled) setTimeout(() => void finish(), 1000);
		},
		(error: unknown) => {
			if (finished) return; // our own destroy() rejecting it
			const pending = (error as { pending?: unknown }).pending;
			figures.settle = { call: then.call, afterMs: Math.round(performance.now() - t0), outcome: `rejected ${error instanceof Error ? error.name : String(error)}`, pending: typeof pending === 'number' ? pending : undefined };
		},
	);
	setTimeout(() => void finish(), task.boundMs);
}

// Last, once every constant above is initialised.
if (process.env['HOSTILE_TASK'] !== undefined) await child(JSON.parse(process.env['HOSTILE_TASK']) as Task);
else await main();
