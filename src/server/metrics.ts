/**
 * The daemon's Prometheus metrics (prom-client), served at `GET /metrics`. Counters per app; `pending`
 * and `in_doubt` are read from the store when scraped. Node's own (prom-client's defaults: memory, CPU,
 * event-loop delay since the last scrape, GC) come with them.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

export class Metrics {
	readonly registry = new Registry();
	readonly accepted: Counter<'app'>;
	readonly delivered: Counter<'app'>;
	readonly failed: Counter<'app' | 'reason'>;
	readonly feedback: Counter<'app'>;
	readonly inDoubt: Gauge<'app'>;
	readonly requestSeconds: Histogram<'method' | 'route' | 'status'>;

	/** @param pending - the pending count of each app, read at scrape time (from SQLite, or from Redis). */
	constructor(pending: () => ReadonlyArray<[app: string, count: number]> | Promise<ReadonlyArray<[app: string, count: number]>>) {
		const registers = [this.registry];
		collectDefaultMetrics({ register: this.registry });
		this.accepted = new Counter({ name: 'apns_worker_accepted_total', help: 'Notifications (one per token) durably accepted', labelNames: ['app'], registers });
		this.delivered = new Counter({ name: 'apns_worker_delivered_total', help: 'Notifications APNs accepted', labelNames: ['app'], registers });
		this.failed = new Counter({ name: 'apns_worker_failed_total', help: 'Notifications that failed for good, by reason', labelNames: ['app', 'reason'], registers });
		this.feedback = new Counter({ name: 'apns_worker_feedback_total', help: 'Feedback records (410 Unregistered) stored', labelNames: ['app'], registers });
		this.inDoubt = new Gauge({ name: 'apns_worker_in_doubt', help: 'Notifications in flight when a daemon stopped abruptly, sent again (APNs may have had them: duplicates are possible)', labelNames: ['app'], registers });
		new Gauge({
			name: 'apns_worker_pending',
			help: 'Notifications stored and not yet settled',
			labelNames: ['app'],
			registers,
			async collect() {
				const counts = await pending();
				this.reset();
				for (const [app, count] of counts) this.set({ app }, count);
			},
		});
		this.requestSeconds = new Histogram({ name: 'apns_worker_http_request_duration_seconds', help: 'HTTP API request latency', labelNames: ['method', 'route', 'status'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers });
	}

	/** Forget an app's series (it was deleted). */
	forget(app: string): void {
		for (const metric of [this.accepted, this.delivered, this.feedback, this.inDoubt]) metric.remove({ app });
	}
}
