/**
 * One benchmark run of one client, in its own process (so its peak RSS is its own). The orchestrator
 * passes the task in BENCH_TASK; the client reports when it starts sending, and, once told the gateway
 * has everything (or has stalled), what it saw: errors reported, reconnects, peak RSS.
 */
import { createRequire } from 'node:module';
import tls from 'node:tls';
import { ApnsManager } from '../src/index.js';
import { frameBytes, writeFrame } from '../src/frame.js';
import { PAYLOAD, tokens, type ClientMessage, type ClientTask } from './common.js';

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

async function raw(all: string[]): Promise<{ errors: number; reconnects: number }> {
	// The ceiling for any client: frames encoded in a loop into 1 MiB chunks, written to one socket. Same
	// start as every other client (tokens as hex strings, a payload object, no connection yet); no
	// validation, no retention, no error handling.
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
			o = writeFrame(chunk, o, token, 0, payload, i + 1, 0, 10);
		}
		if (!socket.write(chunk)) await new Promise((resolve) => socket.once('drain', resolve));
	}
	await finish;
	socket.destroy();
	return { errors: 0, reconnects: 0 };
}

async function worker(all: string[]): Promise<{ errors: number; reconnects: number }> {
	let errors = 0;
	const manager = new ApnsManager({
		cert: task.certs.client.cert,
		key: task.certs.client.key,
		ca: task.certs.ca,
		gateway: { host: '127.0.0.1', port: task.port },
		errorHandler: () => errors++,
	});
	send({ type: 'started', at: Date.now() });
	manager.sendAps(all, PAYLOAD.aps);
	await finish;
	await manager.flushMessages({ timeoutMs: 10_000 }).catch(() => {});
	const reconnects = Math.max(0, manager.stats.connectAttempts - 1);
	manager.destroy();
	return { errors, reconnects };
}

async function nodeApn(all: string[]): Promise<{ errors: number; reconnects: number }> {
	const apn = requireFromBench('apn') as NodeApn;
	let errors = 0;
	let connects = 0;
	const connection = new apn.Connection({
		cert: Buffer.from(task.certs.client.cert),
		key: Buffer.from(task.certs.client.key),
		ca: [Buffer.from(task.certs.ca)],
		gateway: '127.0.0.1',
		port: task.port,
		production: true,
	});
	connection.on('transmissionError', () => errors++);
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
	return { errors, reconnects: Math.max(0, connects - 1) };
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
	let keep: unknown;
	const before = settle();
	let list: string[] | undefined = tokens(n);
	if (task.client === 'worker') {
		const manager = new ApnsManager({ cert: task.certs.client.cert, key: task.certs.client.key, ca: task.certs.ca, gateway: { host: '127.0.0.1', port: task.port }, reconnect: { initialDelayMs: 60_000, maxDelayMs: 60_000 } });
		manager.on('connectError', () => {});
		manager.sendAps(list, PAYLOAD.aps);
		keep = manager;
	} else {
		const apn = requireFromBench('apn') as NodeApn;
		const connection = new apn.Connection({ cert: Buffer.from(task.certs.client.cert), key: Buffer.from(task.certs.client.key), ca: [Buffer.from(task.certs.ca)], gateway: '127.0.0.1', port: task.port, production: true, connectionRetryLimit: 1 });
		connection.on('error', () => {});
		connection.on('socketError', () => {});
		connection.on('transmissionError', () => {});
		const note = new apn.Notification();
		note.alert = PAYLOAD.aps.alert;
		connection.pushNotification(note, list);
		keep = connection;
	}
	list = undefined; // the caller's token strings are the caller's: measure only what the library keeps
	const after = settle();
	send({ type: 'memory', heapBytes: after.heapUsed - before.heapUsed, externalBytes: after.arrayBuffers - before.arrayBuffers, n, peakRssBytes: peakRss() });
	void keep;
	process.exit(0);
}

async function main(): Promise<void> {
	if (task.memory) return memory();
	const all = tokens(task.workload.n);
	const run = task.client === 'raw' ? raw : task.client === 'worker' ? worker : nodeApn;
	const { errors, reconnects } = await run(all);
	send({ type: 'result', errors, reconnects, peakRssBytes: peakRss(), doneAt: Date.now() });
	setImmediate(() => process.exit(0));
}

void main();
