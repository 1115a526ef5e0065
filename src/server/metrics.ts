/**
 * The daemon's Prometheus metrics (prom-client), served at `GET /metrics`. Counters per app; `pending`
 * and `in_doubt` are read from the store when scraped. Node's own (prom-client's defaults: memory, CPU,
 * event-loop delay since the last scrape, GC) come with them.
 */
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';

/** What the metrics read of each app at scrape time. */
export interface AppGauges {
	readonly app: string;
	readonly pending: number;
	readonly up: boolean;
	readonly oldestPendingSeconds: number | undefined;
}

export class Metrics {
	readonly registry = new Registry();
	readonly accepted: Counter<'app'>;
	readonly delivered: Counter<'app'>;
	readonly failed: Counter<'app' | 'reason'>;
	readonly feedback: Counter<'app'>;
	readonly inDoubt: Gauge<'app'>;
	readonly requestSeconds: Histogram<'method' | 'route' | 'status'>;

	/** @param apps - each app's pending count, whether it is up and its oldest pending notification's age, read at scrape time (from the store). */
	constructor(apps: () => Promise<ReadonlyArray<AppGauges>>) {
		const registers = [this.registry];
		collectDefaultMetrics({ register: this.registry });
		this.accepted = new Counter({ name: 'apns_worker_accepted_total', help: 'Notifications (one per token) durably accepted', labelNames: ['app'], registers });
		this.delivered = new Counter({ name: 'apns_worker_delivered_total', help: 'Notifications APNs accepted', labelNames: ['app'], registers });
		this.failed = new Counter({ name: 'apns_worker_failed_total', help: 'Notifications that failed for good, by reason', labelNames: ['app', 'reason'], registers });
		this.feedback = new Counter({ name: 'apns_worker_feedback_total', help: 'Feedback records (410 Unregistered) stored', labelNames: ['app'], registers });
		this.inDoubt = new Gauge({ name: 'apns_worker_in_doubt', help: 'Notifications in flight when a daemon stopped abruptly, sent again (APNs may have had them: duplicates are possible)', labelNames: ['app'], registers });
		// One read of the store per scrape (prom-client collects every metric at once): the three share it.
		let reading: Promise<ReadonlyArray<AppGauges>> | undefined;
		const read = (): Promise<ReadonlyArray<AppGauges>> => {
			reading ??= apps().finally(() => setImmediate(() => (reading = undefined)));
			return reading;
		};
		const perApp = (name: string, help: string, value: (a: AppGauges) => number | undefined): void => {
			new Gauge({
				name,
				help,
				labelNames: ['app'],
				registers,
				async collect() {
					const all = await read();
					this.reset();
					for (const a of all) {
						const v = value(a);
						if (v !== undefined) this.set({ app: a.app }, v);
					}
				},
			});
		};
		perApp('apns_worker_pending', 'Notifications stored and not yet settled', (a) => a.pending);
		perApp('apns_worker_app_up', '1 when the app can send: its credentials loaded and its last connection to APNs succeeded', (a) => (a.up ? 1 : 0));
		perApp('apns_worker_oldest_pending_seconds', "Age of the app's oldest notification not yet settled (absent when none is)", (a) => a.oldestPendingSeconds);
		this.requestSeconds = new Histogram({ name: 'apns_worker_http_request_duration_seconds', help: 'HTTP API request latency', labelNames: ['method', 'route', 'status'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5], registers });
	}

	/** Forget an app's series (it was deleted). */
	forget(app: string): void {
		for (const metric of [this.accepted, this.delivered, this.feedback, this.inDoubt]) metric.remove({ app });
	}
}
