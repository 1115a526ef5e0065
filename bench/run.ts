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
 * The burst workload (issue 9, outcome 8) hands 200,000 notifications with a payload each to the client in
 * one synchronous loop; the client measures, in its own process, the heap it holds right after the loop
 * (after forced GCs: live objects only) and its peak RSS over the run, both over a baseline taken right
 * before the loop (see BurstMeter in client.ts). Its rows get a table of their own.
 *
 * The threads workloads (issue 10) compare backend 'threaded' with 'evented': the caller's event-loop delay and the
 * CPU of the client and gateway processes besides throughput (see threadsTable).
 *
 * Options: --reps N (every workload; default 3, 2 for 1M, 5 for HTTP/2 and the threads rows), --only TEXT (workloads whose name contains TEXT), --quick (1 rep, no 1M,
 * a 2-minute soak), --soak-minutes M (the daemon soak's length; default 20), --soak-store sqlite|redis (one store only).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { REDIS_MISSING, startRedis } from '../test/support/redis.js';
import { acceptAndPending, h2loadMissing, h2loadPosts, metricsOf, pendingOf, PER_REQUEST, postAll, postPaced, provision, rssOf, startDaemon, type Daemon } from './daemon.js';
import { isRejected, LOOP_RESOLUTION_MS, makeCerts, PACED_CHUNK, PACED_PENDING, type BurstMeasure, type Certs, type ClientMessage, type ClientName, type ClientTask, type LoopMeasure, type ServerPoll, type ServerProgress, type ServerRequest, type Workload } from './common.js';
import { BROADCAST_NAME, broadcastTable, runBroadcasts } from './broadcasts.js';

const STALL_MS = 5000;
/** A run ends after this long even while it still progresses (node-apn 1.x needs far longer for 1M). */
const HARD_LIMIT_MS = 60_000;
/**
 * Then the client has this long to hand back what it saw, or it is killed (and what it never reported
 * counts as lost): @parse/node-apn winding down 200k cancelled streams has spun for minutes inside
 * nghttp2 (nghttp2_session_add_rst_stream, once per pending reset, per write).
 */
const RESULT_LIMIT_MS = 60_000;

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
	// Issue 9, outcome 8: bounded memory when everything is handed over at once, every payload distinct.
	{ name: 'HTTP/2 burst: 200k distinct payloads at once', n: 200_000, faults: {}, protocol: 'http2', clients: ['h2-bare', 'h2-worker', 'parse-apn'], burst: true },
	// Issue 10: backend 'threaded' (1 and 2 worker threads) against 'evented', same workloads, alternating.
	// Five reps each: rep by rep, the binary ratios swing from 0.6x to 1.1x on two shared cores, HTTP/2's by ±15%.
	{ name: 'threads: clean 100k', n: 100_000, faults: {}, clients: ['worker', 'worker-threaded', 'worker-threaded2', 'worker-threaded2-all'], threads: true, reps: 5 },
	// A 100k binary run lasts a quarter of a second, a worker thread's start-up a fifth of that: 1M shows the sustained rate.
	{ name: 'threads: clean 1M', n: 1_000_000, faults: {}, clients: ['worker', 'worker-threaded', 'worker-threaded2', 'worker-threaded2-all'], threads: true, reps: 5 },
	{ name: 'threads: HTTP/2 clean 50k', n: 50_000, faults: {}, protocol: 'http2', clients: ['h2-worker', 'h2-threaded', 'h2-threaded2', 'h2-threaded2-all'], threads: true, reps: 5 },
	{ name: 'threads: HTTP/2 200k paced', n: 200_000, faults: {}, protocol: 'http2', clients: ['h2-worker', 'h2-threaded', 'h2-threaded2', 'h2-threaded2-all'], threads: true, paced: true, reps: 5 },
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
	/** The client ended without handing back a result (killed at RESULT_LIMIT_MS, or crashed): how. */
	ended?: string;
	/** Never accepted by the gateway (reported failed or not). */
	undelivered: number;
	duplicated: number;
	deliveredRejected: number;
	errorsReported: number;
	errorsExpected: number;
	reconnects: number;
	gatewayConnections: number;
	peakRssBytes: number;
	/** RSS with Node and the input tokens only, before the client's library was loaded (burst: right before the hand-over loop). */
	baselineRssBytes: number;
	burst?: BurstRun;
	/** The client's event-loop delay and CPU, first send to last settlement (see LoopMeter in client.ts). */
	loop?: LoopMeasure;
	/** The gateway process's CPU from the poll right after the client's 'started' to the poll that saw the run end. */
	server: { cpuMs: number; wallMs: number };
	/** From the client's start to the gateway's first accepted notification: library, thread and connection start-up. */
	firstDeliveryMs: number;
	/** Throughput from the first accepted notification to the last: the rate once it runs, start-up left out. */
	steadyPerSecond: number;
	/** 'threaded': from the manager's construction to its threads being up; the run's clock starts after. */
	threadsReadyMs?: number;
	/** 'threaded': the most threads taking work at once (the `threadsInUse` event; `minThreads` if none came). */
	threadsUsed?: number;
	/** apns-worker: its events until the run ended, counted (re-sends by reason, disconnections by reason, thread exits). */
	events?: Record<string, number>;
}

/** A burst run's memory, per queued notification and over the baseline taken right before the hand-over loop. */
interface BurstRun {
	/** Live JS heap right after the hand-over loop (after forced GCs), over the baseline, per notification. */
	heapBytesPerNotification: number;
	/** The same plus ArrayBuffer memory (Buffers: encoded payloads, token bytes, typed arrays). */
	heapAndBuffersBytesPerNotification: number;
	/** heapUsed right after the loop before any forced GC (live heap plus the loop's uncollected garbage), per notification. */
	heapRawBytesPerNotification: number;
	/** Peak RSS over the run minus the baseline RSS: the kernel's high-water mark when it rose after the baseline, else the highest sample. */
	peakRssGrowthBytes: number;
	/** The highest RSS sampled every 25 ms, minus the baseline. */
	sampledPeakRssGrowthBytes: number;
	/** The highest heapUsed sampled, minus the baseline: live queue plus the garbage the GC let build up. */
	peakHeapGrowthBytes: number;
	loopMs: number;
	/** Measuring after the loop (forced GCs): left out of elapsedMs. */
	pauseMs: number;
	measure: BurstMeasure;
}

