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
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

/** One API call with the bench's key. */
export async function api(url: string, method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
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

/** What one h2load run of POSTs measured (its own report, parsed). */
export interface H2loadRun {
	/** Requests h2load finished, and of those answered 2xx. */
	readonly requests: number;
	readonly ok: number;
	/** From h2load's start to its last answer, in ms (its "finished in"). */
	readonly ms: number;
}

/** Whether h2load (nghttp2's load generator) is on this machine: undefined, or why not. */
export async function h2loadMissing(): Promise<string | undefined> {
	return new Promise((resolve) => {
		const child = spawn('h2load', ['--version'], { stdio: 'ignore' });
		child.once('error', () => resolve('h2load is not installed (Debian: nghttp2-client)'));
		child.once('exit', (code) => resolve(code === 0 ? undefined : `h2load --version exited ${code}`));
	});
}

/**
 * POST `requests` copies of one request of `perRequest` tokens (token(0)… of common.ts) to app `id` with
 * h2load over HTTP/1.1, `connections` at once, one request in flight on each.
 */
export async function h2loadPosts(d: Daemon, id: string, requests: number, perRequest: number, connections: number): Promise<H2loadRun> {
	const dir = mkdtempSync(join(tmpdir(), 'apns-bench-h2load-'));
	try {
		const body = join(dir, 'body.json');
		const tokens = Array.from({ length: perRequest }, (_, i) => token(i));
		writeFileSync(body, JSON.stringify({ notifications: [{ tokens, aps: { alert: 'Benchmark notification', badge: 1, sound: 'default' } }] }));
		const args = ['--h1', '-n', String(requests), '-c', String(connections), '-m', '1', '-d', body, '-H', `authorization: Bearer ${API_KEY}`, '-H', 'content-type: application/json', `${d.url}/v1/apps/${id}/notifications`];
		const out = await new Promise<string>((resolve, reject) => {
			const child = spawn('h2load', args, { stdio: ['ignore', 'pipe', 'pipe'] });
			let text = '';
			child.stdout!.on('data', (c: Buffer) => (text += c.toString()));
			child.stderr!.on('data', (c: Buffer) => (text += c.toString()));
			child.once('error', reject);
			child.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`h2load exited ${code}: ${text}`))));
		});
		const finished = /finished in ([\d.]+)(ms|s)/.exec(out);
		const status = /status codes: (\d+) 2xx/.exec(out);
		const done = /requests: \d+ total, \d+ started, (\d+) done/.exec(out);
		if (finished === null || status === null || done === null) throw new Error(`cannot read h2load's report: ${out}`);
		return { requests: Number(done[1]), ok: Number(status[1]), ms: Number(finished[1]) * (finished[2] === 's' ? 1000 : 1) };
	} finally {
		rmSync(dir, { recursive: true, force: true });
	}
}

/** The daemon's resident set now (VmRSS), in bytes. */
export function rssOf(d: Daemon): number {
	const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${d.child.pid}/status`, 'utf8'));
	return m === null ? Number.NaN : Number(m[1]) * 1024;
}

/**
 * POST `perSecond` notifications a second, in requests of `perRequest` distinct tokens (token(i) of
 * common.ts, from 0 on), for `ms`; `sample` is called every `sampleMs`. Requests are started on a fixed
 * schedule (one every perRequest / perSecond seconds), so a slow answer does not lower the offered rate;
 * the count POSTed.
 */
export async function postPaced(d: Daemon, id: string, perSecond: number, perRequest: number, ms: number, sampleMs: number, sample: (elapsedMs: number, posted: number) => void): Promise<number> {
	const t0 = performance.now();
	const every = (perRequest / perSecond) * 1000;
	let posted = 0;
	let nextSample = sampleMs;
	const inFlight = new Set<Promise<void>>();
	for (let k = 0; ; k++) {
		const at = k * every;
		if (at >= ms) break;
		const wait = t0 + at - performance.now();
		if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
		while (performance.now() - t0 >= nextSample) {
			sample(nextSample, posted);
			nextSample += sampleMs;
		}
		const first = k * perRequest;
		const tokens: string[] = [];
		for (let i = first; i < first + perRequest; i++) tokens.push(token(i));
		const p = api(d.url, 'POST', `/v1/apps/${id}/notifications`, { notifications: [{ tokens, aps: { alert: 'Soak notification', badge: 1 } }] }).then((r) => {
			if (r.status !== 202) throw new Error(`POST: ${r.status} ${JSON.stringify(r.body)}`);
			posted += perRequest;
		});
		inFlight.add(p);
		void p.finally(() => inFlight.delete(p)).catch(() => {});
	}
	await Promise.all(inFlight);
	while (nextSample <= ms) {
		sample(nextSample, posted);
		nextSample += sampleMs;
	}
	return posted;
}
