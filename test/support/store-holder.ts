/**
 * A daemon that dies with work in hand (test/support/stores.ts `holder`): it opens the store given in
 * argv[2], takes units until it holds argv[3] tokens, tells its parent, and never finishes any — its parent
 * kills it with SIGKILL.
 */
import { openStore, type StoreSpec } from './stores.js';

const spec = JSON.parse(process.argv[2]!) as StoreSpec;
const want = Number(process.argv[3]);
const store = await openStore(undefined, spec);
let held = 0;
store.work(
	(unit) => {
		held += unit.tokens.length / 32;
		if (held >= want) process.send!({ held });
		return new Promise(() => {}); // never finished
	},
	{ concurrency: 1000, error: () => {} },
);
