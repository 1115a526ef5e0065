/**
 * `apns-worker serve`: the push daemon (src/server/). Its dependencies — better-sqlite3, fastify, pino,
 * prom-client, and with `--redis` bullmq and ioredis — are optional peer dependencies of the package,
 * loaded only here, so that library users never install them (nor build SQLite); without them this
 * command says what to install.
 */
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createSecureContext, type Server as TlsServer } from 'node:tls';
import { ServerError } from '../index.js';
import type { PushStore } from '../server/store.js';
import { duration, parseFlags, UsageError, wholeNumber } from './args.js';

export const FLAGS = {
	host: { type: 'string' },
	port: { type: 'string' },
	data: { type: 'string' },
	'retention-hours': { type: 'string' },
	'retry-for': { type: 'string' },
	'shutdown-timeout': { type: 'string' },
	'insecure-plaintext-secrets': { type: 'boolean' },
	redis: { type: 'string' },
	concurrency: { type: 'string' },
	'lock-timeout': { type: 'string' },
	'tls-cert': { type: 'string' },
	'tls-key': { type: 'string' },
	'rotate-secret': { type: 'boolean' },
} as const;

/** What `serve` needs beyond the library (package.json peerDependencies), whatever it stores in. */
export const SERVER_PACKAGES = ['fastify@^5.12.8', 'pino@^10.4.0', 'prom-client@^15.1.3'] as const;
/** And for the embedded store (without `--redis`): never loaded with `--redis`. */
export const SQLITE_PACKAGES = ['better-sqlite3@^12.9.0'] as const;
/** And with `--redis`. */
export const REDIS_PACKAGES = ['bullmq@^6.7.0', 'ioredis@^6.0.0'] as const;

export const HELP = `Usage: apns-worker serve [--host 127.0.0.1] [--port 7077] [--data DIR] [options]

Run the push daemon: many apps, one HTTP/2 manager each, every accepted notification stored in
SQLite (DIR/apns-worker.db) until it is settled, so a crash or a restart loses nothing.
JSON over HTTP; the routes are in GET /openapi.json and docs/daemon.md.

  --host HOST                  address to listen on (default 127.0.0.1)
  --port N                     port (default 7077; 0 picks a free one)
  --data DIR                   where the database and the API key live (default ./apns-worker-data)
  --retention-hours N          keep settled outcomes and unread feedback this long (default 168;
                               feedback a webhook has not received yet is kept until it has)
  --retry-for DURATION         retry a notification APNs answers "not now" (429, 500, 503, no answer,
                               a lost connection), or whose app is stopped, this long after it was
                               accepted, e.g. 6h, 3d (default 24h; at most 30d, as long as APNs
                               stores one); its expiration, when sooner, ends it first. Then it is
                               recorded failed with APNs' last answer, or "Expired"
  --shutdown-timeout SECONDS   on SIGTERM/SIGINT, flush this long; the rest is kept (default 10)
  --insecure-plaintext-secrets store credentials unencrypted when APNS_WORKER_SECRET is not set
  --tls-cert FILE --tls-key FILE
                               serve the API over HTTPS only (PEM; the chain in the cert file); both
                               files are read again on SIGHUP, without dropping work. Without them, a
                               --host other than loopback is warned about at every start: PUT bodies
                               carry .p8 keys and passphrases

Scale out (several daemons, any machines, one Redis; docs/scale-out.md):
  --redis URL                  keep apps, notifications (BullMQ jobs), outcomes and feedback in Redis
                               instead of SQLite (also APNS_WORKER_REDIS); needs APNS_WORKER_API_KEY
                               and APNS_WORKER_SECRET, the same on every daemon; --data is not used
  --concurrency N              jobs (up to 5,000 tokens each) this daemon works at once (default 16)
  --lock-timeout SECONDS       a daemon that stops (kill -9, lost machine) has its jobs taken over by
                               the others after one to two times this long (default 30)

Secrets:
  --rotate-secret              re-seal every stored credential under APNS_WORKER_SECRET (the new one),
                               opening them with APNS_WORKER_SECRET_OLD, in one transaction; then exit.
                               Stop the daemons first (with --redis: every one), start them with the new
                               secret after. Credentials stored with --insecure-plaintext-secrets are
                               sealed by any start that has APNS_WORKER_SECRET.

Environment:
  APNS_WORKER_API_KEY   the API key (Authorization: Bearer KEY); without it one is generated on
                        first start into DIR/api-key (mode 0600) and printed once
  APNS_WORKER_SECRET    the key credentials are encrypted under (AES-256-GCM); without it (and
                        without --insecure-plaintext-secrets) no credentials are stored
  LOG_LEVEL             pino level (default info); logs are JSON lines on stdout

Needs: npm install ${[...SERVER_PACKAGES, ...SQLITE_PACKAGES].join(' ')}
  and with --redis, instead of better-sqlite3: npm install ${REDIS_PACKAGES.join(' ')}
`;

