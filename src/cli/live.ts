/**
 * What `apns-worker channels` and `apns-worker broadcast` share: the credential flags of `send`, where to
 * connect (the environment's hosts, or `--gateway` and `--channel-gateway`), `--ca`, `--proxy` and
 * `--json`; and the manager those make (HTTP/2 only: Live Activities are not on the binary protocol).
 */
import { ApnsManager, InvalidArgumentError, type ApnsManagerOptions } from '../index.js';
import { hostPort, oneOf, parseProxy, readPemFile, UsageError, type FlagValues } from './args.js';
import { CREDENTIAL_FLAGS, managerCredentials, PASSPHRASE_VARIABLE } from './credentials.js';

export const LIVE_FLAGS = {
	...CREDENTIAL_FLAGS,
	environment: { type: 'string' },
	gateway: { type: 'string' },
	'channel-gateway': { type: 'string' },
	ca: { type: 'string' },
	proxy: { type: 'string' },
	json: { type: 'boolean' },
} as const;

/** The credential and connection flags, for the help texts. */
export const LIVE_FLAGS_HELP = `Credentials (one of, as for send):
  --p8 FILE --key-id ID --team-id ID --topic BUNDLE
                           token auth
  --p12 FILE | --cert FILE --key FILE [--topic BUNDLE]
                           a certificate; its passphrase from $${PASSPHRASE_VARIABLE} or --passphrase-env NAME

Connection:
  --environment production|sandbox   Apple's hosts (default production)
  --channel-gateway HOST:PORT         another channel management host (default
                                      api-manage-broadcast[.sandbox].push.apple.com, 2196 / 2195)
  --gateway HOST:PORT                 another host for broadcasts (default api[.sandbox].push.apple.com:443)
  --ca FILE                           extra CA certificate (PEM) to trust
  --proxy URL                         http://[user:password@]host:port, an HTTP CONNECT proxy
  --json                              print one JSON object`;

/** The manager the flags describe. @throws {@link UsageError} naming the flag. */
export function liveManager(v: FlagValues<typeof LIVE_FLAGS>, extra: Partial<ApnsManagerOptions> = {}): ApnsManager {
	const options: ApnsManagerOptions = {
		protocol: 'http2',
		environment: oneOf('--environment', v.environment ?? 'production', ['production', 'sandbox'] as const),
		...managerCredentials(v),
		...(v.topic === undefined ? {} : { topic: v.topic }),
		...(v.gateway === undefined ? {} : { gateway: hostPort('--gateway', v.gateway) }),
		...(v['channel-gateway'] === undefined ? {} : { channelGateway: hostPort('--channel-gateway', v['channel-gateway']) }),
		...(v.ca === undefined ? {} : { ca: readPemFile('--ca', v.ca) }),
		...(v.proxy === undefined ? {} : { proxy: parseProxy(v.proxy) }),
		...extra,
	};
	try {
		return new ApnsManager(options);
	} catch (error) {
		if (error instanceof InvalidArgumentError) throw new UsageError(error.message, { cause: error });
		throw error; // a CredentialsError is exit 2 in main.ts
	}
}