function burstRun(m: BurstMeasure): BurstRun {
	const perNotification = (bytes: number): number => Math.round((bytes / m.n) * 10) / 10;
	const kernelRose = m.kernelPeakRss > m.kernelPeakRssAtBaseline;
	// Not final (the client was killed): its samples stop at the hand-over; only the kernel's peak at the kill counts.
	const sampled = (bytes: number): number => (m.final ? bytes : Number.NaN);
	return {
		heapBytesPerNotification: perNotification(m.after.heapUsed - m.baseline.heapUsed),
		heapAndBuffersBytesPerNotification: perNotification(m.after.heapUsed + m.after.arrayBuffers - m.baseline.heapUsed - m.baseline.arrayBuffers),
		heapRawBytesPerNotification: perNotification(m.heapUsedRaw - m.baseline.heapUsed),
		peakRssGrowthBytes: (Number.isNaN(m.kernelPeakRss) ? sampled(m.sampledPeakRss) : Math.max(m.sampledPeakRss, kernelRose ? m.kernelPeakRss : 0)) - m.baseline.rss,
		sampledPeakRssGrowthBytes: sampled(m.sampledPeakRss - m.baseline.rss),
		peakHeapGrowthBytes: sampled(m.sampledPeakHeapUsed - m.baseline.heapUsed),
		loopMs: m.loopMs,
		pauseMs: m.pauseMs,
		measure: m,
	};
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

/** What a client process says, or that it ended without saying it (a crash must not hang the run). */
type FromClient = ClientMessage | { type: 'exit'; code: number | null; signal: NodeJS.Signals | null };

function startClient(task: ClientTask): { child: ChildProcess; next: () => Promise<FromClient> } {
	const child = fork(here('./client.js'), {
		env: { ...process.env, BENCH_TASK: JSON.stringify(task), DEBUG: '' },
		// BENCH_CLIENT_FLAGS: Node flags for the client processes, e.g. '--cpu-prof --cpu-prof-dir=/tmp/prof' (a profile per thread).
		execArgv: [...(task.memory || task.workload.burst === true ? ['--expose-gc'] : []), ...(process.env['BENCH_CLIENT_FLAGS'] ?? '').split(' ').filter((flag) => flag !== '')],
		stdio: 'inherit',
	});
	const inbox: FromClient[] = [];
	const waiters: Array<(m: FromClient) => void> = [];
	let ended: FromClient | undefined;
	child.on('message', (m: ClientMessage) => {
		const w = waiters.shift();
		if (w) w(m);
		else inbox.push(m);
	});
	// 'close' comes after the IPC channel is drained: every message the client sent has arrived by then.
	child.once('close', (code, signal) => {
		ended = { type: 'exit', code, signal };
		for (const w of waiters.splice(0)) w(ended);
	});
	const next = (): Promise<FromClient> => {
		const m = inbox.shift() ?? ended;
		return m ? Promise.resolve(m) : new Promise((resolve) => waiters.push(resolve));
	};
	return { child, next };
}

async function runOnce(gateway: GatewayProcess, certs: Certs, workload: Workload, client: ClientName, rep: number): Promise<Run> {
	const { port } = await gateway.request<{ port: number }>({ type: 'start', n: workload.n, faults: workload.faults, protocol: workload.protocol ?? 'binary' });
	const { child, next } = startClient({ client, workload, port, certs, memory: false });
	const exited = new Promise((resolve) => child.once('exit', resolve));
	const started = await next();
	if (started.type !== 'started') throw new Error(`${client}: expected 'started', got ${JSON.stringify(started)}`);
	const serverFrom = await gateway.request<ServerProgress>({ type: 'poll' });
	const serverFromAt = performance.now();
	// A burst client says what its heap holds right after the hand-over loop, before it may get stuck.
	const handedOver = workload.burst === true ? await next() : undefined;
	if (handedOver !== undefined && handedOver.type !== 'handedOver') throw new Error(`${client}: expected 'handedOver', got ${JSON.stringify(handedOver)}`);
	let progress: ServerProgress;
	for (;;) {
		await new Promise((resolve) => setTimeout(resolve, 20));
		progress = await gateway.request<ServerProgress>({ type: 'poll' });
		const now = Date.now();
		if (progress.completeAt !== undefined || now - progress.lastProgressAt > STALL_MS || now - started.at > HARD_LIMIT_MS) break;
	}
	const server = { cpuMs: (progress.cpuMicros - serverFrom.cpuMicros) / 1000, wallMs: performance.now() - serverFromAt };
	child.send('finish');
	let peakAtKill = Number.NaN;
	const deadline = setTimeout(() => {
		peakAtKill = peakRssOf(child.pid);
		child.kill('SIGKILL');
	}, RESULT_LIMIT_MS);
	const answer = await next();
	clearTimeout(deadline);
	await exited;
	// No result: nothing it was told failed is known, so everything the gateway never accepted is lost.
	const result = answer.type === 'result' ? answer : { type: 'result' as const, failed: [], reconnects: 0, peakRssBytes: 0, baselineRssBytes: 0, doneAt: Date.now(), burst: undefined };
	const ended = answer.type === 'exit' ? (answer.signal === 'SIGKILL' ? `killed: no result ${RESULT_LIMIT_MS / 1000} s after the run ended` : `ended without a result (code ${answer.code}, signal ${answer.signal})`) : undefined;
	if (answer.type !== 'result' && answer.type !== 'exit') throw new Error(`${client}: expected 'result', got ${JSON.stringify(answer)}`);
	const stats = await gateway.request<ServerPoll>({ type: 'stats' });
	const completed = progress.completeAt !== undefined && ended === undefined;
	// Killed: the heap after the loop as it said then, and its peak RSS as the kernel had it at the kill.
	const measure = result.burst ?? (handedOver?.type === 'handedOver' ? { ...handedOver.measure, kernelPeakRss: peakAtKill } : undefined);
	const burst = measure === undefined ? undefined : burstRun(measure);
	const elapsedMs = Math.max(1, (progress.completeAt ?? progress.lastProgressAt) - started.at - (burst?.pauseMs ?? 0));
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
		...(ended === undefined ? {} : { ended }),
		undelivered: stats.lost,
		duplicated: stats.duplicated,
		deliveredRejected: stats.deliveredRejected,
		errorsReported: result.failed.length,
		errorsExpected,
		reconnects: result.reconnects,
		gatewayConnections: stats.connections,
		peakRssBytes: result.peakRssBytes,
		baselineRssBytes: result.baselineRssBytes,
		...(burst === undefined ? {} : { burst }),
		...(result.loop === undefined ? {} : { loop: result.loop }),
		...(result.events === undefined ? {} : { events: result.events }),
		...(result.threadsReadyMs === undefined ? {} : { threadsReadyMs: result.threadsReadyMs }),
		...(result.threadsUsed === undefined ? {} : { threadsUsed: result.threadsUsed }),
		server,
		firstDeliveryMs: (progress.firstAt ?? Number.NaN) - started.at,
		steadyPerSecond: Math.round(((progress.unique - 1) / Math.max(1, (progress.completeAt ?? progress.lastProgressAt) - (progress.firstAt ?? Number.NaN))) * 1000),
	};
}

async function runMemory(certs: Certs, client: ClientName): Promise<MemoryRun> {
	// Port 9 on loopback: nothing listens there, so connects are refused and everything stays queued.
	const { child, next } = startClient({ client, workload: MEMORY, port: 9, certs, memory: true });
	const m = await next();
	child.kill();
	if (m.type !== 'memory') throw new Error(`${client}: expected 'memory', got ${JSON.stringify(m)}`);
	return {
		client,
		n: m.n,
		heapBytesPerNotification: Math.round((m.heapBytes / m.n) * 10) / 10,
		heapAndBuffersBytesPerNotification: Math.round(((m.heapBytes + m.externalBytes) / m.n) * 10) / 10,
		peakRssBytes: m.peakRssBytes,
	};
}

/** The kernel's RSS high-water mark of a live process (Linux), or NaN: for a client about to be killed. */
function peakRssOf(pid: number | undefined): number {
	try {
		const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
		return hwm === null ? Number.NaN : Number(hwm[1]) * 1024;
	} catch {
		return Number.NaN;
	}
}

/** An apns-worker run's events, for its progress line: ", resent workerLost 12, threadExit 1", or nothing. */
const events = (run: Run): string =>
	Object.entries(run.events ?? {})
		.map(([event, count]) => `, ${event} ${count}`)
		.join('');

