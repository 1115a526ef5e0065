/**
 * `apns-worker send`: one payload to any number of device tokens, over HTTP/2 by default. Tokens are
 * checked first, then handed to the manager in batches as fast as it settles them (never more than
 * {@link MAX_PENDING} at once), so a file of millions keeps memory flat. Each rejected token is printed
 * (or listed in the JSON object); the exit code says whether every one was delivered.
 */
import { isatty } from 'node:tty';
import {
	ApnsManager,
	ENVIRONMENTS,
	InvalidArgumentError,
	MAX_COLLAPSE_ID_BYTES,
	Message,
	PUSH_TYPES,
	type ApnsManagerOptions,
	type MessageOptions,
	type Priority,
} from '../index.js';
import { hostPort, oneOf, parseFlags, parseProxy, payloadFlag, readPemFile, UsageError, wholeNumber, type FlagValues } from './args.js';
import { CREDENTIAL_FLAGS, managerCredentials, PASSPHRASE_VARIABLE } from './credentials.js';
import { ProgressLine } from './progress.js';
import { tokensFromFlags, tokensFromStream, type TokenSource } from './tokens.js';

export const FLAGS = {
	protocol: { type: 'string' },
	...CREDENTIAL_FLAGS,
	environment: { type: 'string' },
	gateway: { type: 'string' },
	ca: { type: 'string' },
	proxy: { type: 'string' },
	'push-type': { type: 'string' },
	priority: { type: 'string' },
	'collapse-id': { type: 'string' },
	expiration: { type: 'string' },
	alert: { type: 'string' },
	badge: { type: 'string' },
	sound: { type: 'string' },
	payload: { type: 'string' },
	'payload-file': { type: 'string' },
	token: { type: 'string', multiple: true },
	'tokens-file': { type: 'string' },
	timeout: { type: 'string' },
	threads: { type: 'string' },
	'min-threads': { type: 'string' },
	json: { type: 'boolean' },
} as const;

export const HELP = `Usage: apns-worker send [credentials] [payload] [tokens] [options]

Send one notification to every token given, over Apple's HTTP/2 API (or --protocol binary, for a
compatible gateway), and report what became of each.

Credentials (one of):
  --p8 FILE --key-id ID --team-id ID --topic BUNDLE
                           token auth: the .p8 signing key, its 10-character Key ID, your Team ID,
                           and the app's bundle ID (HTTP/2 only)
  --p12 FILE               a PKCS#12 certificate (topic: its bundle ID, or --topic)
  --cert FILE --key FILE   a PEM certificate and its key
  The passphrase of a .p12 or an encrypted key is read from $${PASSPHRASE_VARIABLE}, or from the
  variable --passphrase-env NAME names; never from the command line.

Payload (one of):
  --alert TEXT             {"aps":{"alert":TEXT}}; add --badge N and/or --sound NAME (either alone is
                           a payload too)
  --payload JSON           the whole payload, e.g. '{"aps":{"content-available":1},"id":42}'
  --payload-file FILE      the same, from a file

Tokens (64 hex characters each; every one is checked before anything is sent; duplicates are sent):
  --token HEX              repeatable
  --tokens-file FILE       one per line (read twice: to check, then to send; never all in memory)
  (stdin)                  one per line, when neither is given and stdin is not a terminal

Delivery:
  --environment production|sandbox   Apple's hosts (default production)
  --gateway HOST:PORT      another gateway (a test server, a compatible gateway)
  --ca FILE                extra CA certificate (PEM) to trust for the gateway
  --proxy URL              http://[user:password@]host:port, an HTTP CONNECT proxy
  --protocol http2|binary  default http2
  --push-type TYPE         ${PUSH_TYPES.join(', ')} (HTTP/2)
  --priority 10|5|1        default 10, or 5 for a background push (1: HTTP/2 only)
  --collapse-id ID         notifications with the same one are shown as one (HTTP/2, <= ${MAX_COLLAPSE_ID_BYTES} bytes)
  --expiration WHEN        UNIX seconds or an ISO date; 0 = one attempt, never stored
  --threads N              run the connections in N worker threads (backend 'threaded'); default: on
                           the main thread
  --min-threads N          with --threads: how many always take work (default 1; the others only while
                           those working are compute-bound)
  --timeout SECONDS        give up when nothing has been delivered or failed for this long (default 60):
                           what is left is reported failed with reason Timeout

Output:
  On a terminal a progress line (sent / delivered / failed / rate) runs on stderr; each failed token is
  printed on stderr as "failed TOKEN STATUS REASON"; a summary goes to stdout.
  --json                   print one JSON object instead: { sent, delivered, failed: [{ token, status,
                           reason }], notSent, resent, inDoubt, seconds, ... }

Exit code: 0 every token delivered, 1 some failed (or timed out), 2 usage error (bad flag, no payload,
bad token, unreadable file, bad credentials).
`;

