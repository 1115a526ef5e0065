/**
 * The `'evented'` backend: the protocol's driver runs on the caller's event loop. Nothing crosses a
 * thread; the driver takes from and settles on the manager's queue directly.
 */
import { createBinaryDriver } from '../drivers/binary.js';
import { createHttp2Driver } from '../drivers/http2.js';
import type { Backend, BackendContext } from './backend.js';

/** The protocol's driver for `context`. */
export function createDriver(context: BackendContext): Backend {
	return context.setup.protocol === 'http2' ? createHttp2Driver(context) : createBinaryDriver(context);
}

/** The `'evented'` backend. */
export function createEventedBackend(context: BackendContext): Backend {
	return createDriver(context);
}