/** The runs that handed back a result (a killed or crashed client measured nothing). */
const measured = (runs: Run[]): Run[] => runs.filter((r) => r.ended === undefined);

/** NaN for no values. */
function median(values: number[]): number {
	if (values.length === 0) return Number.NaN;
	const sorted = [...values].sort((a, b) => a - b);
	const mid = sorted.length >> 1;
	return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** What a client's library added to its process: peak RSS over the RSS of Node plus the inputs. */
const growth = (r: Run): number => r.peakRssBytes - r.baselineRssBytes;
const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const mb = (bytes: number): string => (Number.isNaN(bytes) ? '—' : `${Math.round(bytes / 1048576)} MB`);
const ratio = (r: number | undefined): string => (r === undefined ? '' : Number.isFinite(r) ? `${r.toFixed(r >= 10 ? 1 : 2)}×` : '—');

/** Medians of the burst figures of a client's runs. */
type BurstSummary = Omit<BurstRun, 'pauseMs' | 'measure'> & { peakRssGrowthVsPeer: number | undefined };

/** Medians of a client's burst runs; peak RSS growth against the peer's median. */
function burstSummary(mine: Run[], peer: Run[] | undefined): BurstSummary {
	// A killed client's figures come from what it said after the loop and the kernel's peak at the kill.
	const of = (runs: Run[], pick: (b: BurstRun) => number): number => median(runs.flatMap((r) => (r.burst === undefined ? [] : [pick(r.burst)])).filter((v) => !Number.isNaN(v)));
	const growthOf = (b: BurstRun): number => b.peakRssGrowthBytes;
	return {
		heapBytesPerNotification: of(mine, (b) => b.heapBytesPerNotification),
		heapAndBuffersBytesPerNotification: of(mine, (b) => b.heapAndBuffersBytesPerNotification),
		heapRawBytesPerNotification: of(mine, (b) => b.heapRawBytesPerNotification),
		peakRssGrowthBytes: of(mine, growthOf),
		sampledPeakRssGrowthBytes: of(mine, (b) => b.sampledPeakRssGrowthBytes),
		peakHeapGrowthBytes: of(mine, (b) => b.peakHeapGrowthBytes),
		peakRssGrowthVsPeer: peer === undefined || peer.length === 0 ? undefined : of(mine, growthOf) / of(peer, growthOf),
		loopMs: of(mine, (b) => b.loopMs),
	};
}

/** What every table shows first for a client in a workload: throughput and what became of the notifications. */
interface DeliveryRow {
	workload: string;
	client: ClientName;
	perSecond: number;
	vsRaw: number | undefined;
	vsNodeApn: number | undefined;
	completedRuns: string;
	lostMax: number;
	duplicatedMax: number;
	errorsReported: number;
	errorsExpected: number;
}

const DELIVERY_HEADER = ['workload', 'client', 'notif/s', 'vs ceiling', 'vs peer', 'done', 'lost', 'dup', 'errors (expected)'];

function deliveryCells(s: DeliveryRow): string[] {
	return [
		s.workload,
		s.client,
		fmt(s.perSecond),
		ratio(s.vsRaw),
		ratio(s.vsNodeApn),
		s.completedRuns,
		String(s.lostMax),
		String(s.duplicatedMax),
		s.errorsExpected === 0 && s.errorsReported === 0 ? '0' : `${s.errorsReported} (${s.errorsExpected})`,
	];
}

/** A Markdown table, its columns padded to their widest cell. */
function table(header: string[], rows: string[][]): string[] {
	const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
	const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
	return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)];
}

/** The burst rows: throughput and losses as in the main table, then memory per queued notification and peak RSS growth. */
function burstTable(rows: Array<DeliveryRow & { burst: BurstSummary }>): string[] {
	const header = [...DELIVERY_HEADER, 'heap B/notif', 'heap+buffers B/notif', 'peak RSS growth (vs peer)', 'hand-over loop'];
	const cells = rows.map((s) => [
		...deliveryCells(s),
		Number.isNaN(s.burst.heapBytesPerNotification) ? '—' : String(s.burst.heapBytesPerNotification),
		Number.isNaN(s.burst.heapAndBuffersBytesPerNotification) ? '—' : String(s.burst.heapAndBuffersBytesPerNotification),
		`${mb(s.burst.peakRssGrowthBytes)}${s.burst.peakRssGrowthVsPeer === undefined || Number.isNaN(s.burst.peakRssGrowthVsPeer) ? '' : ` (${s.burst.peakRssGrowthVsPeer.toFixed(2)}×)`}`,
		Number.isNaN(s.burst.loopMs) ? '—' : `${fmt(s.burst.loopMs)} ms`,
	]);
	return [
		'burst: each notification its own payload, all handed to the client in one synchronous loop (one call per notification). Baseline: right before the loop',
		'(library loaded, client made, after GC). heap: live JS heap right after the loop (after forced GCs, before any answer), over the baseline, per notification;',
		'+buffers adds ArrayBuffer memory. peak RSS growth: the highest RSS over the run minus the baseline. notif/s leaves out the measuring pause.',
		`A client with no result ${RESULT_LIMIT_MS / 1000} s after the run ended is killed: its heap is what it said after the loop, its peak RSS the kernel's at the kill,`,
		'and whatever the gateway never accepted counts as lost (it was neither delivered nor reported failed by then).',
		'',
		...table(header, cells),
	];
}

/** Medians of a threads workload's figures for one client; ratios (median of rep-by-rep ratios) against the evented client. */
interface ThreadsSummary {
	vsEvented: number | undefined;
	/** As if the threads' start were part of the run: n over (their start + the run), against the evented rate. */
	coldVsEvented: number | undefined;
	/** From the manager's construction to its threads being up (before the first send). */
	threadsReadyMs: number | undefined;
	/** The fewest and most threads that took work at once, over the reps ('threaded'). */
	threadsUsed: { min: number; max: number } | undefined;
	firstDeliveryMs: number;
	steadyPerSecond: number;
	steadyVsEvented: number | undefined;
	delayMs: { p50: number; p99: number; max: number; mean: number };
	p99VsEvented: number | undefined;
	clientCpuMs: number;
	clientCpuPercent: number;
	/** Medians of the client's CPU by thread, in ms (undefined without /proc). */
	threadCpuMs: { caller: number; runtime: number; started: number } | undefined;
	callerBusyPercent: number;
	serverCpuMs: number;
	serverCpuPercent: number;
}

