/**
 * `apns-worker broadcast --channel ID`: one Live Activity broadcast (iOS 18) to every device subscribed
 * to a channel, through ApnsManager.broadcast(); prints what became of it.
 */
import { oneOf, parseFlags, payloadFlag, UsageError, wholeNumber } from './args.js';
import { LIVE_FLAGS, LIVE_FLAGS_HELP, liveManager } from './live.js';

export const FLAGS = {
	...LIVE_FLAGS,
	channel: { type: 'string' },
	payload: { type: 'string' },
	'payload-file': { type: 'string' },
	priority: { type: 'string' },
	expiration: { type: 'string' },
	timeout: { type: 'string' },
} as const;

export const HELP = `Usage: apns-worker broadcast --channel ID (--payload JSON | --payload-file FILE) [credentials] [options]

Update or end a Live Activity on every device subscribed to a channel (iOS 18), in one request.

  --channel ID             the channel (from apns-worker channels create)
  --payload JSON           the payload, e.g. '{"aps":{"timestamp":1700000000,"event":"update",
                           "content-state":{"score":"1-0"}}}' (at most 5,120 bytes)
  --payload-file FILE      the same, from a file
  --priority 10|5|1        default 10
  --expiration SECONDS     UNIX seconds until APNs may store it; default 0 (not stored, what a channel
                           with storage policy 0 requires)
  --timeout SECONDS        give up after this long (default 60)

${LIVE_FLAGS_HELP}

Output: "sent CHANNEL apns-id APNS-ID unique-id ID", or "failed CHANNEL STATUS REASON" (--json: the
receipt's { sent, failed, dropped }).

Exit code: 0 sent, 1 failed (APNs refused it, or no answer through every attempt), 2 usage error.
`;

export async function run(args: readonly string[]): Promise<number> {
	const v = parseFlags(args, FLAGS);
	if (v.channel === undefined) throw new UsageError('no channel: give --channel ID (apns-worker channels create makes one)');
	if ((v.payload === undefined) === (v['payload-file'] === undefined)) throw new UsageError('give --payload JSON or --payload-file FILE (one of them)');
	const { payload } = payloadFlag(v, '{"aps":{"event":"update",…}}');
	const priority = v.priority === undefined ? undefined : (Number(oneOf('--priority', v.priority, ['10', '5', '1'] as const)) as 10 | 5 | 1);
	const expiration = v.expiration === undefined ? undefined : wholeNumber('--expiration', v.expiration, 0, 0xffff_ffff);
	const timeoutMs = wholeNumber('--timeout', v.timeout ?? '60', 1, 86_400) * 1000;
	const manager = liveManager(v);
	try {
		let receipt;
		try {
			receipt = manager.broadcast(v.channel, payload, { ...(priority === undefined ? {} : { priority }), ...(expiration === undefined ? {} : { expiration }) });
		} catch (error) {
			throw new UsageError((error as Error).message, { cause: error });
		}
		let timer: NodeJS.Timeout | undefined;
		const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), timeoutMs)));
		const result = await Promise.race([receipt.settled, timedOut]);
		clearTimeout(timer);
		if (result === 'timeout') {
			process.stdout.write(v.json === true ? `${JSON.stringify({ sent: [], failed: [{ channel: v.channel, status: 0, reason: 'Timeout' }], dropped: [] })}\n` : `failed ${v.channel} 0 Timeout\n`);
			return 1;
		}
		if (v.json === true) process.stdout.write(`${JSON.stringify(result)}\n`);
		for (const s of v.json === true ? [] : result.sent) process.stdout.write(`sent ${s.channel} apns-id ${s.apnsId} unique-id ${s.uniqueId ?? '-'}\n`);
		for (const f of v.json === true ? [] : result.failed) process.stdout.write(`failed ${f.channel} ${f.status} ${f.reason}\n`);
		await manager.close();
		return result.sent.length === 1 ? 0 : 1;
	} finally {
		manager.destroy();
	}
}
