/**
 * `npm run bench`: apns-worker side by side with the raw-TLS ceiling and node-apn 1.x, same gateway
 * process, same workloads, same run, clients alternating (A B C A B C …). Prints a table and writes
 * bench/results/latest.json (a partial run — --only, --quick or --reps — writes bench/results/partial.json instead,
 * so the committed full results are never replaced by a subset).
 *
 * Elapsed time is measured the same way for every client: from the moment it starts sending to the
 * moment the gateway has accepted every notification it should accept. (A client that loses some never
 * gets there: its run ends when the gateway has seen no progress for STALL_MS, and counts as incomplete.)
 *
 * Options: --reps N (every workload; default 3, 2 for 1M, 5 for HTTP/2), --only TEXT (workloads whose name contains TEXT), --quick (1 rep, no 1M).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { isRejected, makeCerts, type Certs, type ClientMessage, type ClientName, type ClientTask, type ServerPoll, type ServerProgress, type ServerRequest, type Workload } from './common.js';

const STALL_MS = 5000;
/** A run ends after this long even while it still progresses (node-apn 1.x needs far longer for 1M). */
const HARD_LIMIT_MS = 60_000;

const WORKLOADS: readonly Workload[] = [
	{ name: 'clean 100k', n: 100_000, faults: {}, clients: ['raw', 'worker', 'node-apn'] },
	{ name: 'clean 1M', n: 1_000_000, faults: {}, clients: ['raw', 'worker', 'node-apn'], reps: 2 },
	{ name: '1 invalid per 500 (20k)', n: 20_000, faults: { rejectEvery: 500 }, clients: ['worker', 'node-apn'] },
	{ name: '1 invalid per 100 (20k)', n: 20_000, faults: { rejectEvery: 100 }, clients: ['worker', 'node-apn'] },
	{ name: 'status 10 every 3,000 (20k)', n: 20_000, faults: { shutdownEvery: 3000 }, clients: ['worker', 'node-apn'] },
	{ name: 'silent drop every 3,000 (20k)', n: 20_000, faults: { silentDropEvery: 3000 }, clients: ['worker', 'node-apn'] },
	// Five reps: on two shared cores a single HTTP/2 run swings by ±15%.
	{ name: 'HTTP/2 clean 50k', n: 50_000, faults: {}, protocol: 'http2', clients: ['h2-bare', 'h2-worker', 'parse-apn', 'apns2'], reps: 5 },
	{ name: 'HTTP/2 1% 410 + 1% 500 (50k)', n: 50_000, faults: { rejectEvery: 100, error500Every: 100 }, protocol: 'http2', clients: ['h2-bare', 'h2-worker', 'parse-apn', 'apns2'], reps: 5 },
];
const MEMORY: Workload = { name: 'memory: 1M queued, gateway unreachable', n: 1_000_000, faults: {}, clients: ['worker', 'node-apn'] };

interface Run {
	workload: string;
	client: ClientName;
	rep: number;
	completed: boolean;
	elapsedMs: number;
	perSecond: number;
	/** Never accepted by the gateway and never reported failed to the caller: silently lost. */
	lost: number;
	/** Never accepted by the gateway (reported failed or not). */
	undelivered: number;
	duplicated: number;
	deliveredRejected: number;
	errorsReported: number;
	errorsExpected: number;
	reconnects: number;
	gatewayConnections: number;
	peakRssBytes: number;
	/** RSS with Node and the input tokens only, before the client's library was loaded. */
	baselineRssBytes: number;
}

interface MemoryRun {
	client: ClientName;
	n: number;
	heapBytesPerNotification: number;
	heapAndBuffersBytesPerNotification: number;
	peakRssBytes: number;
}

const here = (file: string): string => fileURLToPath(new URL(file, import.meta.url));

/** The gateway process and a request/answer helper (one request at a time). */
class GatewayProcess {
	readonly #child: ChildProcess;
	#waiting: ((message: unknown) => void) | undefined;