function threadsSummary(runs: Run[], ratios: Pick<ThreadsSummary, 'vsEvented' | 'coldVsEvented' | 'steadyVsEvented' | 'p99VsEvented'>): ThreadsSummary {
	const loops = runs.flatMap((r) => (r.loop === undefined ? [] : [r.loop]));
	const of = (pick: (l: LoopMeasure) => number): number => median(loops.map(pick));
	return {
		...ratios,
		threadsReadyMs: runs.every((r) => r.threadsReadyMs !== undefined) ? median(runs.map((r) => r.threadsReadyMs!)) : undefined,
		threadsUsed: runs.length > 0 && runs.every((r) => r.threadsUsed !== undefined) ? { min: Math.min(...runs.map((r) => r.threadsUsed!)), max: Math.max(...runs.map((r) => r.threadsUsed!)) } : undefined,
		firstDeliveryMs: median(runs.map((r) => r.firstDeliveryMs)),
		steadyPerSecond: median(runs.map((r) => r.steadyPerSecond)),
		delayMs: { p50: of((l) => l.delayMs.p50), p99: of((l) => l.delayMs.p99), max: of((l) => l.delayMs.max), mean: of((l) => l.delayMs.mean) },
		clientCpuMs: of((l) => l.cpuMs),
		clientCpuPercent: of((l) => (100 * l.cpuMs) / l.wallMs),
		threadCpuMs: loops.every((l) => l.threadCpuMs !== undefined) && loops.length > 0 ? { caller: of((l) => l.threadCpuMs!.caller), runtime: of((l) => l.threadCpuMs!.runtime), started: of((l) => l.threadCpuMs!.started) } : undefined,
		callerBusyPercent: of((l) => (100 * l.callerBusyMs) / l.wallMs),
		serverCpuMs: median(runs.map((r) => r.server.cpuMs)),
		serverCpuPercent: median(runs.map((r) => (100 * r.server.cpuMs) / r.server.wallMs)),
	};
}

/** The threads rows: throughput and losses, the caller's event-loop delay, and the CPU of each process. */
function threadsTable(rows: Array<DeliveryRow & { threads: ThreadsSummary }>): string[] {
	const ms = (v: number): string => (Number.isNaN(v) ? '—' : v.toFixed(1));
	const cpu = (cpuMs: number, percent: number): string => `${(cpuMs / 1000).toFixed(2)} s (${Math.round(percent)}%)`;
	const header = ['workload', 'client', 'notif/s', 'vs evented', 'threads working', 'threads up', 'vs evented, threads\' start included', 'first delivery', 'steady notif/s (vs evented)', 'done', 'lost', 'dup', 'loop delay p50 / p99 / max (mean), ms', 'p99 vs evented', 'client CPU (% of a core)', 'by thread: caller / runtime / workers', 'caller thread busy', 'gateway CPU (% of a core)'];
	const cells = rows.map((s) => {
		const t = s.threads;
		return [
			s.workload,
			s.client,
			fmt(s.perSecond),
			ratio(t.vsEvented),
			t.threadsUsed === undefined ? '' : t.threadsUsed.min === t.threadsUsed.max ? String(t.threadsUsed.min) : `${t.threadsUsed.min}-${t.threadsUsed.max}`,
			t.threadsReadyMs === undefined ? '' : `${fmt(t.threadsReadyMs)} ms`,
			ratio(t.coldVsEvented),
			`${fmt(t.firstDeliveryMs)} ms`,
			`${fmt(t.steadyPerSecond)}${t.steadyVsEvented === undefined ? '' : ` (${ratio(t.steadyVsEvented)})`}`,
			s.completedRuns,
			String(s.lostMax),
			String(s.duplicatedMax),
			`${ms(t.delayMs.p50)} / ${ms(t.delayMs.p99)} / ${ms(t.delayMs.max)} (${ms(t.delayMs.mean)})`,
			ratio(t.p99VsEvented),
			cpu(t.clientCpuMs, t.clientCpuPercent),
			t.threadCpuMs === undefined ? '—' : `${(t.threadCpuMs.caller / 1000).toFixed(2)} / ${(t.threadCpuMs.runtime / 1000).toFixed(2)} / ${(t.threadCpuMs.started / 1000).toFixed(2)} s`,
			`${Math.round(t.callerBusyPercent)}%`,
			cpu(t.serverCpuMs, t.serverCpuPercent),
		];
	});
	return [
		"threads: backend 'threaded' (1 or 2 worker threads) against 'evented' (the first row of each workload), alternating in the same run. -threaded2: two threads, the",
		'second taking work only while the first is compute-bound (the default, minThreads 1); -threaded2-all: both always take work (minThreads 2). threads working:',
		'the most threads that took work at once in a rep (the threadsInUse event), fewest-most over the reps. threads up: from the',
		"manager's construction to its last thread's threadReady event; the first send waits for it (a thread's start is paid once per manager, as the library's",
		"load is), so the figures after it leave it out; 'threads' start included' puts it back: n over (threads up + the run). Figures from the first",
		'send to the last settlement the client saw (or to the gateway having everything, whichever came first). loop delay: how late the caller\'s event loop ran',
		`a ${LOOP_RESOLUTION_MS} ms timer (perf_hooks.monitorEventLoopDelay, resolution ${LOOP_RESOLUTION_MS} ms, the resolution taken off). client CPU: process.cpuUsage() of the client`,
		'process (all its threads); by thread (Linux /proc, 10 ms ticks): the caller\'s thread / the runtime\'s (V8\'s GC and compiler helpers, libuv) / those the client',
		'started (the worker threads); caller thread busy: performance.eventLoopUtilization() of its main thread, % of the wall time. gateway CPU: the mock\'s process,',
		'from the poll right after the client started to the poll that saw the run end. % of a core: CPU time over wall time (2 cores: 200% is all of them).',
		'first delivery: from the client\'s start to the gateway\'s first accepted notification (connections starting; threads are up by then); steady: the rate from there on.',
		`paced: ${PACED_CHUNK.toLocaleString('en-US')} tokens per sendAps call, each call in a macrotask of its own (setImmediate between), each after`,
		`await onPendingBelow(${PACED_PENDING.toLocaleString('en-US')}); the others: every token in one sendAps call (its enqueue is in the first delay sample).`,
		'',
		...table(header, cells),
	];
}

/** Issue 11: the daemon (bench/daemon.ts). */
const DAEMON_NAME = 'daemon: accept, 1M pending, end to end';

interface DaemonResults {
	accept: Awaited<ReturnType<typeof acceptAndPending>>;
	acceptN: number;
	e2eN: number;
	/** Per rep: the library alone ('h2-worker'), then the daemon, same mock process, same count. */
	e2e: Array<{ library: number; daemon: number; lost: number; duplicated: number }>;
}

async function runDaemon(gateway: GatewayProcess, certs: Certs, reps: number, quick: boolean): Promise<DaemonResults> {
	const acceptN = quick ? 200_000 : 1_000_000;
	const accept = await acceptAndPending(certs, acceptN);
	process.stderr.write(`  ${DAEMON_NAME} | accept: ${fmt(accept.acceptPerSecond)}/s, ${fmt(accept.pending)} pending, peak RSS ${mb(accept.peakRssAccepting)} accepting, ${mb(accept.peakRssRestarted)} restarted\n`);
	const e2eN = quick ? 50_000 : 100_000;
	const workload: Workload = { name: `${DAEMON_NAME} (library)`, n: e2eN, faults: {}, protocol: 'http2', clients: ['h2-worker'] };
	const e2e: DaemonResults['e2e'] = [];
	for (let rep = 1; rep <= reps; rep++) {
		const library = (await runOnce(gateway, certs, workload, 'h2-worker', rep)).perSecond;
		const { port } = await gateway.request<{ port: number }>({ type: 'start', n: e2eN, faults: {}, protocol: 'http2' });
		const dir = mkdtempSync(join(os.tmpdir(), 'apns-bench-daemon-'));
		const d = await startDaemon(dir);
		await provision(d, 'e2e', certs, { host: '127.0.0.1', port });
		const t0 = Date.now();
		await postAll(d, 'e2e', 0, e2eN);
		let progress: ServerProgress;
		for (;;) {
			await new Promise((resolve) => setTimeout(resolve, 20));
			progress = await gateway.request<ServerProgress>({ type: 'poll' });
			if (progress.completeAt !== undefined || Date.now() - progress.lastProgressAt > STALL_MS) break;
		}
		const stats = await gateway.request<ServerPoll>({ type: 'stats' });
		await d.stop();
		rmSync(dir, { recursive: true, force: true });
		const daemonRate = progress.completeAt === undefined ? 0 : (e2eN / Math.max(1, progress.completeAt - t0)) * 1000;
		e2e.push({ library, daemon: daemonRate, lost: stats.lost, duplicated: stats.duplicated });
		process.stderr.write(`  ${DAEMON_NAME} | end to end #${rep}: library ${fmt(library)}/s, daemon ${fmt(daemonRate)}/s, lost ${stats.lost}, dup ${stats.duplicated}\n`);
	}
	return { accept, acceptN, e2eN, e2e };
}

