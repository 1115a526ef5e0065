/**
 * The stores the conformance suite (test/store-conformance.test.ts) runs against: each a real one (a
 * SQLite file in a directory of the test's own, a `redis-server` of its own on 127.0.0.1), opened the way
 * `apns-worker serve` opens it. A third store is one more entry in {@link STORES}.
 */
import { fork } from 'node:child_process';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import type { PushStore } from '../../src/server/store.js';
import { RedisStore } from '../../src/server/stores/redis.js';
import { SqliteStore } from '../../src/server/stores/sqlite.js';
import { dataDir } from './daemon.js';
import { REDIS_MISSING, startRedis } from './redis.js';

/** How a store is opened again, by this process or another: plain data. */
export type StoreSpec = { readonly kind: 'sqlite'; readonly dir: string } | { readonly kind: 'redis'; readonly url: string; readonly lockMs: number; readonly retentionMs: number };

export interface StoreUnderTest {
	readonly name: string;
	/** Why it cannot run here, or false. */
	readonly skip: string | false;
	/** Where a fresh store of this kind lives (removed after the test). */
	place(t: TestContext, options?: { readonly lockMs?: number; readonly retentionMs?: number }): Promise<StoreSpec & { stop?(): Promise<void>; restart?(): Promise<void> }>;
}

export const STORES: readonly StoreUnderTest[] = [
	{ name: 'sqlite', skip: false, place: async (t) => ({ kind: 'sqlite', dir: dataDir(t) }) },
	{ name: 'redis', skip: REDIS_MISSING, place: placeRedis },
];

async function placeRedis(t: TestContext, options: { readonly lockMs?: number; readonly retentionMs?: number } = {}): Promise<StoreSpec & { stop(): Promise<void>; restart(): Promise<void> }> {
	const r = await startRedis({ persist: true });
	defer(t, () => r.close()); // after the stores on it are closed
	return { kind: 'redis', url: r.url, lockMs: options.lockMs ?? 30_000, retentionMs: options.retentionMs ?? 3_600_000, stop: () => r.stop(), restart: () => r.restart() };
}

const silent = pino({ level: 'silent' });

const deferred = new WeakMap<TestContext, Array<() => unknown>>();

/** Run `fn` when the test ends, before whatever was deferred earlier (a work source stops before its store closes). */
export function defer(t: TestContext, fn: () => unknown): void {
	let stack = deferred.get(t);
	if (stack === undefined) {
		const fns: Array<() => unknown> = [];
		stack = fns;
		deferred.set(t, fns);
		t.after(async () => {
			for (const f of fns.reverse()) await f();
		});
	}
	stack.push(fn);
}

/** Open the store at `spec` (closed after the test). */
export async function openStore(t: TestContext | undefined, spec: StoreSpec): Promise<PushStore> {
	const store = spec.kind === 'sqlite' ? new SqliteStore(spec.dir) : await RedisStore.open({ url: spec.url, lockMs: spec.lockMs, retentionMs: spec.retentionMs, logger: silent });
	let closed = false;
	const close = store.close.bind(store);
	store.close = async () => {
		if (closed) return;
		closed = true;
		await close();
	};
	if (t !== undefined) defer(t, () => store.close());
	return store;
}

const HOLDER = fileURLToPath(new URL('./store-holder.js', import.meta.url));

/**
 * A process that opens the store at `spec`, takes units and never finishes them, and says which it took;
 * resolves once it holds `tokens` tokens. Killed with SIGKILL by `kill()` (and after the test).
 */
export async function holder(t: TestContext, spec: StoreSpec, tokens: number): Promise<{ held: number; kill(): Promise<void> }> {
	const child = fork(HOLDER, [JSON.stringify(spec), String(tokens)], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
	let stderr = '';
	child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
	const kill = async (): Promise<void> => {
		if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
		await exited;
	};
	t.after(kill);
	const held = await new Promise<number>((resolve, reject) => {
		child.on('message', (m: { held: number }) => resolve(m.held));
		void exited.then(() => reject(new Error(`the holder exited before holding ${tokens} tokens: ${stderr}`)));
	});
	return { held, kill };
}

/**
 * A condition to wait on, woken by whoever changes what it reads: `until(ready)` resolves once `ready()`
 * holds and fails after `ms` with `state()` in the message (a store that stopped handing out).
 */
export function wakeable(state: () => string): { wake(): void; until(ready: () => boolean, ms?: number): Promise<void> } {
	let wakeOne: (() => void) | undefined;
	return {
		wake: () => wakeOne?.(),
		until: async (ready, ms = 30_000) => {
			const deadline = performance.now() + ms;
			while (!ready()) {
				let timer: NodeJS.Timeout | undefined;
				const woken = await new Promise<boolean>((resolve) => {
					wakeOne = () => resolve(true);
					timer = setTimeout(() => resolve(false), Math.max(0, deadline - performance.now()));
				});
				clearTimeout(timer);
				if (!woken && !ready()) throw new Error(`not reached in ${ms} ms: ${state()}`);
			}
		},
	};
}
