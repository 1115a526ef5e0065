/**
 * The benchmark's gateway process: the mock gateway from src/mock, in its own process so that it never
 * shares an event loop with the client being measured. A fresh gateway (new port, fresh fault counters)
 * is started for every run. Deliveries are counted per token index in a typed array (with `repeat`, each
 * token is expected that many times: a load generator that sends one body again and again).
 */
import { startMockGateway } from '../src/mock/gateway.js';
import { startMockApnsHttp2 } from '../src/mock/http2.js';
import { isRejected, token, tokenIndex, TOPIC, type Certs, type Faults, type ServerPoll, type ServerProgress, type ServerRequest } from './common.js';

const certs = JSON.parse(process.env['BENCH_CERTS'] ?? 'null') as Certs;
let gateway: { port: number; connections: number; silentDrops: number; errorsSent: number; close(): Promise<void> } | undefined;
let counts: Uint8Array | Uint32Array = new Uint8Array(0);
/** Deliveries of each token expected: 1, or more when a load generator sends one body again and again (h2load). */
let repeat = 1;
let n = 0;
let faults: Faults = {};
let unique = 0;
let expected = 0;
let completeAt: number | undefined;
let firstAt: number | undefined;
let lastProgressAt = Date.now();

function accepted(i: number): void {
	if (i >= n) return;
	const c = counts[i]!;
	if (repeat > 1 || c < 255) counts[i] = c + 1;
	if (c < repeat) {
		unique++;
		lastProgressAt = Date.now();
		if (unique === 1) firstAt = lastProgressAt;
		if (unique === expected) completeAt = lastProgressAt;
	}
}

async function start(size: number, f: Faults, protocol: 'binary' | 'http2', times = 1): Promise<number> {
	await gateway?.close();
	n = size;
	faults = f;
	repeat = times;
	counts = times > 1 ? new Uint32Array(size) : new Uint8Array(size);
	unique = 0;
	expected = 0;
	for (let i = 0; i < size; i++) if (!isRejected(i, f)) expected += times;
	completeAt = undefined;
	firstAt = undefined;
	lastProgressAt = Date.now();
	if (protocol === 'http2') {
		const unregistered = new Map<string, Date>();
		for (let i = 0; i < size; i++) if (isRejected(i, f)) unregistered.set(token(i), new Date(1_700_000_000_000));
		const mock = await startMockApnsHttp2({
			server: certs.server,
			keys: [{ keyId: certs.p8.keyId, teamId: certs.p8.teamId, publicKey: certs.p8.publicKey }],
			topics: [TOPIC],
			faults: { unregistered, ...(f.error500Every === undefined ? {} : { statusEvery: { every: f.error500Every, status: 500 } }) },
			record: false,
			onAccepted: (t) => accepted(Number.parseInt(t.slice(56), 16)),
		});
		gateway = {
			port: mock.port,
			get connections() {
				return mock.sessions;
			},
			silentDrops: 0,
			get errorsSent() {
				return mock.answered - mock.acceptedCount;
			},
			close: () => mock.close(),
		};
		return mock.port;
	}
	const binary = await startMockGateway({
		server: certs.server,
		ca: certs.ca,
		record: false,
		countTokens: false,
		faults: {
			...(f.rejectEvery === undefined ? {} : { rejectToken: (t: Buffer) => (isRejected(tokenIndex(t), f) ? 8 : undefined) }),
			...(f.shutdownEvery === undefined ? {} : { shutdownEvery: f.shutdownEvery }),
			...(f.silentDropEvery === undefined ? {} : { silentDropEvery: f.silentDropEvery }),
		},
		onAccepted: (t) => accepted(tokenIndex(t)),
	});
	gateway = {
		port: binary.port,
		get connections() {
			return binary.connections;
		},
		get silentDrops() {
			return binary.silentDrops;
		},
		get errorsSent() {
			return binary.errorsSent.length;
		},
		close: () => binary.close(),
	};
	return binary.port;
}

function poll(): ServerProgress {
	const cpu = process.cpuUsage();
	return { type: 'progress', unique, expected, completeAt, firstAt, lastProgressAt, cpuMicros: cpu.user + cpu.system };
}

function stats(): ServerPoll {
	const missing: number[] = [];
	let duplicated = 0;
	let lost = 0;
	let deliveredRejected = 0;
	for (let i = 0; i < n; i++) {
		const c = counts[i]!;
		if (isRejected(i, faults)) deliveredRejected += c;
		else if (c < repeat) {
			missing.push(i);
			lost += repeat - c;
		}
		else duplicated += c - repeat;
	}
	return {
		type: 'poll',
		unique,
		expected,
		completeAt,
		lastProgressAt,
		lost,
		missing,
		duplicated,
		deliveredRejected,
		connections: gateway?.connections ?? 0,
		silentDrops: gateway?.silentDrops ?? 0,
		errorsSent: gateway?.errorsSent ?? 0,
	};
}

process.on('message', (request: ServerRequest) => {
	switch (request.type) {
		case 'start':
			void start(request.n, request.faults, request.protocol, request.repeat).then((port) => process.send!({ type: 'started', port }));
			break;
		case 'poll':
			process.send!(poll());
			break;
		case 'stats':
			process.send!(stats());
			break;
		case 'stop':
			void (gateway?.close() ?? Promise.resolve()).then(() => process.exit(0));
			break;
	}
});
process.send!({ type: 'ready' });