/** Tokens per `send()` call. */
export const BATCH = 10_000;
/** Tokens handed to the manager and not yet settled: reading waits below this (32 bytes each, packed). */
export const MAX_PENDING = 100_000;

/** The manager options `send` builds. */
type SendOptions = ApnsManagerOptions;

/** One failed token, as printed and as listed in the JSON object. */
interface Failure {
	readonly token: string;
	readonly status: number;
	readonly reason: string;
}

/** Everything the flags ask for, checked; files read. */
interface Plan {
	readonly options: SendOptions;
	readonly payload: Record<string, unknown>;
	readonly messageOptions: MessageOptions;
	readonly timeoutMs: number;
	readonly json: boolean;
	/** host:port, for the summary. */
	readonly gateway: string;
}

export async function run(args: readonly string[]): Promise<number> {
	const v = parseFlags(args, FLAGS);
	const plan = makePlan(v);
	let manager: ApnsManager;
	try {
		manager = new ApnsManager(plan.options);
	} catch (error) {
		throw asUsageError(error);
	}
	try {
		const tokens = await readTokens(v);
		return await deliver(manager, tokens, plan);
	} finally {
		manager.destroy(); // a no-op after close(); frees the manager after a usage error
	}
}

function makePlan(v: FlagValues<typeof FLAGS>): Plan {
	const protocol = oneOf('--protocol', v.protocol ?? 'http2', ['http2', 'binary'] as const);
	if (protocol === 'binary') {
		for (const flag of ['p8', 'key-id', 'team-id', 'topic', 'push-type', 'collapse-id'] as const) {
			if (v[flag] !== undefined) throw new UsageError(`--${flag} is an HTTP/2 feature: not with --protocol binary`);
		}
	}
	const environment = oneOf('--environment', v.environment ?? 'production', ['production', 'sandbox'] as const);
	const gateway = v.gateway === undefined ? undefined : hostPort('--gateway', v.gateway);
	const address = gateway ?? ENVIRONMENTS[environment][protocol === 'http2' ? 'http2' : 'gateway'];
	const threads = v.threads === undefined ? undefined : wholeNumber('--threads', v.threads, 1, 64);
	const options: SendOptions = {
		protocol,
		environment,
		...managerCredentials(v),
		...(v.topic === undefined ? {} : { topic: v.topic }),
		...(gateway === undefined ? {} : { gateway }),
		...(v.ca === undefined ? {} : { ca: readPemFile('--ca', v.ca) }),
		...(v.proxy === undefined ? {} : { proxy: parseProxy(v.proxy) }),
		...(threads === undefined ? {} : { backend: 'threaded', threads }),
		...(v['min-threads'] === undefined ? {} : { minThreads: minThreads(v['min-threads'], threads) }),
	};
	const messageOptions = deliveryOptions(v, protocol);
	const payload = makePayload(v);
	// Check payload and options now, as the manager will, so a mistake is named before anything is sent.
	try {
		new Message('0'.repeat(64), payload, messageOptions);
	} catch (error) {
		throw asUsageError(error);
	}
	return {
		options,
		payload,
		messageOptions,
		timeoutMs: wholeNumber('--timeout', v.timeout ?? '60', 1, 86_400) * 1000,
		json: v.json === true,
		gateway: `${address.host}:${address.port}`,
	};
}

/** --min-threads: goes with --threads, from 1 to the thread count. */
function minThreads(value: string, threads: number | undefined): number {
	if (threads === undefined) throw new UsageError('--min-threads goes with --threads N');
	return wholeNumber('--min-threads', value, 1, threads);
}

/** `--push-type`, `--priority`, `--collapse-id`, `--expiration`. */
function deliveryOptions(v: FlagValues<typeof FLAGS>, protocol: 'http2' | 'binary'): MessageOptions {
	const priority = v.priority === undefined ? undefined : (Number(oneOf('--priority', v.priority, ['10', '5', '1'] as const)) as Priority);
	if (priority === 1 && protocol === 'binary') throw new UsageError('--priority 1 is HTTP/2 only: the binary protocol takes 10 or 5');
	const collapseId = v['collapse-id'];
	if (collapseId !== undefined && (collapseId.length === 0 || Buffer.byteLength(collapseId) > MAX_COLLAPSE_ID_BYTES)) {
		throw new UsageError(`--collapse-id must be 1 to ${MAX_COLLAPSE_ID_BYTES} bytes, got ${Buffer.byteLength(collapseId)}`);
	}
	return {
		...(v['push-type'] === undefined ? {} : { pushType: oneOf('--push-type', v['push-type'], PUSH_TYPES) }),
		...(priority === undefined ? {} : { priority }),
		...(collapseId === undefined ? {} : { collapseId }),
		...(v.expiration === undefined ? {} : { expiration: expiration(v.expiration) }),
	};
}

