/**
 * What a webhook receiver runs to tell a delivery of `apns-worker serve` from a stranger's post (the README
 * shows this; the daemon's tests receive every webhook through it). `header` is the delivery's
 * `apns-worker-signature`, `body` its raw body as received (before any JSON parsing), `secret` the
 * `webhook.secret` the app was provisioned with. A delivery older than `toleranceS` is refused (a replay).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export function verified(secret: string, header: string | undefined, body: string, toleranceS = 300): boolean {
	const { t, v1 } = Object.fromEntries((header ?? '').split(',').map((part) => part.split('=', 2))) as { t?: string; v1?: string };
	if (t === undefined || !/^\d+$/.test(t) || Math.abs(Date.now() / 1000 - Number(t)) > toleranceS) return false;
	if (v1 === undefined || !/^[0-9a-f]{64}$/.test(v1)) return false;
	const expected = createHmac('sha256', secret).update(`${t}.${body}`).digest();
	return timingSafeEqual(expected, Buffer.from(v1, 'hex'));
}
