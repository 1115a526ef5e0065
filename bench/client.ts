/**
 * One benchmark run of one client, in its own process (so its peak RSS is its own). The orchestrator
 * passes the task in BENCH_TASK; the client reports when it starts sending, and, once told the gateway
 * has everything (or has stalled), what it saw: the tokens it was told failed, reconnects, peak RSS, and
 * the RSS of the process before any client library was loaded (Node plus the input tokens), so that what
 * each library adds can be told apart from what every process here pays anyway.
 */
import { sign } from 'node:crypto';
import { createRequire } from 'node:module';
import type { ApnsManagerOptions, DeliveryError } from '../src/index.js';
import { PAYLOAD, tokenIndexOf, tokens, TOPIC, type ClientMessage, type ClientTask } from './common.js';

const task = JSON.parse(process.env['BENCH_TASK'] ?? 'null') as ClientTask;
const send = (message: ClientMessage): void => void process.send!(message);
const finish = new Promise<void>((resolve) => process.once('message', () => resolve()));
const peakRss = (): number => process.resourceUsage().maxRSS * 1024;

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
}

async function raw(all: string[]): Promise<Seen> {
	// The ceiling for any client: frames encoded in a loop into 1 MiB chunks, written to one socket. Same
	// start as every other client (tokens as hex strings, a payload object, no connection yet); no
	// validation, no retention, no error handling.
	const { default: tls } = await import('node:tls');
	const { frameBytes, writeFrame } = await import('../src/frame.js');
	send({ type: 'started', at: Date.now() });
	const socket = tls.connect({ host: '127.0.0.1', port: task.port, cert: task.certs.client.cert, key: task.certs.client.key, ca: task.certs.ca });
	await new Promise<void>((resolve, reject) => {
		socket.once('secureConnect', resolve);
		socket.once('error', reject);
	});
	const payload = Buffer.from(JSON.stringify(PAYLOAD));
	const size = frameBytes(payload.length);
	const perChunk = Math.floor((1 << 20) / size);
	const token = Buffer.allocUnsafe(32);
	for (let i = 0; i < all.length; ) {
		const count = Math.min(perChunk, all.length - i);
		const chunk = Buffer.allocUnsafe(count * size);
		let o = 0;
		for (let k = 0; k < count; k++, i++) {
			token.write(all[i]!, 'hex');
			o = writeFrame(chunk, o, token, 0, payload, 0, payload.length, i + 1, 0, 10);
		}
		if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
	}
	await finish;
	socket.destroy();
	return { failed: [], reconnects: 0 };
}

/** apns-worker on either protocol: queue everything in one call, then flush. */
async function manager(all: string[], options: ApnsManagerOptions): Promise<Seen> {
	const { ApnsManager } = await import('../src/index.js');
	const failed: number[] = [];
	const m = new ApnsManager({ protocol: 'binary', ca: task.certs.ca, gateway: { host: '127.0.0.1', port: task.port }, errorHandler: (e: DeliveryError) => failed.push(tokenIndexOf(e.token)), ...options });
	send({ type: 'started', at: Date.now() });
	m.sendAps(all, PAYLOAD.aps);
	await finish;
	await m.flushMessages({ timeoutMs: 10_000 }).catch(() => {});
	const reconnects = Math.max(0, m.stats.connectAttempts - 1);
	m.destroy();
	return { failed, reconnects };
}

const worker = (all: string[]) => manager(all, { cert: task.certs.client.cert, key: task.certs.client.key });

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
	send({ type: 'started', at: Date.now() });
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

async function h2Bare(all: string[]): Promise<Seen> {
	// The HTTP/2 ceiling: one session, 1,000 streams in flight, no retries, no bookkeeping.
	const { default: http2 } = await import('node:http2');
	send({ type: 'started', at: Date.now() });
	const session = http2.connect(`https://127.0.0.1:${task.port}`, { ca: task.certs.ca });
	const authorization = `bearer ${jwt()}`;
	const body = Buffer.from(JSON.stringify(PAYLOAD));
	let next = 0;
	let open = 0;
	const failed: number[] = [];
	await new Promise<void>((resolve) => {
		const launch = (): void => {
			while (open < 1000 && next < all.length) {
				const i = next++;
				const stream = session.request({ ':method': 'POST', ':path': `/3/device/${all[i]}`, 'apns-topic': TOPIC, 'apns-push-type': 'alert', authorization });
				open++;
				stream.on('response', (h) => {
					if (h[':status'] !== 200) failed.push(i);
				});
				stream.on('error', () => {});
				stream.on('close', () => {
					open--;
					if (next < all.length) launch();
					else if (open === 0) resolve();
				});
				stream.resume();
				stream.end(body);
			}
		};
		launch();
	});
	await finish;
	session.destroy();
	return { failed, reconnects: 0 };
}

const h2Worker = (all: string[]) =>
	manager(all, { protocol: 'http2', token: { key: p8.key, keyId: p8.keyId, teamId: p8.teamId }, topic: TOPIC, retry: { initialDelayMs: 10, maxDelayMs: 100 } });

interface ParseApn {
	Provider: new (options: object) => { send(note: unknown, tokens: string[]): Promise<{ sent: unknown[]; failed: Array<{ device: string }> }>; shutdown(): void };
	Notification: new (payload?: object) => { topic: string; alert: unknown; badge: unknown; sound: unknown };
}

async function parseApn(all: string[]): Promise<Seen> {
	const apn = requireFromBench('@parse/node-apn') as ParseApn;
	const provider = new apn.Provider({ token: { key: p8.key, keyId: p8.keyId, teamId: p8.teamId }, address: '127.0.0.1', port: task.port, production: true, ca: [task.certs.ca] });
	const note = new apn.Notification();
	note.topic = TOPIC;
	note.alert = PAYLOAD.aps.alert;
	note.badge = PAYLOAD.aps.badge;
	note.sound = PAYLOAD.aps.sound;
	const failed: number[] = [];
	send({ type: 'started', at: Date.now() });
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
	send({ type: 'started', at: Date.now() });
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

async function main(): Promise<void> {
	if (task.memory) return memory();
	const all = tokens(task.workload.n);
	// Node, the inputs and nothing else: every client starts from here and loads its library after.
	const baselineRssBytes = process.memoryUsage().rss;
	const clients = { raw, worker, 'node-apn': nodeApn, 'h2-bare': h2Bare, 'h2-worker': h2Worker, 'parse-apn': parseApn, apns2 } as const;
	const run = clients[task.client];
	const { failed, reconnects } = await run(all);
	send({ type: 'result', failed, reconnects, peakRssBytes: peakRss(), baselineRssBytes, doneAt: Date.now() });
	setImmediate(() => process.exit(0));
}

void main();
