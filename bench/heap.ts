/**
 * Where the heap of queued notifications goes: a heap snapshot before and after handing N notifications
 * with distinct payloads (the burst workload's) to apns-worker over HTTP/2, one `sendAps` each, nothing
 * sent yet (the gateway is a port nothing listens on, and the event loop never turns in between). The
 * snapshots are diffed per object type and name, per notification.
 *
 *   node --expose-gc build/bench/heap.js [N, default 20000]
 *
 * Each row: how many objects of that kind each queued notification added, and their bytes (self size).
 * V8's own objects show as `system / …`: a `Map` (hidden class) or a `DescriptorArray` per notification
 * means some object gets a shape of its own; `JSArrayBufferData` is the bytes behind Buffers (off the JS
 * heap: counted in `arrayBuffers`, not `heapUsed`).
 */
import { generateKeyPairSync } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import v8 from 'node:v8';
import { ApnsManager } from '../src/index.js';
import { burstAps, token, TOPIC } from './common.js';

interface Snapshot {
	snapshot: { meta: { node_fields: string[]; node_types: [string[]] } };
	nodes: number[];
	strings: string[];
}

type Tally = Map<string, { count: number; bytes: number }>;

/** Objects per `type | name` (strings and heap numbers pooled): count and self size. */
function tally(file: string): Tally {
	const s = JSON.parse(readFileSync(file, 'utf8')) as Snapshot;
	const fields = s.snapshot.meta.node_fields;
	const types = s.snapshot.meta.node_types[0];
	const width = fields.length;
	const [type, name, size] = [fields.indexOf('type'), fields.indexOf('name'), fields.indexOf('self_size')];
	const out: Tally = new Map();
	for (let i = 0; i < s.nodes.length; i += width) {
		const t = types[s.nodes[i + type]!]!;
		const n = t.endsWith('string') ? '(strings)' : t === 'number' ? '(heap numbers)' : s.strings[s.nodes[i + name]!]!.slice(0, 50);
		const key = `${t} | ${n}`;
		const e = out.get(key) ?? { count: 0, bytes: 0 };
		e.count++;
		e.bytes += s.nodes[i + size]!;
		out.set(key, e);
	}
	return out;
}

function main(): void {
	const gc = (globalThis as { gc?: () => void }).gc;
	if (gc === undefined) throw new Error('run with --expose-gc');
	const n = Number(process.argv[2] ?? 20_000);
	const dir = mkdtempSync(join(os.tmpdir(), 'apns-heap-'));
	const key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
	// Port 9 on loopback: nothing listens there; and nothing is sent before the second snapshot anyway.
	const manager = new ApnsManager({ protocol: 'http2', token: { key, keyId: 'BENCHKEY01', teamId: 'BENCHTEAM1' }, topic: TOPIC, gateway: { host: '127.0.0.1', port: 9 } });
	manager.on('connectError', () => {});
	const settle = (): NodeJS.MemoryUsage => {
		gc();
		gc();
		return process.memoryUsage();
	};
	settle();
	const before = v8.writeHeapSnapshot(join(dir, 'before.heapsnapshot'));
	const m0 = settle();
	for (let i = 0; i < n; i++) manager.sendAps(token(i), burstAps(i), { extra: { burst: i } });
	const m1 = settle();
	const after = v8.writeHeapSnapshot(join(dir, 'after.heapsnapshot'));
	manager.destroy();
	const a = tally(before);
	const b = tally(after);
	rmSync(dir, { recursive: true, force: true });
	const rows = [...b]
		.map(([k, e]) => {
			const p = a.get(k) ?? { count: 0, bytes: 0 };
			return { kind: k, count: (e.count - p.count) / n, bytes: (e.bytes - p.bytes) / n, each: e.count === p.count ? 0 : (e.bytes - p.bytes) / (e.count - p.count) };
		})
		.filter((r) => Math.abs(r.bytes) >= 0.5)
		.sort((x, y) => y.bytes - x.bytes);
	const out = [`${n} notifications, one sendAps each, distinct payloads; Node ${process.version}`, `heapUsed +${((m1.heapUsed - m0.heapUsed) / n).toFixed(1)} B/notif, arrayBuffers +${((m1.arrayBuffers - m0.arrayBuffers) / n).toFixed(1)} B/notif`, ''];
	out.push('| type | name | objects/notif | B/notif | B/object |', '| --- | --- | --- | --- | --- |');
	for (const r of rows) {
		const [t, name] = r.kind.split(' | ');
		out.push(`| ${t} | ${name} | ${r.count.toFixed(2)} | ${r.bytes.toFixed(1)} | ${r.each.toFixed(1)} |`);
	}
	out.push(`| total | | | ${rows.reduce((sum, r) => sum + r.bytes, 0).toFixed(1)} | |`);
	process.stdout.write(`${out.join('\n')}\n`);
}

main();