function daemonTable(r: DaemonResults): string[] {
	const ratio = median(r.e2e.map((e) => e.daemon / e.library));
	return [
		`daemon: 'apns-worker serve' as a child process, SQLite (WAL, synchronous FULL) in a temporary directory. accept: POSTs of ${PER_REQUEST} tokens, 4 in flight, to an app whose gateway is`,
		`unreachable (nothing sent: the API and the store alone), ${fmt(r.acceptN)} in all; peak RSS: the kernel's high-water mark of the daemon while accepting them, and after a restart`,
		`with them pending. end to end: first POST to the HTTP/2 mock (its own process) having all ${fmt(r.e2eN)}, against the library alone ('h2-worker') to the same mock, alternating; medians.`,
		'',
		...table(
			['figure', 'value', 'target'],
			[
				['accepted, durably stored', `${fmt(r.accept.acceptPerSecond)}/s`, '≥ 20,000/s'],
				['pending after the accept run / after a restart', `${fmt(r.accept.pending)} / ${fmt(r.accept.pendingAfterRestart)}`, `${fmt(r.acceptN)}`],
				[`peak RSS, accepting ${fmt(r.acceptN)}`, mb(r.accept.peakRssAccepting), '≤ 300 MB'],
				[`peak RSS, restarted with ${fmt(r.acceptN)} pending`, mb(r.accept.peakRssRestarted), '≤ 300 MB'],
				['end to end, daemon', `${fmt(median(r.e2e.map((e) => e.daemon)))}/s`, ''],
				['end to end, library alone', `${fmt(median(r.e2e.map((e) => e.library)))}/s`, ''],
				['daemon vs library (median of per-rep ratios)', `${ratio.toFixed(2)}×`, '≥ 0.70×'],
				['lost / duplicated (max over reps)', `${Math.max(...r.e2e.map((e) => e.lost))} / ${Math.max(...r.e2e.map((e) => e.duplicated))}`, '0'],
			],
		),
	];
}

/** Issue 26: sending goes on while POSTs keep arriving (a C load generator drives them). */
const STARVE_NAME = 'daemon: delivery while accepting (h2load)';
const STARVE_N = 200_000;
const STARVE_PER_REQUEST = 500;
const STARVE_CONNECTIONS = [4, 8] as const;

interface StarveRun {
	connections: number;
	/** h2load: requests done and answered 2xx, and its time. */
	requests: number;
	ok: number;
	acceptPerSecond: number;
	/** From h2load's start: the mock's first notification, in ms; how many it had when the POSTs ended, and 1 s in. */
	firstDeliveryMs: number | undefined;
	receivedWhilePosting: number;
	receivedFirstSecond: number;
	/** From h2load's start to the mock having every notification. */
	perSecond: number;
	lost: number;
	duplicated: number;
}

interface StarveResults {
	/** Per rep: the library alone ('h2-worker'), same mock process, same count. */
	library: number[];
	runs: StarveRun[];
}

async function starveOnce(gateway: GatewayProcess, certs: Certs, connections: number): Promise<StarveRun> {
	const requests = STARVE_N / STARVE_PER_REQUEST;
	// h2load sends one body again and again: the mock expects each of its tokens `requests` times.
	const { port } = await gateway.request<{ port: number }>({ type: 'start', n: STARVE_PER_REQUEST, faults: {}, protocol: 'http2', repeat: requests });
	const dir = mkdtempSync(join(os.tmpdir(), 'apns-bench-starve-'));
	const d = await startDaemon(dir);
	try {
		await provision(d, 'h2l', certs, { host: '127.0.0.1', port });
		const t0 = Date.now();
		let postsEnded: number | undefined;
		const posting = h2loadPosts(d, 'h2l', requests, STARVE_PER_REQUEST, connections).finally(() => (postsEnded = Date.now()));
		let receivedWhilePosting: number | undefined;
		let receivedFirstSecond = 0;
		let progress: ServerProgress;
		for (;;) {
			await new Promise((resolve) => setTimeout(resolve, 50));
			progress = await gateway.request<ServerProgress>({ type: 'poll' });
			if (Date.now() - t0 <= 1000) receivedFirstSecond = progress.unique;
			if (postsEnded !== undefined && receivedWhilePosting === undefined) receivedWhilePosting = progress.unique;
			if (progress.completeAt !== undefined) break;
			if (postsEnded !== undefined && Date.now() - progress.lastProgressAt > STALL_MS && Date.now() - postsEnded > STALL_MS) break;
		}
		const h = await posting;
		const stats = await gateway.request<ServerPoll>({ type: 'stats' });
		return {
			connections,
			requests: h.requests,
			ok: h.ok,
			acceptPerSecond: (h.ok * STARVE_PER_REQUEST * 1000) / h.ms,
			firstDeliveryMs: progress.firstAt === undefined ? undefined : progress.firstAt - t0,
			receivedWhilePosting: receivedWhilePosting ?? progress.unique,
			receivedFirstSecond,
			perSecond: progress.completeAt === undefined ? 0 : (STARVE_N / Math.max(1, progress.completeAt - t0)) * 1000,
			lost: stats.lost,
			duplicated: stats.duplicated,
		};
	} finally {
		await d.stop();
		rmSync(dir, { recursive: true, force: true });
	}
}

async function runStarve(gateway: GatewayProcess, certs: Certs, reps: number): Promise<StarveResults | undefined> {
	const missing = await h2loadMissing();
	if (missing !== undefined) {
		process.stderr.write(`  ${STARVE_NAME} | skipped: ${missing}\n`);
		return undefined;
	}
	const workload: Workload = { name: `${STARVE_NAME} (library)`, n: STARVE_N, faults: {}, protocol: 'http2', clients: ['h2-worker'] };
	const library: number[] = [];
	const runs: StarveRun[] = [];
	for (let rep = 1; rep <= reps; rep++) {
		library.push((await runOnce(gateway, certs, workload, 'h2-worker', rep)).perSecond);
		for (const connections of STARVE_CONNECTIONS) {
			const run = await starveOnce(gateway, certs, connections);
			runs.push(run);
			process.stderr.write(`  ${STARVE_NAME} | ${connections} connections #${rep}: accepted ${fmt(run.acceptPerSecond)}/s (${run.ok}/${run.requests} 2xx), first delivery ${run.firstDeliveryMs ?? '—'} ms, ${fmt(run.receivedFirstSecond)} in the first second, ${fmt(run.receivedWhilePosting)} while POSTing; end to end ${fmt(run.perSecond)}/s, library ${fmt(library[library.length - 1]!)}/s; lost ${run.lost}, dup ${run.duplicated}\n`);
		}
	}
	return { library, runs };
}

