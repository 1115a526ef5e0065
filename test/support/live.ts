/** What the Live Activity tests share: an HTTP/2 mock that knows a P-256 key and the topic, and a manager aimed at it. */
import { generateKeyPairSync } from 'node:crypto';
import type { TestContext } from 'node:test';
import type { ApnsManager, ApnsManagerOptions } from '../../src/index.js';
import { startMockApnsHttp2, type MockApnsHttp2, type MockApnsHttp2Faults, type MockApnsHttp2Options } from '../../src/testing.js';
import { certs, manager } from './helpers.js';

export const TOPIC = 'com.example.live';
const p8 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
export const KEY = { key: p8.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), keyId: 'LIVE123456', teamId: 'TEAM123456' };

/** The mock, closed after the test; it trusts {@link KEY} and the test client certificate. */
export async function liveMock(t: TestContext, faults: MockApnsHttp2Faults = {}, extra: Partial<MockApnsHttp2Options> = {}): Promise<MockApnsHttp2> {
	const c = certs();
	const m = await startMockApnsHttp2({ server: c.server, ca: c.ca.cert, keys: [{ keyId: KEY.keyId, teamId: KEY.teamId, publicKey: p8.publicKey }], topics: [TOPIC], faults, ...extra });
	t.after(() => m.close());
	return m;
}

/** An HTTP/2 manager whose gateway and channel management host are `m`; token auth unless `cert`. */
export function liveManager(t: TestContext, m: { host: string; port: number }, auth: 'token' | 'cert' = 'token', options: Partial<ApnsManagerOptions> = {}): ApnsManager {
	const address = { host: m.host, port: m.port };
	const credentials = auth === 'token' ? { cert: undefined, key: undefined, token: KEY, topic: TOPIC } : { topic: TOPIC };
	return manager(t, address, { protocol: 'http2', channelGateway: address, retry: { initialDelayMs: 5, maxDelayMs: 20 }, ...credentials, ...options });
}
