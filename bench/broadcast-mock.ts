/**
 * The broadcast benchmark's APNs: the HTTP/2 mock (channels and broadcasts) in its own process, so it
 * never shares an event loop with the client measured. Started with the certificates in BENCH_CERTS; it
 * sends its port, then answers each message with how many broadcasts it has accepted.
 */
import { startMockApnsHttp2 } from '../src/mock/http2.js';
import { TOPIC, type Certs } from './common.js';

const certs = JSON.parse(process.env['BENCH_CERTS'] ?? 'null') as Certs;
const mock = await startMockApnsHttp2({ server: certs.server, keys: [{ keyId: certs.p8.keyId, teamId: certs.p8.teamId, publicKey: certs.p8.publicKey }], topics: [TOPIC], record: false });
process.send!({ port: mock.port });
process.on('message', () => process.send!({ broadcasts: mock.broadcasts.length, channels: mock.channels.length }));
process.on('disconnect', () => void mock.close().then(() => process.exit(0)));
