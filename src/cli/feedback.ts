/**
 * `apns-worker feedback`: read a binary feedback service (the tokens it reports gone). Apple shut its
 * own down with the binary gateway in 2021; over HTTP/2 the same news comes back as 410 answers to the
 * send itself, which `send` prints, so this command only talks to a compatible service at an address
 * given.
 */
import { ApnsManager } from '../index.js';
import { hostPort, oneOf, parseFlags, readPemFile, UsageError } from './args.js';
import { CERTIFICATE_FLAGS, certificateOptions, PASSPHRASE_VARIABLE } from './credentials.js';

export const FLAGS = {
	...CERTIFICATE_FLAGS,
	protocol: { type: 'string' },
	environment: { type: 'string' },
	feedback: { type: 'string' },
	ca: { type: 'string' },
	json: { type: 'boolean' },
} as const;

export const HELP = `Usage: apns-worker feedback (--p12 FILE | --cert FILE --key FILE) --feedback HOST:PORT [options]

Read a binary feedback service once: print each token it reports gone, with when, one per line
("ISO-DATE TOKEN"), and the count on stderr. The service forgets what it sends: keep the output.

Over HTTP/2 there is no feedback service: APNs answers 410 Unregistered to the send itself, and
'apns-worker send' prints those tokens as it goes ("failed TOKEN 410 Unregistered"). Apple's binary
feedback service closed in March 2021, so --feedback must name a compatible one.

  --p12 FILE | --cert FILE --key FILE   the client certificate (passphrase from $${PASSPHRASE_VARIABLE}
                                        or --passphrase-env NAME)
  --feedback HOST:PORT     the feedback service
  --ca FILE                extra CA certificate (PEM) to trust for it
  --environment production|sandbox      which environment the certificate must cover (default production)
  --protocol binary        the only protocol with a feedback service (http2 is refused, saying why)
  --json                   one JSON object: { count, tokens: [{ token, when }] }

Exit code: 0 read, 1 the service could not be read, 2 usage error.
`;

export async function run(args: readonly string[]): Promise<number> {
	const v = parseFlags(args, FLAGS);
	if (v.protocol !== undefined && oneOf('--protocol', v.protocol, ['binary', 'http2'] as const) === 'http2') {
		throw new UsageError("HTTP/2 has no feedback service: APNs answers 410 Unregistered to the send itself, and 'apns-worker send' reports those tokens");
	}
	const certificate = certificateOptions(v);
	if (certificate === undefined) throw new UsageError('no certificate: give --p12 FILE, or --cert FILE with --key FILE');
	if (v.feedback === undefined) throw new UsageError("--feedback HOST:PORT is needed (Apple's own feedback service closed in 2021)");
	// A certificate the library refuses is a usage error too (main.ts maps it).
	const manager = new ApnsManager({
		protocol: 'binary',
		...certificate,
		environment: oneOf('--environment', v.environment ?? 'production', ['production', 'sandbox'] as const),
		feedback: hostPort('--feedback', v.feedback),
		...(v.ca === undefined ? {} : { ca: readPemFile('--ca', v.ca) }),
	});
	const tokens: Array<{ token: string; when: string }> = [];
	try {
		const count = await manager.getFeedback((f) => {
			if (v.json === true) tokens.push({ token: f.token, when: f.when.toISOString() });
			else process.stdout.write(`${f.when.toISOString()} ${f.token}\n`);
		});
		if (v.json === true) process.stdout.write(`${JSON.stringify({ count, tokens })}\n`);
		else process.stderr.write(`${count} tokens reported gone\n`);
		return 0;
	} finally {
		manager.destroy();
	}
}
