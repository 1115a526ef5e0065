/**
 * Issue 28's row: Live Activity broadcasts per second to the HTTP/2 mock (its own process), from the
 * library (`manager.broadcast()`, in this process) and through the daemon (`POST …/broadcasts`, SQLite,
 * a child process: from the first POST until the mock has every broadcast), alternating, each run
 * counting what the mock accepted: lost = sent − accepted, never above 0 for a complete run.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApnsManager } from '../src/index.js';
import { TOPIC, type Certs } from './common.js';
import { api, startDaemon } from './daemon.js';

export const BROADCAST_NAME = 'Live Activity broadcasts';
/** POSTs in flight at once against the daemon. */
const IN_FLIGHT = 16;
const PAYLOAD = { aps: { timestamp: 1_800_000_000, event: 'update', 'content-state': { home: 1, away: 0, minute: 63, scorer: 'A. Player' } } };

export interface BroadcastRun {
	readonly via: 'library' | 'daemon';
	readonly rep: number;
	readonly n: number;
	readonly perSecond: number;
	/** Daemon: POSTs answered 202 per second. */
	readonly acceptPerSecond?: number;
	readonly accepted: number;
	readonly lost: number;
}

interface Mock {
	readonly port: number;
	counts(): Promise<{ broadcasts: number; channels: number }>;
	stop(): void;
}

async function startMock(certs: Certs): Promise<Mock> {
	const child: ChildProcess = fork(fileURLToPath(new URL('./broadcast-mock.js', import.meta.url)), [], { env: { ...process.env, BENCH_CERTS: JSON.stringify(certs) }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
	const port = await new Promise<number>((resolve) => child.once('message', (m: { port: number }) => resolve(m.port)));
	return {
		port,
		counts: () =>
			new Promise((resolve) => {
				child.once('message', (m) => resolve(m as { broadcasts: number; channels: number }));
				child.send('count');
			}),
		stop: () => child.disconnect(),
	};
}

async function viaLibrary(mock: Mock, certs: Certs, n: number, rep: number): Promise<BroadcastRun> {
	const address = { host: '127.0.0.1', port: mock.port };
	const manager = new ApnsManager({ protocol: 'http2', token: { key: certs.p8.key, keyId: certs.p8.keyId, teamId: certs.p8.teamId }, topic: TOPIC, gateway: address, channelGateway: address, ca: certs.ca });
	try {
		const channel = await manager.createChannel();
		const before = (await mock.counts()).broadcasts;
		const t0 = performance.now();
		const receipts = Array.from({ length: n }, () => manager.broadcast(channel, PAYLOAD));
		const results = await Promise.all(receipts.map((r) => r.settled));
		const ms = performance.now() - t0;
		const accepted = (await mock.counts()).broadcasts - before;
		const sent = results.filter((r) => r.sent.length === 1).length;
		return { via: 'library', rep, n, perSecond: (n / ms) * 1000, accepted, lost: sent - accepted };
	} finally {
		await manager.close();
	}
}

async function viaDaemon(mock: Mock, certs: Certs, n: number, rep: number): Promise<BroadcastRun> {
	const dir = mkdtempSync(join(tmpdir(), 'apns-bench-broadcasts-'));
	const d = await startDaemon(dir);
	try {
		const address = { host: '127.0.0.1', port: mock.port };
		const put = await api(d.url, 'PUT', '/v1/apps/live', { environment: 'production', topic: TOPIC, token: { key: certs.p8.key, keyId: certs.p8.keyId, teamId: certs.p8.teamId }, gateway: address, channelGateway: address, ca: certs.ca });
		if (put.status !== 200) throw new Error(`provision: ${put.status} ${JSON.stringify(put.body)}`);
		const { channelId } = (await api(d.url, 'POST', '/v1/apps/live/channels', {})).body as { channelId: string };
		const before = (await mock.counts()).broadcasts;
		const t0 = performance.now();
		let next = 0;
		const worker = async (): Promise<void> => {
			while (next < n) {
				next++;
				const r = await api(d.url, 'POST', '/v1/apps/live/broadcasts', { channelId, ...PAYLOAD });
				if (r.status !== 202) throw new Error(`POST: ${r.status} ${JSON.stringify(r.body)}`);
			}
		};
		await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
		const acceptMs = performance.now() - t0;
		// Polled, 20 ms apart: the end is known to that grain (well under 1 % of a run).
		let accepted = 0;
		for (let idle = 0; accepted < n && idle < 1500; idle++) {
			accepted = (await mock.counts()).broadcasts - before;
			if (accepted < n) await new Promise((resolve) => setTimeout(resolve, 20));
		}
		const ms = performance.now() - t0;
		return { via: 'daemon', rep, n, perSecond: (accepted / ms) * 1000, acceptPerSecond: (n / acceptMs) * 1000, accepted, lost: n - accepted };
	} finally {
		await d.stop();
		rmSync(dir, { recursive: true, force: true });
	}
}

/** `reps` rounds of the library then the daemon, `n` broadcasts each. */
export async function runBroadcasts(certs: Certs, reps: number, n: number): Promise<BroadcastRun[]> {
	const mock = await startMock(certs);
	const runs: BroadcastRun[] = [];
	try {
		for (let rep = 1; rep <= reps; rep++) {
			for (const run of [viaLibrary, viaDaemon]) {
				const r = await run(mock, certs, n, rep);
				runs.push(r);
				process.stderr.write(`  ${BROADCAST_NAME} | ${r.via} #${rep}: ${Math.round(r.perSecond)}/s${r.acceptPerSecond === undefined ? '' : ` (accepted ${Math.round(r.acceptPerSecond)}/s)`}, lost ${r.lost}\n`);
			}
		}
	} finally {
		mock.stop();
	}
	return runs;
}

/** The row's table: medians per way in. */
export function broadcastTable(runs: readonly BroadcastRun[]): string[] {
	const median = (v: number[]): number => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)]!;
	const lines = [`| ${BROADCAST_NAME} (to the mock, its own process) | runs | broadcasts/s (median) | daemon accepts/s | lost (max) |`, '|---|---|---|---|---|'];
	for (const via of ['library', 'daemon'] as const) {
		const mine = runs.filter((r) => r.via === via);
		if (mine.length === 0) continue;
		const accepts = mine.flatMap((r) => (r.acceptPerSecond === undefined ? [] : [r.acceptPerSecond]));
		lines.push(`| ${via === 'library' ? 'library: manager.broadcast()' : 'daemon: POST …/broadcasts → the mock'} | ${mine.length} × ${mine[0]!.n.toLocaleString('en')} | ${Math.round(median(mine.map((r) => r.perSecond))).toLocaleString('en')} | ${accepts.length === 0 ? '—' : Math.round(median(accepts)).toLocaleString('en')} | ${Math.max(...mine.map((r) => r.lost))} |`);
	}
	return lines;
}
