/**
 * What every protocol driver shares: its lifecycle (open, closing, destroyed), the reconnect backoff and
 * the connection-rate ceiling, the count of connect attempts, coalesced wakes, a bounded graceful close,
 * and how a connection that ended before the gateway settled anything is reported. A driver adds its
 * connections and what it writes on them.
 */
import { ConnectionError } from '../errors.js';
import type { InFlight } from '../queue.js';
import { CLOSED_UNANSWERED, type Backend, type BackendContext } from '../backends/backend.js';
import { ConnectRate, Reconnect } from './backoff.js';
import { coalesced } from './schedule.js';

export abstract class Driver implements Backend {
	protected readonly ctx: BackendContext;
	/** Waits out the backoff after failed connect attempts. */
	protected readonly reconnect: Reconnect;
	/** The ceiling on connections opened by choice. */
	protected readonly rate: ConnectRate;
	/** `close()` was called: no new connections; end each once it is settled. */
	protected closing = false;
	/** `destroy()` was called: nothing counts any more. */
	protected destroyed = false;
	#connectAttempts = 0;
	#closeWaiters: Array<() => void> = [];

	constructor(context: BackendContext) {
		this.ctx = context;
		const { options } = context.setup;
		this.reconnect = new Reconnect(options.reconnect, () => this.wake());
		this.rate = new ConnectRate(options.maxConnectsPerSecond, () => this.wake());
	}

	get connectAttempts(): number {
		return this.#connectAttempts;
	}

	readonly #wake = coalesced(() => {
		if (!this.destroyed) this.pump();
	});

	wake(): void {
		if (!this.destroyed) this.#wake();
	}

	close(): Promise<void> {
		this.closing = true;
		this.reconnect.cancel();
		this.rate.cancel();
		if (this.connectionCount === 0) return Promise.resolve();
		const done = new Promise<void>((resolve) => this.#closeWaiters.push(resolve));
		this.closeConnections();
		return done;
	}

	destroy(): InFlight[] {
		this.destroyed = true;
		this.closing = true;
		this.reconnect.cancel();
		this.rate.cancel();
		return this.destroyConnections();
	}

	/** Write what there is room for. Called on the next turn after any number of wakes. */
	protected abstract pump(): void;
	/** Connections open or opening. */
	protected abstract get connectionCount(): number;
	/** End every connection gracefully; each must be gone within a bounded time. */
	protected abstract closeConnections(): void;
	/** Drop every connection now; return what they held. */
	protected abstract destroyConnections(): InFlight[];

	/** Count a connect attempt and arm its deadline: `abort` is called with the error if it is not up in time. */
	protected connecting(abort: (error: ConnectionError) => void): NodeJS.Timeout {
		this.#connectAttempts++;
		const { tls, options } = this.ctx.setup;
		return setTimeout(() => abort(new ConnectionError(`Connect to ${tls.host}:${tls.port} timed out after ${options.connectTimeoutMs} ms`)), options.connectTimeoutMs);
	}

	/** A connection is gone: `close()` resolves once none is left; otherwise write on. */
	protected connectionGone(): void {
		if (this.connectionCount === 0) for (const resolve of this.#closeWaiters.splice(0)) resolve();
		if (!this.closing) this.wake();
	}

	/**
	 * A connection ended before the gateway settled anything on it, however it ended: a failed attempt,
	 * backed off and reported with why.
	 * @param ended - what to say of a connection that was up, e.g. "Session to h:p ended before …".
	 */
	protected failedAttempt(ready: boolean, ended: string, failure: Error | undefined): void {
		const { host, port } = this.ctx.setup.tls;
		// A reset right after connecting is the same refusal as a silent close when we had written first.
		const code = (failure as NodeJS.ErrnoException | undefined)?.code;
		const reset = ready && (code === 'ECONNRESET' || code === 'EPIPE');
		const why = failure === undefined ? (ready ? CLOSED_UNANSWERED : 'closed during the handshake') : reset ? `${failure.message}: ${CLOSED_UNANSWERED}` : failure.message;
		const error = ready ? new ConnectionError(`${ended}: ${why}`, { cause: failure }) : new ConnectionError(`Cannot connect to ${host}:${port}: ${why}`, { cause: failure });
		this.ctx.events.connectError(error, this.reconnect.failed());
	}
}