	constructor(certs: Certs) {
		this.#child = fork(here('./server.js'), { env: { ...process.env, BENCH_CERTS: JSON.stringify(certs) }, stdio: 'inherit' });
		this.#child.on('message', (message) => {
			const resolve = this.#waiting;
			this.#waiting = undefined;
			resolve?.(message);
		});
	}

	ready(): Promise<void> {
		return new Promise((resolve) => (this.#waiting = () => resolve()));
	}

	request<T>(request: ServerRequest): Promise<T> {
		return new Promise<T>((resolve) => {
			this.#waiting = resolve as (message: unknown) => void;
			this.#child.send(request);
		});
	}

	stop(): Promise<void> {
		return new Promise((resolve) => {
			this.#child.once('exit', () => resolve());
			this.#child.send({ type: 'stop' } satisfies ServerRequest);
		});
	}
}

function startClient(task: ClientTask): { child: ChildProcess; next: () => Promise<ClientMessage> } {
	const child = fork(here('./client.js'), {
		env: { ...process.env, BENCH_TASK: JSON.stringify(task), DEBUG: '' },
		execArgv: task.memory ? ['--expose-gc'] : [],
		stdio: 'inherit',
	});
	const inbox: ClientMessage[] = [];
	const waiters: Array<(m: ClientMessage) => void> = [];
	child.on('message', (m: ClientMessage) => {
		const w = waiters.shift();
		if (w) w(m);
		else inbox.push(m);
	});
	const next = (): Promise<ClientMessage> => {
		const m = inbox.shift();
		return m ? Promise.resolve(m) : new Promise((resolve) => waiters.push(resolve));
	};
	return { child, next };
}

async function runOnce(gateway: GatewayProcess, certs: Certs, workload: Workload, client: ClientName, rep: number): Promise<Run> {
	const { port } = await gateway.request<{ port: number }>({ type: 'start', n: workload.n, faults: workload.faults, protocol: workload.protocol ?? 'binary' });
	const { child, next } = startClient({ client, workload, port, certs, memory: false });
	const exited = new Promise((resolve) => child.once('exit', resolve));
	const started = await next();
	if (started.type !== 'started') throw new Error(`${client}: expected 'started', got ${started.type}`);
	let progress: ServerProgress;
	for (;;) {
		await new Promise((resolve) => setTimeout(resolve, 20));
		progress = await gateway.request<ServerProgress>({ type: 'poll' });
		const now = Date.now();
		if (progress.completeAt !== undefined || now - progress.lastProgressAt > STALL_MS || now - started.at > HARD_LIMIT_MS) break;
	}
	child.send('finish');
	const result = await next();
	await exited;
	if (result.type !== 'result') throw new Error(`${client}: expected 'result', got ${result.type}`);
	const stats = await gateway.request<ServerPoll>({ type: 'stats' });
	const completed = progress.completeAt !== undefined;
	const elapsedMs = Math.max(1, (progress.completeAt ?? progress.lastProgressAt) - started.at);
	let errorsExpected = 0;
	for (let i = 0; i < workload.n; i++) if (isRejected(i, workload.faults)) errorsExpected++;
	const reported = new Set(result.failed);
	return {
		workload: workload.name,
		client,
		rep,
		completed,
		elapsedMs,
		perSecond: Math.round((progress.unique / elapsedMs) * 1000),
		lost: stats.missing.filter((i) => !reported.has(i)).length,
		undelivered: stats.lost,
		duplicated: stats.duplicated,
		deliveredRejected: stats.deliveredRejected,
		errorsReported: result.failed.length,
		errorsExpected,
		reconnects: result.reconnects,
		gatewayConnections: stats.connections,
		peakRssBytes: result.peakRssBytes,
		baselineRssBytes: result.baselineRssBytes,
	};
}

async function runMemory(certs: Certs, client: ClientName): Promise<MemoryRun> {
	// Port 9 on loopback: nothing listens there, so connects are refused and everything stays queued.
	const { child, next } = startClient({ client, workload: MEMORY, port: 9, certs, memory: true });
	const m = await next();
	child.kill();
	if (m.type !== 'memory') throw new Error(`${client}: expected 'memory', got ${m.type}`);
	return {
		client,
		n: m.n,
		heapBytesPerNotification: Math.round((m.heapBytes / m.n) * 10) / 10,
		heapAndBuffersBytesPerNotification: Math.round(((m.heapBytes + m.externalBytes) / m.n) * 10) / 10,
		peakRssBytes: m.peakRssBytes,
	};
}

function median(values: number[]): number {
	const sorted = [...values].sort((a, b) => a - b);
	const mid = sorted.length >> 1;
	return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** What a client's library added to its process: peak RSS over the RSS of Node plus the inputs. */
const growth = (r: Run): number => r.peakRssBytes - r.baselineRssBytes;
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number): string => `${Math.round(bytes / 1048576)} MB`;
const ratio = (r: number | undefined): string => (r === undefined ? '' : `${r.toFixed(r >= 10 ? 1 : 2)}×`);

async function main(): Promise<void> {
	const { values } = parseArgs({ options: { reps: { type: 'string' }, only: { type: 'string' }, quick: { type: 'boolean', default: false } } });
	const reps = Number(values.reps ?? (values.quick ? 1 : 3));
	const workloads = WORKLOADS.filter((w) => (values.only === undefined || w.name.includes(values.only)) && !(values.quick && w.n >= 1_000_000));
	const certs = makeCerts();
	// Peers that take no CA option trust the mock's CA through Node's extra CA file.
	const caFile = join(mkdtempSync(join(os.tmpdir(), 'apns-bench-')), 'ca.pem');
	writeFileSync(caFile, certs.ca);
	process.env['NODE_EXTRA_CA_CERTS'] = caFile;
	const gateway = new GatewayProcess(certs);
	await gateway.ready();

	const runs: Run[] = [];
	for (const workload of workloads) {
		const count = values.quick ? 1 : values.reps !== undefined ? reps : (workload.reps ?? reps);
		for (let rep = 1; rep <= count; rep++) {
			for (const client of workload.clients) {
				const run = await runOnce(gateway, certs, workload, client, rep);
				runs.push(run);
				process.stderr.write(`  ${workload.name} | ${client} #${rep}: ${fmt(run.perSecond)}/s${run.completed ? '' : ' (incomplete)'}, lost ${run.lost}, dup ${run.duplicated}\n`);
			}
		}
	}
	await gateway.stop();
	const memory: MemoryRun[] = [];
	if (values.only === undefined || MEMORY.name.includes(values.only)) {
		for (const client of MEMORY.clients) memory.push(await runMemory(certs, client));
	}

	// Summaries: medians per client, and medians of the per-rep ratios (rep i of A against rep i of B).
	const summary = workloads.flatMap((workload) =>
		workload.clients.map((client) => {
			const mine = runs.filter((r) => r.workload === workload.name && r.client === client);
			const ceiling = workload.clients[0] === 'raw' || workload.clients[0] === 'h2-bare' ? workload.clients[0] : undefined;
			const peer = workload.clients.includes('node-apn') ? 'node-apn' : workload.clients.includes('parse-apn') ? 'parse-apn' : undefined;
			const against = (other: ClientName | undefined): number | undefined => {
				if (other === undefined) return undefined;
				if (!workload.clients.includes(other) || other === client) return undefined;
				const ratios = mine.map((r) => r.perSecond / runs.find((o) => o.workload === workload.name && o.client === other && o.rep === r.rep)!.perSecond);
				return median(ratios);
			};
			return {
				workload: workload.name,
				client,
				perSecond: median(mine.map((r) => r.perSecond)),
				vsRaw: against(ceiling),
				vsNodeApn: against(peer),
				peakRssVsPeer: peer === undefined || peer === client ? undefined : median(mine.map((r) => r.peakRssBytes)) / median(runs.filter((o) => o.workload === workload.name && o.client === peer).map((o) => o.peakRssBytes)),
				rssGrowthVsPeer: peer === undefined || peer === client ? undefined : median(mine.map(growth)) / median(runs.filter((o) => o.workload === workload.name && o.client === peer).map(growth)),
				completedRuns: `${mine.filter((r) => r.completed).length}/${mine.length}`,
				lostMax: Math.max(...mine.map((r) => r.lost)),
				duplicatedMax: Math.max(...mine.map((r) => r.duplicated)),
				errorsReported: median(mine.map((r) => r.errorsReported)),
				errorsExpected: mine[0]!.errorsExpected,
				reconnects: median(mine.map((r) => r.reconnects)),
				peakRssBytes: median(mine.map((r) => r.peakRssBytes)),
				baselineRssBytes: median(mine.map((r) => r.baselineRssBytes)),
				rssGrowthBytes: median(mine.map(growth)),
				undeliveredMax: Math.max(...mine.map((r) => r.undelivered)),
			};
		}),
	);

	const machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
	const date = new Date().toISOString();
	const header = ['workload', 'client', 'notif/s', 'vs ceiling', 'vs peer', 'done', 'lost', 'dup', 'errors (expected)', 'reconnects', 'peak RSS (vs peer)', 'RSS growth (vs peer)'];
	const rows = summary.map((s) => [
		s.workload,
		s.client,
		fmt(s.perSecond),
		ratio(s.vsRaw),
		ratio(s.vsNodeApn),
		s.completedRuns,
		String(s.lostMax),
		String(s.duplicatedMax),
		s.errorsExpected === 0 && s.errorsReported === 0 ? '0' : `${s.errorsReported} (${s.errorsExpected})`,
		String(s.reconnects),
		`${mb(s.peakRssBytes)}${s.peakRssVsPeer === undefined ? '' : ` (${s.peakRssVsPeer.toFixed(2)}×)`}`,
		`${mb(s.rssGrowthBytes)}${s.rssGrowthVsPeer === undefined ? '' : ` (${s.rssGrowthVsPeer.toFixed(2)}×)`}`,
	]);
	const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
	const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
	const out: string[] = [];
	out.push(`apns-worker benchmark — ${date.slice(0, 10)}, ${machine.cores} cores (${machine.cpu}), Node ${machine.node}; gateway in its own process; clients alternating; medians over the runs counted in 'done'`);
	out.push('ceiling: raw TLS (binary) or bare node:http2 with 1,000 streams in flight (HTTP/2); peer: node-apn 1.7.8 (binary) or @parse/node-apn (HTTP/2).');
	out.push('lost: never accepted by the gateway and never reported failed (silently lost). RSS growth: peak RSS minus the RSS of Node plus the input tokens, taken before the client library is loaded.');
	out.push('');
	out.push(line(header));
	out.push(line(widths.map((w) => '-'.repeat(w))));
	for (const r of rows) out.push(line(r));
	if (memory.length > 0) {
		out.push('');
		out.push(line(['memory: 1M tokens × 1 payload queued, gateway unreachable', 'client', 'heap B/notif', 'heap+buffers B/notif', 'peak RSS'].map(String)));
		for (const m of memory) out.push(`| ${MEMORY.name} | ${m.client} | ${m.heapBytesPerNotification} | ${m.heapAndBuffersBytesPerNotification} | ${mb(m.peakRssBytes)} |`);
	}
	process.stdout.write(`${out.join('\n')}\n`);
	const partial = values.only !== undefined || values.quick || values.reps !== undefined;
	const file = `bench/results/${partial ? 'partial' : 'latest'}.json`;
	mkdirSync(here('../../bench/results'), { recursive: true });
	writeFileSync(here(`../../${file}`), `${JSON.stringify({ date, machine, gateway: 'separate process', options: values, summary, memory, runs }, null, '\t')}\n`);
	process.stdout.write(`\nWrote ${file}\n`);
}

await main();
