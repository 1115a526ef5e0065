/**
 * `apns-worker channels create|get|list|delete`: Live Activity broadcast channels (iOS 18) of an app,
 * through the library's channel management (ApnsManager.createChannel and the rest).
 */
import { oneOf, parseFlags, UsageError } from './args.js';
import { LIVE_FLAGS, LIVE_FLAGS_HELP, liveManager } from './live.js';

export const FLAGS = {
	...LIVE_FLAGS,
	channel: { type: 'string' },
	'storage-policy': { type: 'string' },
} as const;

export const HELP = `Usage: apns-worker channels create|get|list|delete [credentials] [options]

Manage the Live Activity broadcast channels (iOS 18) of the app named by --topic (or the certificate).

  create [--storage-policy 0|1]   make a channel and print its id. 0 (default): APNs stores nothing
                                  for offline devices (broadcasts then need expiration 0); 1: it keeps
                                  the latest broadcast, up to 8 hours. Fixed for the channel's life.
  get --channel ID                print the channel's storage policy
  list                            print every channel id, one per line
  delete --channel ID             delete it (irreversible)

${LIVE_FLAGS_HELP}

Exit code: 0 done, 1 APNs refused (its status and reason are printed, e.g. 400 ChannelNotRegistered) or
did not answer, 2 usage error.
`;

const ACTIONS = ['create', 'get', 'list', 'delete'] as const;

export async function run(args: readonly string[]): Promise<number> {
	const [first, ...rest] = args;
	if (first === undefined || first.startsWith('-')) throw new UsageError(`give an action first: ${ACTIONS.join(', ')}`);
	const action = oneOf('action', first, ACTIONS);
	const v = parseFlags(rest, FLAGS);
	const needsChannel = action === 'get' || action === 'delete';
	if (needsChannel && v.channel === undefined) throw new UsageError(`channels ${action} needs --channel ID`);
	if (!needsChannel && v.channel !== undefined) throw new UsageError(`--channel goes with get and delete, not ${action}`);
	if (action !== 'create' && v['storage-policy'] !== undefined) throw new UsageError('--storage-policy goes with create');
	const storagePolicy = v['storage-policy'] === undefined ? undefined : (Number(oneOf('--storage-policy', v['storage-policy'], ['0', '1'] as const)) as 0 | 1);
	const manager = liveManager(v);
	const print = (text: string, json: unknown): void => void process.stdout.write(v.json === true ? `${JSON.stringify(json)}\n` : `${text}\n`);
	try {
		switch (action) {
			case 'create': {
				const id = await manager.createChannel(storagePolicy === undefined ? {} : { storagePolicy });
				print(id, { channelId: id });
				break;
			}
			case 'get': {
				const info = await manager.getChannel(v.channel!);
				print(`${info.id} storage policy ${info.storagePolicy}`, info);
				break;
			}
			case 'list': {
				const ids = await manager.listChannels();
				print(ids.join('\n'), { channels: ids });
				break;
			}
			case 'delete':
				await manager.deleteChannel(v.channel!);
				print(`deleted ${v.channel!}`, { deleted: v.channel });
				break;
		}
		await manager.close();
		return 0;
	} finally {
		manager.destroy();
	}
}