function starveTable(r: StarveResults): string[] {
	const rows = STARVE_CONNECTIONS.map((connections) => {
		const runs = r.runs.filter((x) => x.connections === connections);
		const ratios = runs.map((x, i) => x.perSecond / r.library[i]!);
		return [
			String(connections),
			`${fmt(median(runs.map((x) => x.acceptPerSecond)))}/s`,
			`${fmt(median(runs.map((x) => x.firstDeliveryMs ?? Number.NaN)))} ms`,
			fmt(median(runs.map((x) => x.receivedFirstSecond))),
			fmt(median(runs.map((x) => x.receivedWhilePosting))),
			`${fmt(median(runs.map((x) => x.perSecond)))}/s`,
			`${median(ratios).toFixed(2)}×`,
			`${Math.max(...runs.map((x) => x.lost))} / ${Math.max(...runs.map((x) => x.duplicated))}`,
			`${Math.min(...runs.map((x) => x.ok))}/${runs[0]!.requests}`,
		];
	});
	return [
		`delivery while accepting: h2load --h1 POSTs ${fmt(STARVE_N / STARVE_PER_REQUEST)} requests of ${STARVE_PER_REQUEST} tokens (${fmt(STARVE_N)} notifications; one body, so the mock expects each token ${STARVE_N / STARVE_PER_REQUEST} times)`,
		"to 'apns-worker serve' (SQLite, a child process) whose app points at the HTTP/2 mock (its own process); times from h2load's start. accepted: 2xx × 500 / h2load's time.",
		`end to end: until the mock had all ${fmt(STARVE_N)}; (×): against the library alone ('h2-worker', ${fmt(median(r.library))}/s, same count, same mock), per rep; medians.`,
		'targets: accepted ≥ 20,000/s, sending from the first second, end to end ≥ 0.80× the library.',
		'',
		...table(['POST connections', 'accepted', 'first delivery', 'delivered in 1st s', 'delivered while POSTing', 'end to end', 'vs library', 'lost / dup', '2xx'], rows),
	];
}

/** Issue 26: a daemon's memory under steady load, on each store. */
const SOAK_NAME = 'daemon soak: memory under steady load';
const SOAK_RATE = 2000;
const SOAK_PER_REQUEST = 500;
/** RSS is read every 30 s; the table shows it at these minutes. */
const SOAK_MARKS = [2, 10, 20] as const;

interface SoakRun {
	store: 'SQLite' | 'Redis';
	minutes: number;
	posted: number;
	/** Per 30 s: minutes since the start, the daemon's RSS (bytes), notifications POSTed by then. */
	samples: Array<{ minute: number; rss: number; posted: number }>;
	/** After the POSTs: pending once the mock had everything, lost and duplicated (the mock's count). */
	pending: number;
	lost: number;
	duplicated: number;
}

async function soakOnce(gateway: GatewayProcess, certs: Certs, store: 'SQLite' | 'Redis', minutes: number): Promise<SoakRun> {
	const n = Math.ceil((SOAK_RATE * minutes * 60) / SOAK_PER_REQUEST) * SOAK_PER_REQUEST;
	// 1 % of the tokens answered 410 (Unregistered): failures and feedback are stored too.
	const { port } = await gateway.request<{ port: number }>({ type: 'start', n, faults: { rejectEvery: 100 }, protocol: 'http2' });
	const redis = store === 'Redis' ? await startRedis() : undefined;
	const dir = mkdtempSync(join(os.tmpdir(), 'apns-bench-soak-'));
	const d = await startDaemon(redis === undefined ? dir : { redis: redis.url });
	const samples: SoakRun['samples'] = [];
	try {
		await provision(d, 'soak', certs, { host: '127.0.0.1', port });
		const posted = await postPaced(d, 'soak', SOAK_RATE, SOAK_PER_REQUEST, minutes * 60_000, 30_000, (ms, count) => {
			samples.push({ minute: ms / 60_000, rss: rssOf(d), posted: count });
			process.stderr.write(`  ${SOAK_NAME} | ${store} ${(ms / 60_000).toFixed(1)} min: RSS ${mb(samples[samples.length - 1]!.rss)}, ${fmt(count)} posted\n`);
		});
		let pending = await pendingOf(d, 'soak');
		for (let i = 0; i < 600 && pending > 0; i++) {
			await new Promise((resolve) => setTimeout(resolve, 100));
			pending = await pendingOf(d, 'soak');
		}
		const stats = await gateway.request<ServerPoll>({ type: 'stats' });
		return { store, minutes, posted, samples, pending, lost: stats.lost, duplicated: stats.duplicated };
	} finally {
		await d.stop();
		await redis?.close();
		rmSync(dir, { recursive: true, force: true });
	}
}

async function runSoak(gateway: GatewayProcess, certs: Certs, minutes: number, only: string | undefined): Promise<SoakRun[]> {
	const runs: SoakRun[] = [];
	if (only === undefined || only === 'sqlite') runs.push(await soakOnce(gateway, certs, 'SQLite', minutes));
	if (only !== undefined && only !== 'redis') return runs;
	if (REDIS_MISSING === false) runs.push(await soakOnce(gateway, certs, 'Redis', minutes));
	else process.stderr.write(`  ${SOAK_NAME} | Redis skipped: ${REDIS_MISSING}\n`);
	return runs;
}

function soakTable(runs: SoakRun[]): string[] {
	const at = (r: SoakRun, minute: number): number => r.samples.find((s) => Math.abs(s.minute - minute) < 1e-9)?.rss ?? Number.NaN;
	const marks = SOAK_MARKS.filter((m) => m <= runs[0]!.minutes);
	const last = marks[marks.length - 1]!;
	return [
		`soak: 'apns-worker serve' (a child process) fed ${fmt(SOAK_RATE)} notifications/s in POSTs of ${SOAK_PER_REQUEST} (distinct tokens, 1 % answered 410) for ${runs[0]!.minutes} minutes, the HTTP/2 mock in its own process;`,
		"RSS: the daemon's VmRSS at each mark. growth: from the 2-minute mark to the last. Target: ≤ 10 %.",
		'',
		...table(
			['store', 'posted', ...marks.map((m) => `RSS at ${m} min`), `growth ${marks[0]}→${last} min`, 'pending at the end', 'lost / dup'],
			runs.map((r) => [r.store, fmt(r.posted), ...marks.map((m) => mb(at(r, m))), `${(((at(r, last) - at(r, marks[0]!)) / at(r, marks[0]!)) * 100).toFixed(1)} %`, fmt(r.pending), `${r.lost} / ${r.duplicated}`]),
		),
	];
}

/** Issue 12: daemons sharing one Redis (BullMQ). */
const SCALE_NAME = 'scale out: daemons on one Redis';
const SCALE_APPS = 5;
/** Daemons, one killed at 50 %, tokens per POST: campaign-sized entries, and small ones for what they cost. */
const SCALE_CONFIGS = [[1, false, 5000], [2, false, 5000], [2, true, 5000], [1, false, 500], [2, false, 500]] as const;