function expiration(value: string): number | Date {
	if (/^\d+$/.test(value)) return wholeNumber('--expiration', value, 0, 0xffff_ffff);
	const date = /^\d{4}-\d\d-\d\d/.test(value) ? new Date(value) : new Date(Number.NaN);
	if (Number.isNaN(date.getTime())) throw new UsageError(`--expiration must be UNIX seconds or an ISO date such as 2030-01-02T03:04:05Z, got ${JSON.stringify(value)}`);
	return date;
}

/** The payload from `--alert`/`--badge`/`--sound`, `--payload` or `--payload-file`; refused when empty. */
function makePayload(v: FlagValues<typeof FLAGS>): Record<string, unknown> {
	const built = v.alert !== undefined || v.badge !== undefined || v.sound !== undefined;
	const given = [v.payload !== undefined && '--payload', v['payload-file'] !== undefined && '--payload-file', built && '--alert/--badge/--sound'].filter((f) => f !== false);
	if (given.length > 1) throw new UsageError(`give the payload one way: ${given.join(' or ')}, not both`);
	if (given.length === 0) throw new UsageError('no payload: give --alert TEXT (with --badge N, --sound NAME), --payload JSON or --payload-file FILE');
	if (built) {
		if (v.alert === '') throw new UsageError('--alert is empty: a notification with nothing to show');
		const aps = {
			...(v.alert === undefined ? {} : { alert: v.alert }),
			...(v.badge === undefined ? {} : { badge: wholeNumber('--badge', v.badge, 0, 0x7fff_ffff) }),
			...(v.sound === undefined ? {} : { sound: v.sound }),
		};
		return { aps };
	}
	const { flag, payload: record } = payloadFlag(v, '{"aps":{"alert":"Hi"}}');
	const aps = record['aps'];
	const apsEmpty = aps === undefined || (aps !== null && typeof aps === 'object' && Object.keys(aps).length === 0);
	if (apsEmpty && Object.keys(record).every((k) => k === 'aps')) throw new UsageError(`${flag} has no content: nothing to show and no data (e.g. {"aps":{"alert":"Hi"}})`);
	return record;
}

/** Which flag a library argument error is about, so the message can name it. */
const FLAG_OF: Readonly<Record<string, string>> = {
	payload: 'payload',
	message: 'payload',
	'options.expiration': '--expiration',
	'options.priority': '--priority',
	'options.pushType': '--push-type',
	'options.collapseId': '--collapse-id',
	'options.topic': '--topic',
	'options.ca': '--ca',
};

/** The library refused an option: a usage error (exit 2) naming the flag when it can. */
function asUsageError(error: unknown): unknown {
	if (error instanceof InvalidArgumentError) {
		const flag = FLAG_OF[error.argument] ?? (error.argument.startsWith('options.proxy') ? '--proxy' : undefined);
		return new UsageError(flag === undefined ? error.message : `${flag}: ${error.message}`, { cause: error });
	}
	return error; // a CredentialsError is mapped to exit 2 by main.ts
}

async function readTokens(v: FlagValues<typeof FLAGS>): Promise<TokenSource> {
	const given = v.token ?? [];
	let source: TokenSource;
	if (given.length > 0 || v['tokens-file'] !== undefined) source = await tokensFromFlags(given, v['tokens-file']);
	else if (isatty(0)) throw new UsageError('no tokens: give --token HEX, --tokens-file FILE, or pipe them on stdin, one per line');
	else source = await tokensFromStream(process.stdin);
	if (source.count === 0) throw new UsageError(`no tokens: ${v['tokens-file'] ?? 'stdin'} holds none`);
	return source;
}

