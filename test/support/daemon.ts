/**
 * The daemon as its users run it: `apns-worker serve` in a child process, on 127.0.0.1 port 0, with a
 * data directory of the test's own; and a small JSON client for its API.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { fileURLToPath } from 'node:url';
import { startMockApnsHttp2, type MockApnsHttp2, type MockApnsHttp2Faults } from '../../src/testing.js';
import { verified } from '../../examples/verify-webhook.js';
import { certs } from './helpers.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export const SECRET = 'test-secret-0123456789abcdef';
export const API_KEY = 'test-api-key-0123456789abcdef';
export const TOPIC = 'com.example.daemon';
/** A webhook's signing secret (32 characters or more). */
export const WEBHOOK_SECRET = 'webhook-secret-0123456789abcdefghij';

/** What a receiver runs (examples/verify-webhook.ts, shown in the README): every webhook test receives through it. */
export function verifySignature(secret: string, header: string | undefined, body: string): boolean {
	return verified(secret, header, body);
}
const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
export const P8 = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'DAEMONKEY1', teamId: 'DAEMONTEAM' };

/** A fresh data directory, removed after the test. */
export function dataDir(t: TestContext): string {
	const dir = mkdtempSync(join(tmpdir(), 'apns-worker-daemon-'));
	t.after(() => rmSync(dir, { recursive: true, force: true }));
	return dir;
}

export interface RunningDaemon {
	readonly url: string;
	readonly child: ChildProcess;
	/** What it wrote to stderr and stdout so far. */
	readonly output: () => string;
	/** Its exit: code and signal. */
	readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
	api(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<{ status: number; body: any }>;
}

/** Start `apns-worker serve` on `dir` (undefined: no --data, as with --redis); resolves once it listens (rejects if it exits first). `nodeArgs` go to node itself. */
export async function startDaemon(t: TestContext, dir: string | undefined, options: { env?: Record<string, string | undefined>; args?: string[]; nodeArgs?: string[] } = {}): Promise<RunningDaemon> {
	const env: Record<string, string | undefined> = { ...process.env, APNS_WORKER_SECRET: SECRET, APNS_WORKER_API_KEY: API_KEY, LOG_LEVEL: 'warn', ...options.env };
	for (const [k, v] of Object.entries(env)) if (v === undefined) delete env[k];
	const child = spawn(process.execPath, [...(options.nodeArgs ?? []), CLI, 'serve', '--port', '0', ...(dir === undefined ? [] : ['--data', dir]), '--shutdown-timeout', '5', ...(options.args ?? [])], { env: env as NodeJS.ProcessEnv, stdio: ['ignore', 'pipe', 'pipe'] });
	let output = '';
	child.stdout!.on('data', (c: Buffer) => (output += c.toString()));
	child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
	const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
	t.after(async () => {
		if (child.exitCode === null && child.signalCode === null) {
			child.kill('SIGKILL');
			await exited;
		}
	});
	const url = await new Promise<string>((resolve, reject) => {
		const onData = (): void => {
			// Listening on every address (0.0.0.0): reached on loopback.
			const m = /listening on (https?):\/\/(127\.0\.0\.1|0\.0\.0\.0):(\d+)/.exec(output);
			if (m !== null) {
				child.stderr!.off('data', onData);
				resolve(`${m[1]}://127.0.0.1:${m[3]}`);
			}
		};
		child.stderr!.on('data', onData);
		void exited.then(({ code }) => reject(new Error(`the daemon exited (code ${code}) before listening:\n${output}`)));
	});
	const key = options.env !== undefined && 'APNS_WORKER_API_KEY' in options.env ? options.env['APNS_WORKER_API_KEY'] : API_KEY;
	return {
		url,
		child,
		output: () => output,
		exited,
		api: (method, path, body, headers = {}) => request(url, method, path, body, { ...(key === undefined ? {} : { authorization: `Bearer ${key}` }), ...headers }),
	};
}

/** One JSON request; `body` as a string is sent as it is (malformed JSON tests). */
export async function request(url: string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; body: any }> {
	const res = await fetch(url + path, {
		method,
		headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
		...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
	});
	const text = await res.text();
	let parsed: unknown = text;
	try {
		parsed = JSON.parse(text);
	} catch {
		// not JSON (metrics)
	}
	return { status: res.status, body: parsed };
}

/** An HTTP/2 mock APNs trusting {@link P8}, closed after the test. */
export async function mockApns(t: TestContext, faults: MockApnsHttp2Faults = {}, record = true, onAccepted?: (token: string) => void): Promise<MockApnsHttp2> {
	const c = certs();
	const mock = await startMockApnsHttp2({ server: c.server, keys: [{ keyId: P8.keyId, teamId: P8.teamId, publicKey: p8.publicKey }], topics: [TOPIC], faults, record, ...(onAccepted === undefined ? {} : { onAccepted }) });
	t.after(() => mock.close());
	return mock;
}

/** The body that provisions an app against `mock` with token auth. */
export function appBody(mock: { host: string; port: number }, extra: Record<string, unknown> = {}): Record<string, unknown> {
	return { environment: 'production', topic: TOPIC, token: P8, gateway: { host: mock.host, port: mock.port }, ca: certs().ca.cert, ...extra };
}

/** Poll until `check` returns a value (not undefined), at most `tries` times, `everyMs` apart. */
export async function until<T>(check: () => Promise<T | undefined>, what: string, tries = 400, everyMs = 50): Promise<T> {
	for (let i = 0; i < tries; i++) {
		const value = await check();
		if (value !== undefined) return value;
		await new Promise((resolve) => setTimeout(resolve, everyMs));
	}
	throw new Error(`gave up waiting for ${what}`);
}

/** How `tokens` fared at `mock`: never received (lost), and received more than once (the extra copies). */
export function tally(mock: { counts: ReadonlyMap<string, number> }, tokens: Iterable<string>): { lost: number; duplicates: number } {
	let lost = 0;
	let duplicates = 0;
	for (const token of tokens) {
		const n = mock.counts.get(token) ?? 0;
		if (n === 0) lost++;
		else duplicates += n - 1;
	}
	return { lost, duplicates };
}

/**
 * Node arguments that make `packages` unresolvable in the child (a module resolve hook): the daemon then
 * runs as on a machine where they were never installed.
 */
export function without(...packages: string[]): string[] {
	const hook = `export async function resolve(specifier, context, next) { if (${JSON.stringify(packages)}.includes(specifier)) throw Object.assign(new Error('Cannot find package ' + specifier), { code: 'ERR_MODULE_NOT_FOUND' }); return next(specifier, context); }`;
	const register = `import { register } from 'node:module'; register(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)});`;
	return ['--import', `data:text/javascript,${encodeURIComponent(register)}`];
}
