/**
 * The progress line of a bulk `send`: one line on a terminal, redrawn at most 10 times a second —
 * sent / delivered / failed / rate. Hand-written: a carriage return and an erase-line escape are all a
 * single line needs. Other output goes through {@link ProgressLine.print}, which clears the line
 * first so the two never interleave.
 */

/** What the line shows, read at each redraw. */
export interface ProgressCounts {
	/** Written to the gateway (re-sends not counted twice). */
	readonly sent: number;
	readonly delivered: number;
	readonly failed: number;
	/** All the tokens of this send, when known. */
	readonly total: number | undefined;
}

/** The terminal the line is drawn on (stderr). */
export interface ProgressStream {
	write(text: string): unknown;
	readonly columns?: number | undefined;
}

/** Redraw interval: at most 10 redraws a second. */
export const REDRAW_MS = 100;
/** The rate is taken over about this long, so it follows changes within a second or two. */
const RATE_WINDOW_MS = 2000;
const CLEAR = '\r\u001b[2K';

const n = (value: number): string => value.toLocaleString('en-US');

/** A self-redrawing status line; `start()` it, `stop()` it before the summary. */
export class ProgressLine {
	readonly #stream: ProgressStream;
	readonly #read: () => ProgressCounts;
	readonly #now: () => number;
	#timer: NodeJS.Timeout | undefined;
	/** [time, settled] samples over the last {@link RATE_WINDOW_MS}, oldest first. */
	#samples: Array<[number, number]> = [];
	#drawn = false;
	/** Redraws so far (for tests: at most one per {@link REDRAW_MS}). */
	redraws = 0;

	constructor(stream: ProgressStream, read: () => ProgressCounts, now: () => number = Date.now) {
		this.#stream = stream;
		this.#read = read;
		this.#now = now;
	}

	start(): void {
		this.#samples = [[this.#now(), 0]];
		this.#timer = setInterval(() => this.#draw(), REDRAW_MS);
		this.#timer.unref();
	}

	/** Write a line of other output above the progress line. */
	print(line: string): void {
		this.#clear();
		this.#stream.write(`${line}\n`);
	}

	/** Erase the line for good. */
	stop(): void {
		clearInterval(this.#timer);
		this.#timer = undefined;
		this.#clear();
	}

	/** The line as it would be drawn now (without the terminal codes). */
	render(): string {
		const c = this.#read();
		const now = this.#now();
		const settled = c.delivered + c.failed;
		this.#samples.push([now, settled]);
		while (this.#samples.length > 2 && this.#samples[1]![0] <= now - RATE_WINDOW_MS) this.#samples.shift();
		const [then, before] = this.#samples[0]!;
		const rate = now > then ? Math.round(((settled - before) * 1000) / (now - then)) : 0;
		const sent = c.total === undefined ? n(c.sent) : `${n(c.sent)}/${n(c.total)}`;
		return `sent ${sent} · delivered ${n(c.delivered)} · failed ${n(c.failed)} · ${n(rate)}/s`;
	}

	#draw(): void {
		// Never wider than the terminal (a wrapped line cannot be redrawn in place); 0 = unknown.
		const columns = this.#stream.columns ?? 0;
		const width = columns > 20 ? columns - 1 : 79;
		this.#stream.write(`\r${this.render().slice(0, width)}\u001b[K`);
		this.#drawn = true;
		this.redraws++;
	}

	#clear(): void {
		if (!this.#drawn) return;
		this.#stream.write(CLEAR);
		this.#drawn = false;
	}
}
