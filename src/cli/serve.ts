/**
 * `apns-worker serve`: the push daemon (src/server/). Its dependencies — better-sqlite3, fastify, pino,
 * prom-client — are optional peer dependencies of the package, loaded only here, so that library users
 * never install them (nor build SQLite); without them this command says what to install.
 */
import { ServerError } from '../index.js';
import { parseFlags, wholeNumber } from './args.js';

export const FLAGS = {
	host: { type: 'string' },
	port: { type: 'string' },
	data: { type: 'string' },
	'retention-hours': { type: 'string' },
	'shutdown-timeout': { type: 'string' },
	'insecure-plaintext-secrets': { type: 'boolean' },
} as const;

/** What `serve` needs beyond the library (package.json peerDependencies). */
export const SERVER_PACKAGES = ['better-sqlite3@^12.9.0', 'fastify@^5.12.8', 'pino@^10.4.0', 'prom-client@^15.1.3'] as const;

export const HELP = `Usage: apns-worker serve [--host 127.0.0.1] [--port 7077] [--data DIR] [options]

Run the push daemon: many apps, one HTTP/2 manager each, every accepted notification stored in
SQLite (DIR/apns-worker.db) until it is settled, so a crash or a restart loses nothing.
JSON over HTTP; the routes are in GET /openapi.json and the README ("Run it as a service").

  --host HOST                  address to listen on (default 127.0.0.1)
  --port N                     port (default 7077; 0 picks a free one)
  --data DIR                   where the database and the API key live (default ./apns-worker-data)
  --retention-hours N          keep settled outcomes and unread feedback this long (default 168;
                               feedback a webhook has not received yet is kept until it has)
  --shutdown-timeout SECONDS   on SIGTERM/SIGINT, flush this long; the rest is kept (default 10)
  --insecure-plaintext-secrets store credentials unencrypted when APNS_WORKER_SECRET is not set

Environment:
  APNS_WORKER_API_KEY   the API key (Authorization: Bearer KEY); without it one is generated on
                        first start into DIR/api-key (mode 0600) and printed once
  APNS_WORKER_SECRET    the key credentials are encrypted under (AES-256-GCM); without it (and
                        without --insecure-plaintext-secrets) no credentials are stored
  LOG_LEVEL             pino level (default info); logs are JSON lines on stdout

Needs: npm install ${SERVER_PACKAGES.join(' ')}
`;

export async function run(args: readonly string[]): Promise<number> {
	const flags = parseFlags(args, FLAGS);
	// Checked before anything is loaded; what is not given takes the daemon's defaults (DAEMON_DEFAULTS).
	const port = flags.port === undefined ? undefined : wholeNumber('--port', flags.port, 0, 65_535);
	const retentionHours = flags['retention-hours'] === undefined ? undefined : wholeNumber('--retention-hours', flags['retention-hours'], 1, 24 * 3650);
	const shutdownSeconds = flags['shutdown-timeout'] === undefined ? undefined : wholeNumber('--shutdown-timeout', flags['shutdown-timeout'], 0, 3600);
	const [{ default: pino }, { Daemon, DAEMON_DEFAULTS }, { buildApi }] = await loadServer();
	const host = flags.host ?? DAEMON_DEFAULTS.host;
	const listenPort = port ?? DAEMON_DEFAULTS.port;
	const dataDir = flags.data ?? DAEMON_DEFAULTS.dataDir;
	const logger = pino({ level: process.env['LOG_LEVEL'] ?? 'info', base: { service: 'apns-worker' }, redact: { paths: ['req.headers.authorization', '*.key', '*.pfx', '*.passphrase', '*.tokenKey'], censor: '[redacted]' } });
	const daemon = new Daemon({
		dataDir,
		apiKey: process.env['APNS_WORKER_API_KEY'],
		secret: process.env['APNS_WORKER_SECRET'],
		insecurePlaintextSecrets: flags['insecure-plaintext-secrets'] ?? false,
		retentionMs: retentionHours === undefined ? DAEMON_DEFAULTS.retentionMs : retentionHours * 3_600_000,
		shutdownTimeoutMs: shutdownSeconds === undefined ? DAEMON_DEFAULTS.shutdownTimeoutMs : shutdownSeconds * 1000,
		logger,
	});
	const api = buildApi(daemon);
	let address: string;
	try {
		address = await api.listen({ host, port: listenPort });
	} catch (error) {
		await daemon.close();
		throw new ServerError('APNS_SERVER_CONFIG', `cannot listen on ${host}:${listenPort}: ${(error as Error).message}`, { cause: error });
	}
	// Only now: a daemon that cannot serve its API must not send either.
	daemon.start();
	if (daemon.apiKeyGenerated) process.stderr.write(`apns-worker serve: generated an API key (stored in ${dataDir}/api-key, shown only now):\n  ${daemon.apiKey}\n`);
	if (process.env['APNS_WORKER_SECRET'] === undefined || process.env['APNS_WORKER_SECRET'] === '') {
		process.stderr.write(flags['insecure-plaintext-secrets'] === true ? 'apns-worker serve: WARNING: credentials are stored unencrypted (--insecure-plaintext-secrets)\n' : 'apns-worker serve: APNS_WORKER_SECRET is not set: apps cannot be provisioned with credentials\n');
	}
	process.stderr.write(`apns-worker serve: listening on ${address}\n`);
	logger.info({ address, data: daemon.store.path }, 'listening');
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

/** The daemon's modules, or a clear word on what to install. */
async function loadServer() {
	try {
		return await Promise.all([import('pino'), import('../server/daemon.js'), import('../server/http.js')]);
	} catch (error) {
		const code = (error as NodeJS.ErrnoException).code;
		if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
			throw new ServerError('APNS_SERVER_CONFIG', `the daemon's dependencies are not installed (${(error as Error).message.split('\n')[0]}): npm install ${SERVER_PACKAGES.join(' ')}`, { cause: error });
		}
		throw error;
	}
}