/** Hand every token to the manager, wait for every answer (or the timeout), and report. */
async function deliver(manager: ApnsManager, tokens: TokenSource, plan: Plan): Promise<number> {
	const started = performance.now();
	const failures: Failure[] = [];
	const byReason = new Map<string, number>();
	let failed = 0;
	let handedOver = 0;
	const progress = !plan.json && isatty(2) ? new ProgressLine(process.stderr, () => ({ sent: Math.max(0, manager.stats.written - manager.stats.resent), delivered: manager.stats.delivered, failed, total: tokens.count })) : undefined;
	const say = (line: string): void => {
		if (progress === undefined) process.stderr.write(`${line}\n`);
		else progress.print(line);
	};
	const fail = (f: Failure): void => {
		failed++;
		const key = f.status === 0 ? f.reason : `${f.status} ${f.reason}`; // 0: never answered
		byReason.set(key, (byReason.get(key) ?? 0) + 1);
		if (plan.json) failures.push(f);
		else say(`failed ${f.token} ${f.status} ${f.reason}`);
	};
	// The timeout counts from the last sign of progress: a bulk send of any size runs on while answers come.
	let timedOut = false;
	const watchdog = setTimeout(() => {
		timedOut = true;
		manager.destroy(); // what is pending is dropped, and reported below as Timeout
	}, plan.timeoutMs);
	manager.on('delivered', () => watchdog.refresh());
	manager.on('deliveryError', (e) => {
		watchdog.refresh();
		fail({ token: e.token, status: e.status, reason: e.reason ?? e.description });
	});
	manager.on('connectError', (e, { attempt, retryInMs }) => say(`connect attempt ${attempt} failed: ${e.message}; next in ${(retryInMs / 1000).toFixed(1)} s`));
	progress?.start();
	let receipts: Array<ReturnType<ApnsManager['send']>> = [];
	try {
		for await (const batch of tokens.batches(BATCH)) {
			await manager.onPendingBelow(MAX_PENDING);
			if (timedOut) break;
			// Settled receipts are let go, so only the unsettled part of a long send is held.
			if (receipts.length > 16) receipts = receipts.filter((r) => r.pending > 0);
			try {
				receipts.push(manager.send(new Message(batch, plan.payload, plan.messageOptions)));
			} catch (error) {
				// Only the first batch can fail here (the payload is too large for the protocol): nothing was sent.
				throw asUsageError(error);
			}
			handedOver += batch.length;
		}
		await manager.close();
	} finally {
		clearTimeout(watchdog);
		progress?.stop();
	}
	// After a timeout the receipts name the tokens dropped unsettled.
	for (const receipt of receipts) for (const token of (await receipt.settled).dropped) fail({ token, status: 0, reason: 'Timeout' });
	const seconds = (performance.now() - started) / 1000;
	const s = manager.stats;
	const notSent = tokens.count - handedOver;
	const report = {
		protocol: plan.options.protocol,
		gateway: plan.gateway,
		sent: handedOver,
		delivered: s.delivered,
		failed: failures,
		notSent,
		resent: s.resent,
		inDoubt: s.inDoubt,
		seconds: Number(seconds.toFixed(3)),
	};
	if (plan.json) process.stdout.write(`${JSON.stringify(report)}\n`);
	else process.stdout.write(summary(report, failed, byReason, plan.timeoutMs));
	return failed > 0 || notSent > 0 ? 1 : 0;
}

function summary(r: { protocol: string | undefined; gateway: string; sent: number; delivered: number; notSent: number; resent: number; inDoubt: number; seconds: number }, failed: number, byReason: ReadonlyMap<string, number>, timeoutMs: number): string {
	const n = (value: number): string => value.toLocaleString('en-US');
	const rate = r.seconds > 0 ? `${n(Math.round(r.sent / r.seconds))}/s` : '';
	const reasons = [...byReason].sort((a, b) => b[1] - a[1]).map(([reason, count]) => `${reason}: ${n(count)}`).join(', ');
	const rows: Array<[string, number, string]> = [
		['delivered', r.delivered, 'accepted by the gateway'],
		['failed', failed, reasons === '' ? '' : `(${reasons})`],
		['re-sent', r.resent, `written again after a retry answer, a GOAWAY or a lost connection; ${n(r.inDoubt)} of them in doubt (may arrive twice)`],
	];
	if (r.notSent > 0) rows.push(['not sent', r.notSent, `never handed over: nothing settled for ${timeoutMs / 1000} s (--timeout)`]);
	const width = Math.max(...rows.map(([, value]) => n(value).length));
	const protocol = r.protocol === 'binary' ? 'the binary protocol' : 'HTTP/2';
	return `apns-worker send: ${n(r.sent)} notification${r.sent === 1 ? '' : 's'} over ${protocol} to ${r.gateway} in ${r.seconds.toFixed(2)} s (${rate})\n${rows.map(([label, value, note]) => `  ${label.padEnd(10)}${n(value).padStart(width)}  ${note}`.trimEnd()).join('\n')}\n`;
}
