/**
 * Shared test helpers: certificates (made once per process), mock servers that are closed after each
 * test, managers that are destroyed after each test, and delivery accounting.
 */
import type { TestContext } from 'node:test';
import { ApnsManager, type ApnsManagerOptions } from '../../src/index.js';
import { makeTestCertificates, startMockGateway, startMockFeedback, type MockGateway, type MockGatewayFaults, type MockGatewayOptions, type TestCertificates } from '../../src/testing.js';
import type { MockFeedback, MockFeedbackOptions } from '../../src/mock/feedback.js';
import type { BackendUnderTest } from './backends.js';

let cached: TestCertificates | undefined;
export function certs(): TestCertificates {
	cached ??= makeTestCertificates();
	return cached;
}

/** `n` distinct tokens; `seed` keeps sets from different tests apart. */
export function makeTokens(n: number, seed = 0): string[] {
	const out = new Array<string>(n);
	for (let i = 0; i < n; i++) out[i] = `${seed.toString(16).padStart(8, '0')}${'ab'.repeat(24)}${i.toString(16).padStart(8, '0')}`;
	return out;
}

export async function gateway(t: TestContext, faults: MockGatewayFaults = {}, options: Omit<MockGatewayOptions, 'server' | 'ca' | 'faults'> = {}): Promise<MockGateway> {
	const c = certs();
	const gw = await startMockGateway({ ...options, server: c.server, ca: c.ca.cert, faults });
	t.after(() => gw.close());
	return gw;
}

export async function feedbackService(t: TestContext, options: Omit<MockFeedbackOptions, 'server' | 'ca'> = {}): Promise<MockFeedback> {
	const c = certs();
	const fb = await startMockFeedback({ server: c.server, ca: c.ca.cert, ...options });
	t.after(() => fb.close());
	return fb;
}

/** A manager talking to `gw` with the test client certificate; destroyed after the test. */
export function manager(t: TestContext, gw: { host: string; port: number } | undefined, options: Partial<ApnsManagerOptions> = {}): ApnsManager {
	const c = certs();
	const m = new ApnsManager({
		protocol: 'binary', // the mocks these tests start are binary unless they say otherwise
		cert: c.client.cert,
		key: c.client.key,
		ca: c.ca.cert,
		...(gw === undefined ? {} : { gateway: { host: gw.host, port: gw.port } }),
		...options,
	});
	t.after(() => m.destroy());
	return m;
}

/**
 * {@link manager} on `backend`: its options come first, so a test's own options (and a backend it names
 * itself) still win. The suites shadow `manager` with this inside their per-backend block, so no manager
 * built there can miss the backend.
 */
export function managerOn(backend: BackendUnderTest): typeof manager {
	return (t, gw, options = {}) => manager(t, gw, { ...backend.options, ...options });
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
export async function closedPort(): Promise<number> {
	const net = await import('node:net');
	const server = net.createServer();
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	const { port } = server.address() as { port: number };
	await new Promise<void>((resolve) => server.close(() => resolve()));
	return port;
}

/** Compare what the gateway accepted with what was sent: every token once, rejected ones never. */
export function account(gw: MockGateway, sent: readonly string[], rejected: ReadonlySet<string> = new Set()): { lost: number; duplicated: number; deliveredRejected: number; unexpected: number } {
	let lost = 0;
	let duplicated = 0;
	let deliveredRejected = 0;
	const expected = new Set(sent);
	for (const token of sent) {
		const n = gw.counts.get(token) ?? 0;
		if (rejected.has(token)) deliveredRejected += n;
		else if (n === 0) lost++;
		else duplicated += n - 1;
	}
	let unexpected = 0;
	for (const token of gw.counts.keys()) if (!expected.has(token)) unexpected++;
	return { lost, duplicated, deliveredRejected, unexpected };
}

/** Resolve on the next `event` of `emitter`. */
export function once<T extends unknown[]>(emitter: { once(event: string, fn: (...args: T) => void): unknown }, event: string): Promise<T> {
	return new Promise((resolve) => emitter.once(event, (...args: T) => resolve(args)));
}

/** A TCP relay on 127.0.0.1 to `target`, whose connections can be frozen: a peer that hung. */
export interface Relay {
	readonly host: string;
	readonly port: number;
	/** Connections relayed so far. */
	readonly connections: number;
	/** Stop relaying on every connection open now, both ways, for good: nothing more reaches either end (PINGs included). */
	freeze(): void;
	close(): Promise<void>;
}

export async function startRelay(target: { host: string; port: number }): Promise<Relay> {
	const net = await import('node:net');
	const open = new Set<{ frozen: boolean; sockets: import('node:net').Socket[] }>();
	let connections = 0;
	const server = net.createServer((client) => {
		connections++;
		const upstream = net.connect(target.port, target.host);
		const pair = { frozen: false, sockets: [client, upstream] };
		open.add(pair);
		const relay = (from: import('node:net').Socket, to: import('node:net').Socket): void => {
			from.on('data', (chunk: Buffer) => {
				if (!pair.frozen) to.write(chunk);
			});
			from.on('close', () => {
				open.delete(pair);
				to.destroy();
			});
			from.on('error', () => {});
		};
		relay(client, upstream);
		relay(upstream, client);
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	return {
		host: '127.0.0.1',
		port: (server.address() as { port: number }).port,
		get connections() {
			return connections;
		},
		freeze() {
			for (const pair of open) pair.frozen = true;
		},
		async close() {
			for (const pair of open) for (const socket of pair.sockets) socket.destroy();
			await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}
