/**
 * The `apns-worker` command: the command table, `--help` and `--version`, and how each outcome becomes
 * an exit code — 0 done, 1 something failed (a token, a service), 2 a usage error (bad flag, bad file,
 * bad credentials). Each command lives in a module of its own, loaded only when run: `send` never loads
 * the mocks (nor node-forge with them).
 */
import { readFileSync } from 'node:fs';
import { ApnsError } from '../index.js';
import { UsageError } from './args.js';

/** What every command module exports. */
interface CommandModule {
	readonly HELP: string;
	run(args: readonly string[]): Promise<number>;
}

const COMMANDS: Readonly<Record<string, { readonly summary: string; readonly load: () => Promise<CommandModule> }>> = {
	send: { summary: 'send a notification to many tokens (HTTP/2 by default), with progress and a summary', load: () => import('./send.js') },
	demo: { summary: 'run the manager against a mock on 127.0.0.1 with faults on, and explain what happened', load: () => import('./demo.js') },
	feedback: { summary: 'read a binary feedback service (over HTTP/2, 410s come back with the send)', load: () => import('./feedback.js') },
	serve: { summary: 'run the push daemon: many apps, an HTTP API, every notification stored until settled', load: () => import('./serve.js') },
	channels: { summary: 'create, read, list or delete Live Activity broadcast channels (iOS 18)', load: () => import('./channels.js') },
	broadcast: { summary: 'update or end a Live Activity on every device subscribed to a channel', load: () => import('./broadcast.js') },
};

const USAGE = `Usage: apns-worker COMMAND [flags]

Commands:
${Object.entries(COMMANDS)
	.map(([name, c]) => `  ${name.padEnd(10)}${c.summary}`)
	.join('\n')}

  apns-worker COMMAND --help   the flags of a command
  apns-worker --version        the version

Exit codes: 0 done (every token delivered), 1 some failed, 2 usage error.
`;

/** Run the command line; resolves with the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
	const [command, ...rest] = argv;
	if (command === '--version' || command === '-V') {
		process.stdout.write(`${version()}\n`);
		return 0;
	}
	if (command === '--help' || command === '-h' || command === 'help') {
		process.stdout.write(USAGE);
		return 0;
	}
	const entry = command === undefined ? undefined : COMMANDS[command];
	if (entry === undefined) {
		process.stderr.write(`apns-worker: ${command === undefined ? 'no command given' : `unknown command ${JSON.stringify(command)}`}\n${USAGE}`);
		return 2;
	}
	const module = await entry.load();
	if (rest.includes('--help') || rest.includes('-h')) {
		process.stdout.write(module.HELP);
		return 0;
	}
	try {
		return await module.run(rest);
	} catch (error) {
		return report(command!, error);
	}
}

/** Print what went wrong in one line (plus a hint for a usage error); the exit code. */
function report(command: string, error: unknown): number {
	const message = error instanceof Error ? error.message : String(error);
	// The library refusing an option or a certificate is the user's input too.
	const usage = error instanceof UsageError || (error instanceof ApnsError && (error.code === 'APNS_INVALID_ARGUMENT' || error.code === 'APNS_CREDENTIALS' || error.code === 'APNS_SERVER_CONFIG' || error.code === 'APNS_SERVER_SECRET'));
	if (usage) {
		process.stderr.write(`apns-worker ${command}: ${message}\nRun 'apns-worker ${command} --help' for the flags.\n`);
		return 2;
	}
	process.stderr.write(`apns-worker ${command}: ${message}\n`);
	return 1;
}

/** package.json's version: the nearest package.json above this file (dist/ or build/src/ alike). */
function version(): string {
	for (let dir = new URL('.', import.meta.url); ; dir = new URL('..', dir)) {
		try {
			const pkg = JSON.parse(readFileSync(new URL('package.json', dir), 'utf8')) as { name?: string; version?: string };
			if (pkg.name === 'apns-worker' && pkg.version !== undefined) return pkg.version;
		} catch {
			// none here: look further up
		}
		if (dir.pathname === '/') return 'unknown';
	}
}
