/**
 * One benchmark run of one client, in its own process (so its peak RSS is its own). The orchestrator
 * passes the task in BENCH_TASK; the client reports when it starts sending, and, once told the gateway
 * has everything (or has stalled), what it saw: the tokens it was told failed, reconnects, peak RSS, and
 * the RSS of the process before any client library was loaded (Node plus the input tokens), so that what
 * each library adds can be told apart from what every process here pays anyway.
 *
 * Burst workloads differ (see {@link BurstMeter}): no input list is built; one call per notification,
 * each with a payload of its own, in one synchronous loop; the baseline is taken right before that loop,
 * and the heap right after it ('handedOver'), so what is measured is what the client library keeps.
 */
import { sign } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { monitorEventLoopDelay, performance, type EventLoopUtilization } from 'node:perf_hooks';
import type { ApnsManager, ApnsManagerOptions, DeliveryError } from '../src/index.js';
import { burstAps, burstPayload, LOOP_RESOLUTION_MS, PACED_CHUNK, PACED_PENDING, PAYLOAD, token, tokenIndexOf, tokens, TOPIC, type BurstMeasure, type ClientMessage, type ClientName, type ClientTask, type LoopMeasure } from './common.js';

const task = JSON.parse(process.env['BENCH_TASK'] ?? 'null') as ClientTask;
const send = (message: ClientMessage): void => void process.send!(message);
/** Send the last message, then exit once it is written: a large one (200k failed tokens) is lost to an exit right after send(). */
const sendAndExit = (message: ClientMessage): void => void process.send!(message, () => process.exit(0));
const finish = new Promise<void>((resolve) => process.once('message', () => resolve()));
const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

/** CPU ms (user + system, 10 ms ticks) of each thread of this process, by thread id; empty where there is no /proc. */
function threadCpu(): Map<string, number> {
	const out = new Map<string, number>();
	try {
		for (const tid of readdirSync('/proc/self/task')) {
			try {
				const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
				// Fields after the command name: utime and stime are the 12th and 13th.
				const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
				out.set(tid, (Number(f[11]) + Number(f[12])) * 10);
			} catch {
				// The thread ended meanwhile.
			}
		}
	} catch {
		// Not Linux.
	}
	return out;
}

/** The threads the process had before any client library was loaded: the main one, V8's and libuv's. */
const RUNTIME_THREADS = new Set(threadCpu().keys());

/**
 * The caller's event-loop delay, the process's CPU and the main thread's busy time, from the first send
 * ({@link started}) to {@link LoopMeter.stop}: the last settlement an apns-worker client saw, or 'finish'.
 */
class LoopMeter {
	readonly #histogram = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
	#cpu: NodeJS.CpuUsage | undefined;
	#elu: EventLoopUtilization | undefined;
	#t0 = 0;
	#threads = new Map<string, number>();
	#result: LoopMeasure | undefined;

	get result(): LoopMeasure | undefined {
		return this.#result;
	}

	start(): void {
		this.#t0 = performance.now();
		this.#threads = threadCpu();
		this.#cpu = process.cpuUsage();
		this.#elu = performance.eventLoopUtilization();
		this.#histogram.enable();
	}

