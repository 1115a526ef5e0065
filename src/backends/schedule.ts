/** Timing helpers every backend shares. */

/**
 * Wrap `run` so that any number of calls within one turn of the event loop run it once, on the next
 * turn: `wake()` is called for every push, settle and drain, and the work it triggers is a loop anyway.
 */
export function coalesced(run: () => void): () => void {
	let scheduled = false;
	return () => {
		if (scheduled) return;
		scheduled = true;
		setImmediate(() => {
			scheduled = false;
			run();
		});
	};
}