interface ScaleRun {
	daemons: number;
	killed: boolean;
	/** Tokens per POST (one notification entry). */
	perRequest: number;
	perSecond: number;
	/** Redis commands per notification: total_commands_processed (scripts' calls included), and the commandstats total. */
	commandsPerNotification: number;
	commandstatsPerNotification: number;
	lost: number;
	duplicated: number;
	/** Tokens the surviving daemon took over unsettled (its apns_worker_in_doubt). */
	inDoubt: number;
	/** Delivered when the daemon was killed. */
	killedAt: number | undefined;
}

interface ScaleResults {
	n: number;
	/** Per rep: the library alone ('h2-worker'), same mock process, same count. */
	library: number[];
	runs: ScaleRun[];
}

/** One run: `daemons` daemons on a fresh Redis, 5 apps, `n` notifications POSTed through them in turn; optionally one killed at 50 %. */
async function scaleOnce(gateway: GatewayProcess, certs: Certs, n: number, daemons: number, kill: boolean, perRequest: number): Promise<ScaleRun> {
	const redis = await startRedis();
	const started: Daemon[] = [];
	try {
		const { port } = await gateway.request<{ port: number }>({ type: 'start', n, faults: {}, protocol: 'http2' });
		for (let i = 0; i < daemons; i++) started.push(await startDaemon({ redis: redis.url, args: ['--lock-timeout', '5'] }));
		for (let a = 0; a < SCALE_APPS; a++) await provision(started[0]!, `app${a}`, certs, { host: '127.0.0.1', port });
		const before = await redis.commands();
		const t0 = Date.now();
		const per = n / SCALE_APPS;
		await Promise.all(Array.from({ length: SCALE_APPS }, (_, a) => postAll(started[a % daemons]!, `app${a}`, a * per, (a + 1) * per, perRequest)));
		let killedAt: number | undefined;
		let progress: ServerProgress;
		for (;;) {
			await new Promise((resolve) => setTimeout(resolve, 20));
			progress = await gateway.request<ServerProgress>({ type: 'poll' });
			if (kill && killedAt === undefined && progress.unique >= n / 2) {
				killedAt = progress.unique;
				started[0]!.child.kill('SIGKILL');
			}
			if (progress.completeAt !== undefined || Date.now() - progress.lastProgressAt > STALL_MS + 5000) break;
		}
		const survivor = started[started.length - 1]!;
		// Every outcome recorded (the last flushes and job completions follow the mock's last delivery).
		for (let i = 0; i < 100; i++) {
			const views = await Promise.all(Array.from({ length: SCALE_APPS }, async (_, a) => (await (await fetch(`${survivor.url}/v1/apps/app${a}`, { headers: { authorization: 'Bearer bench-api-key-0123456789' } })).json()) as { pending: number }));
			if (views.every((v) => v.pending === 0)) break;
			await new Promise((resolve) => setTimeout(resolve, 50));
		}
		const after = await redis.commands();
		const stats = await gateway.request<ServerPoll>({ type: 'stats' });
		const metrics = await metricsOf(survivor);
		const inDoubt = [...metrics.matchAll(/apns_worker_in_doubt\{app="[^"]+"\} (\d+)/g)].reduce((sum, m) => sum + Number(m[1]), 0);
		return {
			daemons,
			killed: kill,
			perRequest,
			perSecond: progress.completeAt === undefined ? 0 : (n / Math.max(1, progress.completeAt - t0)) * 1000,
			commandsPerNotification: (after.processed - before.processed) / n,
			commandstatsPerNotification: (after.commandstats - before.commandstats) / n,
			lost: stats.lost,
			duplicated: stats.duplicated,
			inDoubt,
			killedAt,
		};
	} finally {
		for (const d of started) if (d.child.exitCode === null && d.child.signalCode === null) await d.stop();
		await redis.close();
	}
}

async function runScale(gateway: GatewayProcess, certs: Certs, reps: number, quick: boolean): Promise<ScaleResults | undefined> {
	if (REDIS_MISSING !== false) {
		process.stderr.write(`  ${SCALE_NAME} | skipped: ${REDIS_MISSING}\n`);
		return undefined;
	}
	const n = quick ? 50_000 : 100_000;
	const workload: Workload = { name: `${SCALE_NAME} (library)`, n, faults: {}, protocol: 'http2', clients: ['h2-worker'] };
	const library: number[] = [];
	const runs: ScaleRun[] = [];
	for (let rep = 1; rep <= reps; rep++) {
		library.push((await runOnce(gateway, certs, workload, 'h2-worker', rep)).perSecond);
		for (const [daemons, kill, perRequest] of SCALE_CONFIGS) {
			const run = await scaleOnce(gateway, certs, n, daemons, kill, perRequest);
			runs.push(run);
			process.stderr.write(`  ${SCALE_NAME} | ${daemons} daemon(s)${kill ? ', one killed at 50 %' : ''}, POSTs of ${perRequest} #${rep}: ${fmt(run.perSecond)}/s, ${run.commandsPerNotification.toFixed(4)} commands/notif (commandstats ${run.commandstatsPerNotification.toFixed(4)}), lost ${run.lost}, dup ${run.duplicated}, in doubt ${run.inDoubt}${run.killedAt === undefined ? '' : `, killed at ${fmt(run.killedAt)}`}; library ${fmt(library[library.length - 1]!)}/s\n`);
		}
	}
	return { n, library, runs };
}

function scaleTable(r: ScaleResults): string[] {
	const lib = median(r.library);
	const rows = SCALE_CONFIGS.map(([daemons, kill, perRequest]) => {
		const runs = r.runs.filter((x) => x.daemons === daemons && x.killed === kill && x.perRequest === perRequest);
		const rate = median(runs.map((x) => x.perSecond));
		return [
			`${daemons} daemon${daemons > 1 ? 's' : ''}${kill ? ', one kill -9 at 50 %' : ''}`,
			fmt(perRequest),
			`${fmt(rate)}/s (${(rate / lib).toFixed(2)}×)`,
			median(runs.map((x) => x.commandsPerNotification)).toFixed(4),
			String(Math.max(...runs.map((x) => x.lost))),
			kill ? runs.map((x) => `${x.duplicated} ≤ ${x.inDoubt}`).join(', ') : String(Math.max(...runs.map((x) => x.duplicated))),
		];
	});
	return [
		`scale out: 'apns-worker serve --redis' daemons (child processes) on one redis-server (this machine, no persistence), ${fmt(r.n)} notifications to ${SCALE_APPS} apps, POSTs of one entry,`,
		`4 in flight per app, through the daemons in turn; rate: first POST to the HTTP/2 mock (its own process) having all; (×): against the library alone ('h2-worker', ${fmt(lib)}/s), same run.`,
		"commands/notif: Redis' total_commands_processed over the run (every command Redis ran, those inside scripts included; commandstats agrees) / notifications. kill: --lock-timeout 5.",
		'',
		...table(['daemons', 'tokens per POST', 'throughput (vs library)', 'commands/notif', 'lost', 'duplicated (≤ in doubt)'], rows),
	];
}

async function main(): Promise<void> {
	const { values } = parseArgs({ options: { reps: { type: 'string' }, only: { type: 'string' }, quick: { type: 'boolean', default: false }, 'soak-minutes': { type: 'string' }, 'soak-store': { type: 'string' } } });
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
				const memory = run.burst === undefined ? '' : `, heap ${run.burst.heapBytesPerNotification} B/notif, peak RSS +${mb(run.burst.peakRssGrowthBytes)}`;
				process.stderr.write(`  ${workload.name} | ${client} #${rep}: ${fmt(run.perSecond)}/s${run.completed ? '' : ' (incomplete)'}${run.ended === undefined ? '' : ` (${run.ended})`}, lost ${run.lost}, dup ${run.duplicated}${memory}${events(run)}\n`);
			}
		}
	}
	const daemon = values.only === undefined || DAEMON_NAME.includes(values.only) ? await runDaemon(gateway, certs, values.quick ? 1 : values.reps !== undefined ? reps : 3, values.quick) : undefined;
	const starve = values.only === undefined || STARVE_NAME.includes(values.only) ? await runStarve(gateway, certs, values.quick ? 1 : values.reps !== undefined ? reps : 3) : undefined;
	const soakMinutes = Number(values['soak-minutes'] ?? (values.quick ? 2 : 20));
	const soak = values.only === undefined || SOAK_NAME.includes(values.only) ? await runSoak(gateway, certs, soakMinutes, values['soak-store']) : undefined;
	const scale = values.only === undefined || SCALE_NAME.includes(values.only) ? await runScale(gateway, certs, values.quick ? 1 : values.reps !== undefined ? reps : 2, values.quick) : undefined;
	const broadcasts = values.only === undefined || BROADCAST_NAME.includes(values.only) ? await runBroadcasts(certs, values.quick ? 1 : values.reps !== undefined ? reps : 3, values.quick ? 2000 : 10_000) : undefined;
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
			const against = (other: ClientName | undefined, pick: (r: Run) => number = (r) => r.perSecond): number | undefined => {
				if (other === undefined) return undefined;
				if (!workload.clients.includes(other) || other === client) return undefined;
				const ratios = mine.map((r) => pick(r) / pick(runs.find((o) => o.workload === workload.name && o.client === other && o.rep === r.rep)!));
				return median(ratios);
			};
			return {
				workload: workload.name,
				client,
				perSecond: median(mine.map((r) => r.perSecond)),
				vsRaw: against(ceiling),
				vsNodeApn: against(peer),
				peakRssVsPeer: peer === undefined || peer === client ? undefined : median(measured(mine).map((r) => r.peakRssBytes)) / median(measured(runs.filter((o) => o.workload === workload.name && o.client === peer)).map((o) => o.peakRssBytes)),
				rssGrowthVsPeer: peer === undefined || peer === client ? undefined : median(measured(mine).map(growth)) / median(measured(runs.filter((o) => o.workload === workload.name && o.client === peer)).map(growth)),
				completedRuns: `${mine.filter((r) => r.completed).length}/${mine.length}${mine.some((r) => r.ended !== undefined) ? ` (${mine.filter((r) => r.ended !== undefined).length} without a result)` : ''}`,
				lostMax: Math.max(...mine.map((r) => r.lost)),
				duplicatedMax: Math.max(...mine.map((r) => r.duplicated)),
				errorsReported: median(mine.map((r) => r.errorsReported)),
				errorsExpected: mine[0]!.errorsExpected,
				reconnects: median(mine.map((r) => r.reconnects)),
				peakRssBytes: median(measured(mine).map((r) => r.peakRssBytes)),
				baselineRssBytes: median(measured(mine).map((r) => r.baselineRssBytes)),
				rssGrowthBytes: median(measured(mine).map(growth)),
				undeliveredMax: Math.max(...mine.map((r) => r.undelivered)),
				...(workload.burst === true ? { burst: burstSummary(mine, peer === undefined || peer === client ? undefined : runs.filter((o) => o.workload === workload.name && o.client === peer)) } : {}),
				...(workload.threads === true ? { threads: threadsSummary(measured(mine), { vsEvented: against(workload.clients[0]), coldVsEvented: against(workload.clients[0], (r) => (r.perSecond * r.elapsedMs) / (r.elapsedMs + (r.threadsReadyMs ?? 0))), steadyVsEvented: against(workload.clients[0], (r) => r.steadyPerSecond), p99VsEvented: against(workload.clients[0], (r) => r.loop?.delayMs.p99 ?? Number.NaN) }) } : {}),
			};
		}),
	);

	const machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.release()}` };
	const date = new Date().toISOString();
	const header = [...DELIVERY_HEADER, 'reconnects', 'peak RSS (vs peer)', 'RSS growth (vs peer)'];
	const rows = summary.filter((s) => s.burst === undefined && s.threads === undefined).map((s) => [
		...deliveryCells(s),
		String(s.reconnects),
		`${mb(s.peakRssBytes)}${s.peakRssVsPeer === undefined ? '' : ` (${s.peakRssVsPeer.toFixed(2)}×)`}`,
		`${mb(s.rssGrowthBytes)}${s.rssGrowthVsPeer === undefined ? '' : ` (${s.rssGrowthVsPeer.toFixed(2)}×)`}`,
	]);
	const out: string[] = [];
	out.push(`apns-worker benchmark — ${date.slice(0, 10)}, ${machine.cores} cores (${machine.cpu}), Node ${machine.node}; gateway in its own process; clients alternating; medians over the runs counted in 'done'`);
	out.push('ceiling: raw TLS (binary) or bare node:http2 with 1,000 streams in flight (HTTP/2); peer: node-apn 1.7.8 (binary) or @parse/node-apn (HTTP/2).');
	out.push('lost: never accepted by the gateway and never reported failed (silently lost). RSS growth: peak RSS minus the RSS of Node plus the input tokens, taken before the client library is loaded.');
	if (rows.length > 0) out.push('', ...table(header, rows));
	const bursts = summary.filter((s) => s.burst !== undefined);
	if (bursts.length > 0) out.push('', ...burstTable(bursts as Array<(typeof bursts)[number] & { burst: BurstSummary }>));
	const threads = summary.filter((s) => s.threads !== undefined);
	if (threads.length > 0) out.push('', ...threadsTable(threads as Array<(typeof threads)[number] & { threads: ThreadsSummary }>));
	if (memory.length > 0) {
		const cells = memory.map((m) => [MEMORY.name, m.client, String(m.heapBytesPerNotification), String(m.heapAndBuffersBytesPerNotification), mb(m.peakRssBytes)]);
		out.push('', ...table(['memory: 1M tokens × 1 payload queued, gateway unreachable', 'client', 'heap B/notif', 'heap+buffers B/notif', 'peak RSS'], cells));
	}
	if (daemon !== undefined) out.push('', ...daemonTable(daemon));
	if (starve !== undefined) out.push('', ...starveTable(starve));
	if (soak !== undefined) out.push('', ...soakTable(soak));
	if (scale !== undefined) out.push('', ...scaleTable(scale));
	if (broadcasts !== undefined) out.push('', ...broadcastTable(broadcasts));
	process.stdout.write(`${out.join('\n')}\n`);
	const partial = values.only !== undefined || values.quick || values.reps !== undefined;
	const file = `bench/results/${partial ? 'partial' : 'latest'}.json`;
	mkdirSync(here('../../bench/results'), { recursive: true });
	writeFileSync(here(`../../${file}`), `${JSON.stringify({ date, machine, gateway: 'separate process', options: values, summary, memory, daemon, starve, soak, scale, broadcasts, runs }, null, '\t')}\n`);
	process.stdout.write(`\nWrote ${file}\n`);
}

await main();
