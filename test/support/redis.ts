/**
 * A real `redis-server` (Debian's package) for the Redis daemon's tests and benchmark: started on
 * 127.0.0.1 on a free port with a directory of its own, stopped after the test. Without the binary the
 * tests that need it are skipped with {@link REDIS_MISSING} as the reason — never silently absent.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function which(binary: string): string | undefined {
	try {
		return execFileSync('sh', ['-c', `command -v ${binary}`], { encoding: 'utf8' }).trim() || undefined;
	} catch {
		return undefined;
	}
}

const BINARY = which('redis-server');

/** Why Redis tests are skipped here, or false when `redis-server` is installed. */
export const REDIS_MISSING: string | false = BINARY === undefined ? 'redis-server is not installed (apt-get install redis-server; .ci/run installs it)' : false;

export interface RunningRedis {
	readonly url: string;
	readonly port: number;
	/** Stop it (SIGTERM; with `persist`, what it had is on disk for {@link RunningRedis.restart}). */
	stop(): Promise<void>;
	/** Start it again on the same port and directory. */
	restart(): Promise<void>;
	/**
	 * Commands Redis ran since it started: INFO's total_commands_processed and the sum of its commandstats
	 * (both count what scripts run inside, each call once; INFO itself is left out of the second).
	 */
	commands(): Promise<{ processed: number; commandstats: number }>;
}

async function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const s = createServer();
		s.once('error', reject);
		s.listen(0, '127.0.0.1', () => {
			const port = (s.address() as { port: number }).port;
			s.close(() => resolve(port));
		});
	});
}

/**
 * Start `redis-server`. `persist`: append-only file with fsync on every write, so a restart keeps
 * everything it acknowledged (what a deployment that must lose nothing configures).
 */
export async function startRedis(options: { persist?: boolean } = {}): Promise<RunningRedis & { close(): Promise<void> }> {
	if (BINARY === undefined) throw new Error(REDIS_MISSING as string);
	const dir = mkdtempSync(join(tmpdir(), 'apns-worker-redis-'));
	let port = 0;
	let child: ChildProcess | undefined;
	const launch = async (): Promise<void> => {
		const args = ['--bind', '127.0.0.1', '--port', String(port), '--dir', dir, '--save', '', '--appendonly', options.persist === true ? 'yes' : 'no', '--appendfsync', 'always', '--logfile', ''];
		const proc = spawn(BINARY, args, { stdio: ['ignore', 'pipe', 'pipe'] });
		let out = '';
		proc.stdout!.on('data', (c: Buffer) => (out += c.toString()));
		proc.stderr!.on('data', (c: Buffer) => (out += c.toString()));
		await new Promise<void>((resolve, reject) => {
			const check = (): void => {
				if (out.includes('Ready to accept connections')) {
					proc.stdout!.off('data', check);
					resolve();
				}
			};
			proc.stdout!.on('data', check);
			proc.once('exit', (code) => reject(new Error(`redis-server exited (${code}): ${out}`)));
		});
		child = proc;
	};
	for (let attempt = 1; ; attempt++) {
		port = await freePort();
		try {
			await launch();
			break;
		} catch (error) {
			// Another process took the port between the probe and the start: another one.
			if (attempt >= 5 || !String(error).includes('Address already in use')) throw error;
		}
	}
	const stop = async (): Promise<void> => {
		const c = child;
		child = undefined;
		if (c === undefined || c.exitCode !== null) return;
		const exited = new Promise((resolve) => c.once('exit', resolve));
		c.kill('SIGTERM');
		await exited;
	};
	const url = `redis://127.0.0.1:${port}`;
	return {
		url,
		port,
		stop,
		restart: launch,
		async commands() {
			const { Redis } = await import('ioredis');
			const r = new Redis(url, { lazyConnect: true });
			await r.connect();
			const stats = await r.info('stats');
			const commandstats = await r.info('commandstats');
			r.disconnect();
			const processed = Number(/total_commands_processed:(\d+)/.exec(stats)![1]);
			let sum = 0;
			for (const m of commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) if (m[1] !== 'info') sum += Number(m[2]);
			return { processed, commandstats: sum };
		},
		async close() {
			await stop();
			rmSync(dir, { recursive: true, force: true });
		},
	};
}

/** A TCP relay to a Redis that can turn into a black hole: connections stay open, nothing gets through. */
export interface RedisRelay {
	readonly url: string;
	/** From now on nothing is relayed either way, and no connection is closed (a half-open link). */
	hold(): void;
	/**
	 * Relay again, for new connections. Those that saw the black hole are cut (their replies were lost),
	 * or, with `cut: false`, stay open and silent for ever: the client must notice and cut them itself.
	 */
	release(options?: { cut?: boolean }): void;
	close(): Promise<void>;
}

/** A {@link RedisRelay} on 127.0.0.1 (port 0) to Redis on `port`. */
export async function startRelay(port: number): Promise<RedisRelay> {
	const { connect } = await import('node:net');
	let holding = false;
	const pairs = new Set<{ a: import('node:net').Socket; b: import('node:net').Socket; held: boolean; dead: boolean }>();
	const server = createServer((a) => {
		const b = connect(port, '127.0.0.1');
		const pair = { a, b, held: holding, dead: false };
		pairs.add(pair);
		const end = (): void => {
			pairs.delete(pair);
			a.destroy();
			b.destroy();
		};
		a.on('data', (chunk: Buffer) => {
			if (holding) pair.held = true;
			else if (!pair.dead) b.write(chunk);
		});
		b.on('data', (chunk: Buffer) => {
			if (holding) pair.held = true;
			else if (!pair.dead) a.write(chunk);
		});
		for (const s of [a, b]) {
			s.on('error', end);
			s.on('close', end);
		}
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	return {
		url: `redis://127.0.0.1:${(server.address() as { port: number }).port}`,
		hold() {
			holding = true;
			for (const p of pairs) p.held = true;
		},
		release(options = {}) {
			holding = false;
			for (const p of [...pairs]) {
				if (!p.held) continue;
				if (options.cut === false) {
					p.dead = true;
					continue;
				}
				p.a.destroy();
				p.b.destroy();
				pairs.delete(p);
			}
		},
		async close() {
			for (const p of pairs) {
				p.a.destroy();
				p.b.destroy();
			}
			await new Promise<void>((resolve) => server.close(() => resolve()));
		},
	};
}