	/** Idempotent: the first call ends the window. */
	stop(): void {
		if (this.#cpu === undefined || this.#result !== undefined) return;
		this.#histogram.disable();
		const threads = { caller: 0, runtime: 0, started: 0 };
		for (const [tid, ms] of threadCpu()) {
			const used = ms - (this.#threads.get(tid) ?? 0);
			if (tid === String(process.pid)) threads.caller += used;
			else if (RUNTIME_THREADS.has(tid)) threads.runtime += used;
			else threads.started += used;
		}
		const wallMs = performance.now() - this.#t0;
		const cpu = process.cpuUsage(this.#cpu);
		const elu = performance.eventLoopUtilization(this.#elu);
		const h = this.#histogram;
		// Node records the time between the timer's runs: the resolution plus how late it ran.
		const late = (ns: number): number => (h.count === 0 ? Number.NaN : Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS));
		this.#result = {
			delayMs: { p50: late(h.percentile(50)), p99: late(h.percentile(99)), max: late(h.max), mean: late(h.mean), samples: h.count },
			cpuMs: (cpu.user + cpu.system) / 1000,
			callerBusyMs: elu.active,
			...(RUNTIME_THREADS.size === 0 ? {} : { threadCpuMs: threads }),
			wallMs,
		};
	}
}

const loopMeter = new LoopMeter();
// Registered first, so it runs before the clients' own reactions to 'finish'.
void finish.then(() => loopMeter.stop());
const started = (): void => {
	loopMeter.start();
	send({ type: 'started', at: Date.now() });
};

// node-apn 1.x is a dependency of bench/ only, so it is resolved from there.
const requireFromBench = createRequire(new URL('../../bench/package.json', import.meta.url));

interface NodeApnConnection {
	on(event: string, listener: (...args: unknown[]) => void): void;
	pushNotification(note: unknown, recipients: string | string[]): void;
	shutdown(): void;
}
interface NodeApn {
	Connection: new (options: object) => NodeApnConnection;
	Notification: new () => { alert: unknown; badge: unknown; sound: unknown };
}

/** What a client saw: the token indices it was told failed (each once per report), and reconnects. */
interface Seen {
	failed: number[];
	reconnects: number;
	/** 'threaded': from the manager's construction to its last thread's `threadReady`, before the first send. */
	threadsReadyMs?: number;
	/** 'threaded': the most threads taking work at once (`threadsInUse`), until 'finish'. */
	threadsUsed?: number;
	/** apns-worker: its events until 'finish', counted ('resent workerLost', 'disconnected goaway', 'threadExit'). */
	events?: Record<string, number>;
}

async function raw(all: string[]): Promise<Seen> {
	// The ceiling for any client: frames encoded into 1 MiB chunks, written to one socket. Same
	// start as every other client (tokens as hex strings, a payload object, no connection yet); no
	// validation, no retention, no error handling.
	const { default: tls } = await import('node:tls');
	const { frameBytes, writeFrames } = await import('../src/frame.js');
	started();
	const socket = tls.connect({ host: '127.0.0.1', port: task.port, cert: task.certs.client.cert, key: task.certs.client.key, ca: task.certs.ca });
	await new Promise<void>((resolve, reject) => {
		socket.once('secureConnect', resolve);
		socket.once('error', reject);
	});
	const payload = Buffer.from(JSON.stringify(PAYLOAD));
	const size = frameBytes(payload.length);
	const perChunk = Math.floor((1 << 20) / size);
	// The chunk's tokens decoded back to back, then its frames written as apns-worker's driver writes a run.
	const tokens = Buffer.allocUnsafe(perChunk * 32);
	for (let i = 0; i < all.length; ) {
		const count = Math.min(perChunk, all.length - i);
		const chunk = Buffer.allocUnsafe(count * size);
		for (let k = 0; k < count; k++) tokens.write(all[i + k]!, k * 32, 'hex');
		writeFrames(chunk, 0, tokens, 0, count, payload, 0, payload.length, i + 1, 0, 10);
		i += count;
		if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
	}
	await finish;
	socket.destroy();
	return { failed: [], reconnects: 0 };
}

/**
 * apns-worker on either protocol, either backend: `handOver` queues everything (and says 'started'); the
 * loop meter stops at the last settlement (nothing pending) or at 'finish'; then flush.
 */
async function manager(options: ApnsManagerOptions, handOver: (m: ApnsManager) => void | Promise<void>): Promise<Seen> {
	const { ApnsManager } = await import('../src/index.js');
	const failed: number[] = [];
	const constructedAt = performance.now();
	const m = new ApnsManager({ protocol: 'binary', ca: task.certs.ca, gateway: { host: '127.0.0.1', port: task.port }, errorHandler: (e: DeliveryError) => failed.push(tokenIndexOf(e.token)), ...options });
	const events: Record<string, number> = {};
	const count = (event: string, by = 1): void => void (events[event] = (events[event] ?? 0) + by);
	m.on('resent', (info) => count(`resent ${info.reason}`, info.count));
	// With the error's words (numbers left out, so that like counts with like): which GOAWAY, which timeout.
	m.on('disconnected', (info) => count(`disconnected ${info.reason}${info.error === undefined ? '' : ` (${info.error.message.replace(/\d+/g, 'N')})`}`));
	m.on('threadExit', () => count('threadExit'));
	let threadsUsed = options.backend === 'threaded' ? (options.minThreads ?? 1) : undefined;
	m.on('threadsInUse', (info) => void (threadsUsed = Math.max(threadsUsed ?? 0, info.inUse)));
	// 'threaded': the first send waits for the threads to be up, as it waits for the library to load: a
	// thread's start is paid once per manager, not per send. How long it took is reported on its own.
	let threadsReadyMs: number | undefined;
	if (options.backend === 'threaded') {
		let ready = 0;
		await new Promise<void>((resolve) => m.on('threadReady', () => void (++ready === (options.threads ?? 1) && resolve())));
		threadsReadyMs = performance.now() - constructedAt;
	}
	await handOver(m);
	await Promise.race([m.onPendingBelow(1), finish]);
	loopMeter.stop();
	await finish;
	const seen = { ...events };
	const used = threadsUsed;
	await m.flushMessages({ timeoutMs: 10_000 }).catch(() => {});
	const reconnects = Math.max(0, m.stats.connectAttempts - 1);
	m.destroy();
	return { failed, reconnects, events: seen, ...(threadsReadyMs === undefined ? {} : { threadsReadyMs }), ...(used === undefined ? {} : { threadsUsed: used }) };
}

/** Everything in one call: one message, one payload, all the tokens. */
const broadcast = (all: string[]) => (m: ApnsManager) => {
	started();
	m.sendAps(all, PAYLOAD.aps);
};

/**
 * As a web server would hand them over: chunks of PACED_CHUNK, each in a macrotask of its own (requests
 * arrive one by one), each once fewer than PACED_PENDING are pending (the backpressure a producer uses).
 */
const paced = (all: string[]) => async (m: ApnsManager) => {
	started();
	for (let i = 0; i < all.length; i += PACED_CHUNK) {
		await m.onPendingBelow(PACED_PENDING);
		m.sendAps(all.slice(i, i + PACED_CHUNK), PAYLOAD.aps);
		await new Promise(setImmediate);
	}
};

const BINARY: ApnsManagerOptions = { cert: task.certs.client.cert, key: task.certs.client.key };
const threaded = (threads: number): ApnsManagerOptions => ({ backend: 'threaded', threads });

async function nodeApn(all: string[]): Promise<Seen> {
	const apn = requireFromBench('apn') as NodeApn;
	const failed: number[] = [];
	let connects = 0;
	const connection = new apn.Connection({
		cert: Buffer.from(task.certs.client.cert),
		key: Buffer.from(task.certs.client.key),
		ca: [Buffer.from(task.certs.ca)],
		gateway: '127.0.0.1',
		port: task.port,
		production: true,
	});
	connection.on('transmissionError', (_code: unknown, _note: unknown, device: unknown) => failed.push(tokenIndexOf(String(device))));
	connection.on('connected', () => connects++);
	connection.on('error', () => {});
	connection.on('socketError', () => {});
	const note = new apn.Notification();
	note.alert = PAYLOAD.aps.alert;
	note.badge = PAYLOAD.aps.badge;
	note.sound = PAYLOAD.aps.sound;
	started();
	connection.pushNotification(note, all);
	await finish;
	await new Promise((resolve) => setTimeout(resolve, 1000)); // late transmissionError events
	connection.shutdown();
	return { failed, reconnects: Math.max(0, connects - 1) };
}

const p8 = task.certs.p8;
const jwt = (): string => {
	const head = `${Buffer.from(JSON.stringify({ alg: 'ES256', kid: p8.keyId })).toString('base64url')}.${Buffer.from(JSON.stringify({ iss: p8.teamId, iat: Math.floor(Date.now() / 1000) })).toString('base64url')}`;
	return `${head}.${sign('sha256', Buffer.from(head), { key: p8.key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
};

/**
 * The HTTP/2 ceiling: one session, 1,000 streams in flight, no retries, no bookkeeping. `handOver` says
 * 'started' (and, in a burst, stores the inputs); notification i goes to `deviceOf(i)` with `bodyOf(i)`.
 */
async function h2Bare(n: number, deviceOf: (i: number) => string, bodyOf: (i: number) => Buffer, handOver: () => void): Promise<Seen> {
	const { default: http2 } = await import('node:http2');
	handOver();
	const session = http2.connect(`https://127.0.0.1:${task.port}`, { ca: task.certs.ca });
	const authorization = `bearer ${jwt()}`;
	let next = 0;
	let open = 0;
	const failed: number[] = [];
	await new Promise<void>((resolve) => {
		const launch = (): void => {
			while (open < 1000 && next < n) {
				const i = next++;
				const stream = session.request({ ':method': 'POST', ':path': `/3/device/${deviceOf(i)}`, 'apns-topic': TOPIC, 'apns-push-type': 'alert', authorization });
				open++;
				stream.on('response', (h) => {
					if (h[':status'] !== 200) failed.push(i);
				});
				stream.on('error', () => {});
				stream.on('close', () => {
					open--;
					if (next < n) launch();
					else if (open === 0) resolve();
				});
				stream.resume();
				stream.end(bodyOf(i));
			}
		};
		launch();
	});
	await finish;
	session.destroy();
	return { failed, reconnects: 0 };
}

const h2BareClean = (all: string[]): Promise<Seen> => {
	const body = Buffer.from(JSON.stringify(PAYLOAD));
	return h2Bare(all.length, (i) => all[i]!, () => body, started);
};

const H2_WORKER: ApnsManagerOptions = { protocol: 'http2', token: { key: p8.key, keyId: p8.keyId, teamId: p8.teamId }, topic: TOPIC, retry: { initialDelayMs: 10, maxDelayMs: 100 } };

interface ParseApn {
	Provider: new (options: object) => { send(note: unknown, tokens: string | string[]): Promise<{ sent: unknown[]; failed: Array<{ device: string }> }>; shutdown(): void };
	Notification: new (payload?: object) => { topic: string; alert: unknown; badge: unknown; sound: unknown; payload: object };
}

function parseApnProvider(): { apn: ParseApn; provider: InstanceType<ParseApn['Provider']> } {
	const apn = requireFromBench('@parse/node-apn') as ParseApn;
	return { apn, provider: new apn.Provider({ token: { key: p8.key, keyId: p8.keyId, teamId: p8.teamId }, address: '127.0.0.1', port: task.port, production: true, ca: [task.certs.ca] }) };
}

async function parseApn(all: string[]): Promise<Seen> {
	const { apn, provider } = parseApnProvider();
	const note = new apn.Notification();
	note.topic = TOPIC;
	note.alert = PAYLOAD.aps.alert;
	note.badge = PAYLOAD.aps.badge;
	note.sound = PAYLOAD.aps.sound;
	const failed: number[] = [];
	started();
	// In batches of 1,000: handed everything at once it fails (ENHANCE_YOUR_CALM).
	for (let i = 0; i < all.length; i += 1000) {
		const result = await provider.send(note, all.slice(i, i + 1000));
		for (const f of result.failed) failed.push(tokenIndexOf(f.device));
	}
	await finish;
	provider.shutdown();
	return { failed, reconnects: 0 };
}

async function apns2(all: string[]): Promise<Seen> {
	const { ApnsClient, Notification } = (await import(requireFromBench.resolve('apns2').replace(/cjs[/\\]index\.js$/, 'esm/index.js'))) as {
		ApnsClient: new (options: object) => { client: unknown; sendMany(notes: unknown[]): Promise<Array<{ error?: unknown }>>; close?: () => Promise<void> };
		Notification: new (token: string, options: object) => unknown;
	};
	const { Pool } = (await import(requireFromBench.resolve('undici'))) as { Pool: new (origin: string, options: object) => unknown };
	const client = new ApnsClient({ team: p8.teamId, keyId: p8.keyId, signingKey: p8.key, defaultTopic: TOPIC });
	// apns2 always dials port 443; point its pool (same options as its own) at the mock's port instead.
	client.client = new Pool(`https://127.0.0.1:${task.port}`, { connections: 32, pipelining: 1, allowH2: true, maxConcurrentStreams: 100 });
	started();
	const results = await client.sendMany(all.map((t) => new Notification(t, { alert: PAYLOAD.aps.alert, badge: PAYLOAD.aps.badge, sound: PAYLOAD.aps.sound })));
	const failed: number[] = [];
	results.forEach((r, i) => {
		if (r !== null && typeof r === 'object' && 'error' in r && r.error !== undefined) failed.push(i);
	});
	await finish;
	return { failed, reconnects: 0 };
}

async function memory(): Promise<void> {
	// The gateway is unreachable (a port nothing listens on), so everything stays queued.
	const gc = (globalThis as { gc?: () => void }).gc;
	if (gc === undefined) throw new Error('run with --expose-gc');
	const n = task.workload.n;
	const settle = (): NodeJS.MemoryUsage => {
		gc();
		gc();
		return process.memoryUsage();
	};
	// Library loaded and client made first: only what queuing n notifications adds is measured.
	let queue: (list: string[]) => void;
	let keep: unknown;
	if (task.client === 'worker') {
		const { ApnsManager } = await import('../src/index.js');
		const manager = new ApnsManager({ protocol: 'binary', cert: task.certs.client.cert, key: task.certs.client.key, ca: task.certs.ca, gateway: { host: '127.0.0.1', port: task.port }, reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
		manager.on('connectError', () => {});
		queue = (list) => manager.sendAps(list, PAYLOAD.aps);
		keep = manager;
	} else {
		const apn = requireFromBench('apn') as NodeApn;
		const connection = new apn.Connection({ cert: Buffer.from(task.certs.client.cert), key: Buffer.from(task.certs.client.key), ca: [Buffer.from(task.certs.ca)], gateway: '127.0.0.1', port: task.port, production: true, connectionRetryLimit: 1 });
		connection.on('error', () => {});
		connection.on('socketError', () => {});
		connection.on('transmissionError', () => {});
		const note = new apn.Notification();
		note.alert = PAYLOAD.aps.alert;
		queue = (list) => connection.pushNotification(note, list);
		keep = connection;
	}
	const before = settle();
	let list: string[] | undefined = tokens(n);
	queue(list);
	list = undefined; // the caller's token strings are the caller's: measure only what the library keeps
	const after = settle();
	send({ type: 'memory', heapBytes: after.heapUsed - before.heapUsed, externalBytes: after.arrayBuffers - before.arrayBuffers, n, peakRssBytes: peakRss() });
	void keep;
	process.exit(0);
}

/**
 * Burst measurements, taken in the client's own process. The inputs are never built up front: the loop
 * makes each token and payload as it hands it over, so what is still referenced after the loop is what
 * the client (library) keeps, and the caller's temporaries are garbage that the forced GCs remove.
 */
class BurstMeter {
	readonly n = task.workload.n;
	readonly #gc: () => void;
	#peak = 0;
	#peakHeapUsed = 0;
	#peakHeapTotal = 0;
	#timer: NodeJS.Timeout | undefined;
	#baseline: NodeJS.MemoryUsage | undefined;
	#kernelPeakAtBaseline = 0;
	#after: NodeJS.MemoryUsage | undefined;
	#heapUsedRaw = 0;
	#loopMs = 0;
	#pauseMs = 0;

	constructor() {
		const gc = (globalThis as { gc?: () => void }).gc;
		if (gc === undefined) throw new Error('run with --expose-gc');
		this.#gc = gc;
	}

	#settle(): NodeJS.MemoryUsage {
		// Twice: the second collects what the first one's weak callbacks and finalizers let go.
		this.#gc();
		this.#gc();
		return process.memoryUsage();
	}

	#sample(m: NodeJS.MemoryUsage): void {
		if (m.rss > this.#peak) this.#peak = m.rss;
		if (m.heapUsed > this.#peakHeapUsed) this.#peakHeapUsed = m.heapUsed;
		if (m.heapTotal > this.#peakHeapTotal) this.#peakHeapTotal = m.heapTotal;
	}

	/**
	 * Baseline, 'started', then `one(i)` for every notification in one synchronous loop, then the heap:
	 * nothing has been written or answered yet (the event loop has not turned since the loop began).
	 */
	handOver(one: (i: number) => void): void {
		const before = this.#settle();
		this.#baseline = before;
		this.#kernelPeakAtBaseline = peakRss();
		this.#sample(before);
		// The heap too, to tell how much of the peak is garbage the GC let build up (memoryUsage() costs microseconds).
		this.#timer = setInterval(() => this.#sample(process.memoryUsage()), 25);
		this.#timer.unref();
		const start = performance.now();
		started();
		for (let i = 0; i < this.n; i++) one(i);
		this.#loopMs = performance.now() - start;
		const raw = process.memoryUsage();
		this.#heapUsedRaw = raw.heapUsed;
		this.#sample(raw);
		const pause = performance.now();
		this.#after = this.#settle();
		this.#pauseMs = performance.now() - pause;
		// Now, not only at the end: a client that never hands back its result (killed) still has its heap figures.
		send({ type: 'handedOver', measure: this.#measure(false) });
	}

	/** Stop sampling; what was measured. */
	result(): BurstMeasure {
		clearInterval(this.#timer);
		this.#sample(process.memoryUsage());
		return this.#measure(true);
	}

	#measure(final: boolean): BurstMeasure {
		const pick = (m: NodeJS.MemoryUsage | undefined) => ({ rss: m?.rss ?? 0, heapUsed: m?.heapUsed ?? 0, arrayBuffers: m?.arrayBuffers ?? 0, external: m?.external ?? 0 });
		return {
			n: this.n,
			final,
			baseline: pick(this.#baseline),
			heapUsedRaw: this.#heapUsedRaw,
			after: pick(this.#after),
			sampledPeakRss: this.#peak,
			sampledPeakHeapUsed: this.#peakHeapUsed,
			sampledPeakHeapTotal: this.#peakHeapTotal,
			kernelPeakRss: peakRss(),
			kernelPeakRssAtBaseline: this.#kernelPeakAtBaseline,
			loopMs: Math.round(this.#loopMs),
			pauseMs: Math.round(this.#pauseMs),
		};
	}
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

/** apns-worker: one `sendAps` per notification, one token each, its own payload. */
const h2WorkerBurst = (meter: BurstMeter): Promise<Seen> =>
	manager(H2_WORKER, (m) => meter.handOver((i) => m.sendAps(token(i), burstAps(i), { extra: { burst: i } })));

/** @parse/node-apn: one `provider.send(note, token)` per notification, none awaited in the loop, then all awaited. */
async function parseApnBurst(meter: BurstMeter): Promise<Seen> {
	const { apn, provider } = parseApnProvider();
	const failed: number[] = [];
	let settled = 0;
	let allSettled = (): void => {};
	const done = new Promise<void>((resolve) => (allSettled = resolve));
	// One shared handler, no closure per send: the caller's own cost per send is the promise then() makes.
	const onResult = (result: { failed: Array<{ device: string }> }): void => {
		for (const f of result.failed) failed.push(tokenIndexOf(f.device));
		if (++settled === meter.n) allSettled();
	};
	meter.handOver((i) => {
		const note = new apn.Notification();
		const aps = burstAps(i);
		note.topic = TOPIC;
		note.alert = aps.alert;
		note.badge = aps.badge;
		note.sound = aps.sound;
		note.payload = { burst: i };
		void provider.send(note, token(i)).then(onResult);
	});
	await finish;
	// Reports still due (its requests time out after 5 s); one that never comes leaves its notification lost.
	await Promise.race([done, delay(30_000)]);
	provider.shutdown();
	return { failed, reconnects: 0 };
}

const CHUNK_BYTES = 1 << 20;

/**
 * The least a client can keep for a burst, as the ceiling keeps it: each token's 32 bytes and each
 * payload's JSON bytes back to back in 1 MiB chunks, and where each payload is (6 bytes). Off the JS heap.
 */
class Arena {
	readonly #tokens: Buffer;
	readonly #at: Uint32Array;
	readonly #length: Uint16Array;
	readonly #chunks = [Buffer.allocUnsafe(CHUNK_BYTES)];
	#used = 0;

	constructor(n: number) {
		this.#tokens = Buffer.allocUnsafe(n * 32);
		this.#at = new Uint32Array(n);
		this.#length = new Uint16Array(n);
	}

	add(i: number, device: string, json: string): void {
		this.#tokens.write(device, i * 32, 32, 'hex');
		if (CHUNK_BYTES - this.#used < 3 * json.length) {
			this.#chunks.push(Buffer.allocUnsafe(CHUNK_BYTES));
			this.#used = 0;
		}
		const length = this.#chunks[this.#chunks.length - 1]!.write(json, this.#used);
		this.#at[i] = (this.#chunks.length - 1) * CHUNK_BYTES + this.#used;
		this.#length[i] = length;
		this.#used += length;
	}

	device(i: number): string {
		return this.#tokens.toString('hex', i * 32, i * 32 + 32);
	}

	body(i: number): Buffer {
		const at = this.#at[i]!;
		const offset = at % CHUNK_BYTES;
		return this.#chunks[Math.floor(at / CHUNK_BYTES)]!.subarray(offset, offset + this.#length[i]!);
	}
}

/** The ceiling: the hand-over loop stores the inputs in an {@link Arena} (made in the loop, so it is measured), then streams them. */
const h2BareBurst = (meter: BurstMeter): Promise<Seen> => {
	let arena: Arena | undefined;
	return h2Bare(
		meter.n,
		(i) => arena!.device(i),
		(i) => arena!.body(i),
		() => meter.handOver((i) => (arena ??= new Arena(meter.n)).add(i, token(i), JSON.stringify(burstPayload(i)))),
	);
};

async function burst(): Promise<void> {
	const meter = new BurstMeter();
	const clients: Partial<Record<ClientName, (meter: BurstMeter) => Promise<Seen>>> = { 'h2-bare': h2BareBurst, 'h2-worker': h2WorkerBurst, 'parse-apn': parseApnBurst };
	const run = clients[task.client];
	if (run === undefined) throw new Error(`${task.client}: no burst client`);
	const { failed, reconnects } = await run(meter);
	const measure = meter.result();
	sendAndExit({ type: 'result', failed, reconnects, peakRssBytes: peakRss(), baselineRssBytes: measure.baseline.rss, doneAt: Date.now(), burst: measure });
}

async function main(): Promise<void> {
	if (task.memory) return memory();
	if (task.workload.burst) return burst();
	const all = tokens(task.workload.n);
	// Node, the inputs and nothing else: every client starts from here and loads its library after.
	const baselineRssBytes = process.memoryUsage().rss;
	// apns-worker: one client, its options per protocol and backend; handed everything at once or paced.
	const apnsWorker: Partial<Record<ClientName, ApnsManagerOptions>> = {
		worker: BINARY,
		'worker-threaded': { ...BINARY, ...threaded(1) },
		'worker-threaded2': { ...BINARY, ...threaded(2) },
		'worker-threaded2-all': { ...BINARY, ...threaded(2), minThreads: 2 },
		'h2-worker': H2_WORKER,
		'h2-threaded': { ...H2_WORKER, ...threaded(1) },
		'h2-threaded2': { ...H2_WORKER, ...threaded(2) },
		'h2-threaded2-all': { ...H2_WORKER, ...threaded(2), minThreads: 2 },
	};
	const peers: Partial<Record<ClientName, (all: string[]) => Promise<Seen>>> = { raw, 'node-apn': nodeApn, 'h2-bare': h2BareClean, 'parse-apn': parseApn, apns2 };
	const options = apnsWorker[task.client];
	if (task.workload.paced === true && options === undefined) throw new Error(`${task.client}: no paced client`);
	const { failed, reconnects, events, threadsReadyMs, threadsUsed } = await (options === undefined ? peers[task.client]!(all) : manager(options, (task.workload.paced === true ? paced : broadcast)(all)));
	const loop = loopMeter.result;
	sendAndExit({ type: 'result', failed, reconnects, peakRssBytes: peakRss(), baselineRssBytes, doneAt: Date.now(), ...(loop === undefined ? {} : { loop }), ...(events === undefined ? {} : { events }), ...(threadsReadyMs === undefined ? {} : { threadsReadyMs }), ...(threadsUsed === undefined ? {} : { threadsUsed }) });
}

void main();
