/**
 * Issue 11's figures for `apns-worker serve`, each against the daemon as users run it (a child process,
 * its SQLite file in a temporary directory):
 * - accepting: POSTs of 500 tokens, 4 in flight, to an app whose gateway is not reachable (nothing is
 *   sent, so the rate is the API's and the store's), until 1M are pending;
 * - memory: the daemon's peak RSS (the kernel's high-water mark) while it accepts those 1M, and after a
 *   restart with the 1M pending in the database;
 * - end to end: from the first POST to the HTTP/2 mock (its own process) having every notification,
 *   against the library alone (the bench's 'h2-worker' client) sending the same count to the same mock,
 *   alternating.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { TOPIC, token, type Certs } from './common.js';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const API_KEY = 'bench-api-key-0123456789';
export const PER_REQUEST = 500;
const IN_FLIGHT = 4;

export interface Daemon {
	readonly url: string;
	readonly child: ChildProcess;
	stop(): Promise<void>;
	/** The kernel's high-water mark of its RSS. */
	peakRss(): number;
}

/** Start `apns-worker serve` on `dir`, or on a Redis (`{ redis: url }`, with more flags in `args`). */
export async function startDaemon(where: string | { redis: string; args?: string[] }): Promise<Daemon> {
	const store = typeof where === 'string' ? ['--data', where] : ['--redis', where.redis, ...(where.args ?? [])];
	const child = spawn(process.execPath, [CLI, 'serve', '--port', '0', ...store, '--shutdown-timeout', '2'], {
		env: { ...process.env, APNS_WORKER_API_KEY: API_KEY, APNS_WORKER_SECRET: 'bench-secret-0123456789', LOG_LEVEL: 'error' },
		stdio: ['ignore', 'inherit', 'pipe'],
	});
	let err = '';
	const url = await new Promise<string>((resolve, reject) => {
		child.stderr!.on('data', (c: Buffer) => {
			err += c.toString();
			const m = /listening on (http:\/\/\S+)/.exec(err);
			if (m !== null) resolve(m[1]!);
		});
		child.once('exit', (code) => reject(new Error(`the daemon exited (${code}): ${err}`)));
	});
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
	return {
		url,
		child,
		stop: async () => {
			child.kill('SIGTERM');
			await exited;
		},
		peakRss: () => {
			const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
			return m === null ? Number.NaN : Number(m[1]) * 1024;
		},
	};
}

async function api(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
	const res = await fetch(url + path, { method, headers: { authorization: `Bearer ${API_KEY}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
	return { status: res.status, body: await res.json() };
}

/** Provision app `id` against `gateway` (token auth). */
export async function provision(d: Daemon, id: string, certs: Certs, gateway: { host: string; port: number }): Promise<void> {
	const r = await api(d.url, 'PUT', `/v1/apps/${id}`, { environment: 'production', topic: TOPIC, token: { key: certs.p8.key, keyId: certs.p8.keyId, teamId: certs.p8.teamId }, gateway, ca: certs.ca });
	if (r.status !== 200) throw new Error(`provision: ${r.status} ${JSON.stringify(r.body)}`);
}

/** POST tokens `from`..`to` (token(i) of common.ts) to app `id`, `perRequest` a request, IN_FLIGHT at once; the wall time. */
export async function postAll(d: Daemon, id: string, from: number, to: number, perRequest = PER_REQUEST): Promise<number> {
	const t0 = performance.now();
	let next = from;
	const worker = async (): Promise<void> => {
		while (next < to) {
			const start = next;
			next = Math.min(to, next + perRequest);
			const tokens: string[] = [];
			for (let i = start; i < next; i++) tokens.push(token(i));
			const r = await api(d.url, 'POST', `/v1/apps/${id}/notifications`, { notifications: [{ tokens, aps: { alert: 'Benchmark notification', badge: 1, sound: 'default' } }] });
			if (r.status !== 202) throw new Error(`POST: ${r.status} ${JSON.stringify(r.body)}`);
		}
	};
	await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
	return performance.now() - t0;
}

/** The daemon's metrics, as Prometheus text. */
export async function metricsOf(d: Daemon): Promise<string> {
	return (await fetch(`${d.url}/metrics`)).text();
}

export async function pendingOf(d: Daemon, id: string): Promise<number> {
	return (await api(d.url, 'GET', `/v1/apps/${id}`)).body.pending as number;
}

/** Accept `n` with nothing sent, then restart with them pending: rate and peak RSS of both phases. */
export async function acceptAndPending(certs: Certs, n: number): Promise<{ acceptPerSecond: number; pending: number; peakRssAccepting: number; peakRssRestarted: number; pendingAfterRestart: number }> {
	const dir = mkdtempSync(join(tmpdir(), 'apns-bench-daemon-'));
	try {
		let d = await startDaemon(dir);
		// Port 9 (discard) on loopback: nothing listens, so the manager backs off and nothing is sent.
		await provision(d, 'bench', certs, { host: '127.0.0.1', port: 9 });
		const ms = await postAll(d, 'bench', 0, n);
		const pending = await pendingOf(d, 'bench');
		const peakRssAccepting = d.peakRss();
		await d.stop();
		d = await startDaemon(dir);
		// Let it read its pending rows and hand a chunk to the manager (which cannot send them).
		await new Promise((resolve) => setTimeout(resolve, 3000));
		const pendingAfterRestart = await pendingOf(d, 'bench');
		const peakRssRestarted = d.peakRss();
		await d.stop();
		return { acceptPerSecond: (n / ms) * 1000, pending, peakRssAccepting, peakRssRestarted, pendingAfterRestart };
	} finally {
		rmSync(dir, { recursive: true, force: true });
	}
}