export async function run(args: readonly string[]): Promise<number> {
	const flags = parseFlags(args, FLAGS);
	// Never the default (the process ends): with TLS, the files are read again; without, nothing to do.
	let reload: (() => void) | undefined;
	const onHup = (): void => reload?.();
	process.on('SIGHUP', onHup);
	// Checked before anything is loaded; what is not given takes the daemon's defaults (SERVE_DEFAULTS).
	const port = flags.port === undefined ? undefined : wholeNumber('--port', flags.port, 0, 65_535);
	const retentionHours = flags['retention-hours'] === undefined ? undefined : wholeNumber('--retention-hours', flags['retention-hours'], 1, 24 * 3650);
	const retryForMs = flags['retry-for'] === undefined ? undefined : duration('--retry-for', flags['retry-for'], 1000, 30 * 86_400_000);
	const shutdownSeconds = flags['shutdown-timeout'] === undefined ? undefined : wholeNumber('--shutdown-timeout', flags['shutdown-timeout'], 0, 3600);
	const redis = flags.redis ?? (process.env['APNS_WORKER_REDIS'] || undefined);
	const concurrency = flags.concurrency === undefined ? undefined : wholeNumber('--concurrency', flags.concurrency, 1, 1000);
	const lockSeconds = flags['lock-timeout'] === undefined ? undefined : wholeNumber('--lock-timeout', flags['lock-timeout'], 1, 3600);
	if (redis === undefined && (concurrency !== undefined || lockSeconds !== undefined)) throw new UsageError(`${concurrency !== undefined ? '--concurrency' : '--lock-timeout'} goes with --redis`);
	if (redis !== undefined && flags.data !== undefined) throw new UsageError('--data is the embedded store: with --redis, everything is in Redis');
	if (redis !== undefined && flags['insecure-plaintext-secrets'] === true) throw new UsageError('--insecure-plaintext-secrets does not go with --redis: credentials in a shared Redis are always encrypted (set APNS_WORKER_SECRET)');
	if ((flags['tls-cert'] === undefined) !== (flags['tls-key'] === undefined)) throw new UsageError(`${flags['tls-cert'] === undefined ? '--tls-key' : '--tls-cert'} needs ${flags['tls-cert'] === undefined ? '--tls-cert' : '--tls-key'} too`);
	const tlsFiles = flags['tls-cert'] === undefined ? undefined : { cert: flags['tls-cert'], key: flags['tls-key']! };
	// Read (and checked) before anything else is opened: a daemon that cannot serve HTTPS must not start.
	const tls = tlsFiles === undefined ? undefined : readTls(tlsFiles);
	const [{ default: pino }, { buildApi }, { SERVE_DEFAULTS }, { Engine, rotateSecret }] = await loadServer();
	const host = flags.host ?? SERVE_DEFAULTS.host;
	const listenPort = port ?? SERVE_DEFAULTS.port;
	const dataDir = flags.data ?? SERVE_DEFAULTS.dataDir;
	const logger = pino({ level: process.env['LOG_LEVEL'] ?? 'info', base: { service: 'apns-worker' }, redact: { paths: ['req.headers.authorization', '*.key', '*.pfx', '*.passphrase', '*.tokenKey'], censor: '[redacted]' } });
	const retentionMs = retentionHours === undefined ? SERVE_DEFAULTS.retentionMs : retentionHours * 3_600_000;
	const shutdownTimeoutMs = shutdownSeconds === undefined ? SERVE_DEFAULTS.shutdownTimeoutMs : shutdownSeconds * 1000;
	let store: PushStore;
	let apiKey: string;
	let generatedKey: string | undefined;
	if (redis !== undefined) {
		const { RedisStore } = await loadRedis();
		apiKey = process.env['APNS_WORKER_API_KEY'] ?? '';
		// Checked before Redis is asked anything: a daemon without the deployment's secrets must not touch it.
		if (apiKey.length < 16) throw new ServerError('APNS_SERVER_CONFIG', 'APNS_WORKER_API_KEY (at least 16 characters) is required with --redis: every daemon of a deployment takes the same key');
		if ((process.env['APNS_WORKER_SECRET'] ?? '') === '') throw new ServerError('APNS_SERVER_SECRET', 'APNS_WORKER_SECRET is required with --redis: credentials in the shared Redis are always encrypted');
		store = await RedisStore.open({ url: redis, retentionMs, lockMs: lockSeconds === undefined ? SERVE_DEFAULTS.lockMs : lockSeconds * 1000, logger });
	} else {
		const { SqliteStore, loadApiKey } = await loadSqlite();
		store = new SqliteStore(dataDir);
		try {
			const key = loadApiKey(dataDir, process.env['APNS_WORKER_API_KEY']);
			apiKey = key.key;
			if (key.generated) generatedKey = key.key;
		} catch (error) {
			await store.close();
			throw error;
		}
	}
	if (flags['rotate-secret'] === true) {
		try {
			const next = process.env['APNS_WORKER_SECRET'] ?? '';
			if (next === '') throw new ServerError('APNS_SERVER_SECRET', '--rotate-secret seals under APNS_WORKER_SECRET (the new secret): set it, and the old one in APNS_WORKER_SECRET_OLD');
			const count = await rotateSecret(store, process.env['APNS_WORKER_SECRET_OLD'], next);
			process.stderr.write(`apns-worker serve: re-sealed the credentials of ${count} app${count === 1 ? '' : 's'} under the new APNS_WORKER_SECRET in ${store.where}; start the daemons with it\n`);
			logger.warn({ apps: count, store: store.where }, 'secret rotated');
			return 0;
		} finally {
			await store.close();
		}
	}
	let daemon: Awaited<ReturnType<typeof Engine.open>>;
	try {
		daemon = await Engine.open({
			store,
			apiKey,
			secret: process.env['APNS_WORKER_SECRET'],
			insecurePlaintextSecrets: flags['insecure-plaintext-secrets'] ?? false,
			retentionMs,
			...(retryForMs === undefined ? {} : { retryForMs }),
			shutdownTimeoutMs,
			...(concurrency === undefined ? {} : { concurrency }),
			logger,
		});
	} catch (error) {
		await store.close();
		throw error;
	}
	const where = redis === undefined ? { data: store.where } : { redis: store.where };
	const api = buildApi(daemon, tls);
	let address: string;
	try {
		await api.listen({ host, port: listenPort });
		// What it listens on (fastify names 127.0.0.1 for 0.0.0.0).
		const bound = api.server.address() as AddressInfo;
		address = `${tls === undefined ? 'http' : 'https'}://${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
	} catch (error) {
		await daemon.close();
		throw new ServerError('APNS_SERVER_CONFIG', `cannot listen on ${host}:${listenPort}: ${(error as Error).message}`, { cause: error });
	}
	// Only now: a daemon that cannot serve its API must not send either.
	await daemon.start();
	if (generatedKey !== undefined) process.stderr.write(`apns-worker serve: generated an API key (stored in ${dataDir}/api-key, shown only now):\n  ${generatedKey}\n`);
	if (redis === undefined && (process.env['APNS_WORKER_SECRET'] === undefined || process.env['APNS_WORKER_SECRET'] === '')) {
		process.stderr.write(flags['insecure-plaintext-secrets'] === true ? 'apns-worker serve: WARNING: credentials are stored unencrypted (--insecure-plaintext-secrets)\n' : 'apns-worker serve: APNS_WORKER_SECRET is not set: apps cannot be provisioned with credentials\n');
	}
	if (tls === undefined && !isLoopback(host)) {
		const warning = `the API listens on ${host} without TLS: API keys, .p8 keys and passphrases cross the network in the clear; give --tls-cert and --tls-key, or listen on 127.0.0.1 behind a TLS proxy`;
		process.stderr.write(`apns-worker serve: WARNING: ${warning}\n`);
		logger.warn({ host }, warning);
	}
	process.stderr.write(`apns-worker serve: listening on ${address}\n`);
	logger.info({ address, ...where }, 'listening');
	// A renewed certificate without a restart: new connections get it, work goes on.
	reload = () => {
		if (tlsFiles === undefined) return void logger.info('SIGHUP: nothing to read again (no --tls-cert)');
		try {
			(api.server as unknown as TlsServer).setSecureContext(readTls(tlsFiles));
			logger.info({ cert: tlsFiles.cert }, 'TLS certificate and key read again (SIGHUP)');
		} catch (error) {
			logger.error({ err: { message: (error as Error).message } }, 'SIGHUP: the TLS files could not be read: the previous certificate stays');
		}
	};
	return new Promise<number>((resolve) => {
		let stopping = false;
		const stop = (signal: string): void => {
			if (stopping) return;
			stopping = true;
			logger.info({ signal }, 'shutting down');
			// Stop accepting (503) at once; flush; then stop listening.
			void daemon
				.close()
				.then(() => api.close())
				.then(
					() => resolve(0),
					(error: unknown) => {
						logger.error({ err: { message: (error as Error).message } }, 'shutdown failed');
						resolve(1);
					},
				);
		};
		process.once('SIGTERM', () => stop('SIGTERM'));
		process.once('SIGINT', () => stop('SIGINT'));
	});
}

/** The API's certificate and key, read and checked (a pair that does not go together is refused here). */
function readTls(files: { readonly cert: string; readonly key: string }): { cert: Buffer; key: Buffer } {
	let pair: { cert: Buffer; key: Buffer };
	try {
		pair = { cert: readFileSync(files.cert), key: readFileSync(files.key) };
		createSecureContext(pair);
	} catch (error) {
		throw new ServerError('APNS_SERVER_CONFIG', `--tls-cert ${files.cert} / --tls-key ${files.key}: ${(error as Error).message}`, { cause: error });
	}
	return pair;
}

function isLoopback(host: string): boolean {
	return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** The daemon's modules, or a clear word on what to install. */
function loadServer() {
	return missingPackages(Promise.all([import('pino'), import('../server/api.js'), import('../server/service.js'), import('../server/engine.js')]), SERVER_PACKAGES);
}

function loadSqlite() {
	return missingPackages(import('../server/stores/sqlite.js'), SQLITE_PACKAGES);
}

function loadRedis() {
	return missingPackages(import('../server/stores/redis.js'), REDIS_PACKAGES);
}

async function missingPackages<T>(loading: Promise<T>, packages: readonly string[]): Promise<T> {
	try {
		return await loading;
	} catch (error) {
		const code = (error as NodeJS.ErrnoException).code;
		if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
			throw new ServerError('APNS_SERVER_CONFIG', `the daemon's dependencies are not installed (${(error as Error).message.split('\n')[0]}): npm install ${packages.join(' ')}`, { cause: error });
		}
		throw error;
	}
}
