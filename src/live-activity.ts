/**
 * Live Activity payloads (ActivityKit push notifications): the `aps` dictionary of a start (push-to-start,
 * iOS 17.2; subscribing to a channel or asking for an update token, iOS 18), an update or an end, built
 * from camelCase input and checked here, so a mistake is an error at the call naming the field rather
 * than an activity that silently does not change. Apple's keys and rules: docs/protocol/live-activities.md §6.
 *
 * Send it with `pushType: 'liveactivity'` (the topic gets its `.push-type.liveactivity` suffix), to
 * device tokens with `sendAps()`, or to a channel as a broadcast (updates and ends only: a broadcast
 * cannot start an activity).
 */
import { InvalidArgumentError } from './errors.js';
import { unixSeconds, type Aps } from './message.js';
import { checkChannelId } from './channels.js';

/** A time: a `Date`, or UNIX seconds. */
export type LiveActivityTime = Date | number;

/** The alert of a Live Activity push: shown on the device (required to start one). */
export interface LiveActivityAlert {
	readonly title: string | Readonly<Record<string, unknown>>;
	readonly body: string | Readonly<Record<string, unknown>>;
	readonly sound?: string | undefined;
}

interface Common {
	/** The activity's `ContentState`, as the app's Codable type decodes it with default strategies. */
	readonly contentState: Readonly<Record<string, unknown>>;
	/** When this content was current (the device keeps the latest). @default now */
	readonly timestamp?: LiveActivityTime | undefined;
	/** When the content becomes stale. */
	readonly staleDate?: LiveActivityTime | undefined;
	/** Ordering among the app's activities (the highest is shown in the Dynamic Island). */
	readonly relevanceScore?: number | undefined;
	readonly alert?: LiveActivityAlert | undefined;
}

/** An update of a running activity. */
export interface LiveActivityUpdate extends Common {
	readonly event: 'update';
}

/** The end of an activity: its final content, and when the Lock Screen lets it go. */
export interface LiveActivityEnd extends Common {
	readonly event: 'end';
	/** When the ended activity leaves the Lock Screen (a past time: at once). @default up to 4 hours after the end */
	readonly dismissalDate?: LiveActivityTime | undefined;
}

/** Push-to-start (iOS 17.2): a new activity from a push-to-start token. */
export interface LiveActivityStart extends Common {
	readonly event: 'start';
	/** The name of the app's `ActivityAttributes` type. */
	readonly attributesType: string;
	readonly attributes: Readonly<Record<string, unknown>>;
	/** Required to start one. */
	readonly alert: LiveActivityAlert;
	/** iOS 18: the started activity subscribes to this channel (it must exist). */
	readonly inputPushChannel?: string | undefined;
	/** iOS 18: the started activity gets an update token of its own (sent as `input-push-token: 1`). */
	readonly inputPushToken?: boolean | undefined;
}

export type LiveActivityContent = LiveActivityStart | LiveActivityUpdate | LiveActivityEnd;

const KNOWN: Readonly<Record<LiveActivityContent['event'], readonly string[]>> = {
	start: ['event', 'contentState', 'timestamp', 'staleDate', 'relevanceScore', 'alert', 'attributesType', 'attributes', 'inputPushChannel', 'inputPushToken'],
	update: ['event', 'contentState', 'timestamp', 'staleDate', 'relevanceScore', 'alert'],
	end: ['event', 'contentState', 'timestamp', 'staleDate', 'relevanceScore', 'alert', 'dismissalDate'],
};

/**
 * The `aps` dictionary of a Live Activity push.
 * @param content - `event` (`'start'`, `'update'` or `'end'`) and what it needs.
 * @param now - the default `timestamp` (for tests). @default Date.now()
 * @throws {@link InvalidArgumentError} naming the field: an unknown or misplaced key (`dismissalDate` on
 * an update, `attributes` on an end), a missing one (`alert` to start), a time that is not a time.
 */
export function liveActivityAps(content: LiveActivityContent, now: number = Date.now()): Aps {
	if (content === null || typeof content !== 'object') throw new InvalidArgumentError('content', "an object with event 'start', 'update' or 'end'", content);
	const event: unknown = content.event;
	if (event !== 'start' && event !== 'update' && event !== 'end') throw new InvalidArgumentError('content.event', "'start', 'update' or 'end'", event);
	for (const key of Object.keys(content)) {
		if (!KNOWN[event].includes(key)) throw new InvalidArgumentError(`content.${key}`, `a key of a Live Activity ${event} (${KNOWN[event].join(', ')})`, 'an unknown key');
	}
	const aps: Record<string, unknown> = {
		timestamp: content.timestamp === undefined ? Math.floor(now / 1000) : unixSeconds('content.timestamp', content.timestamp),
		event,
		'content-state': object('content.contentState', content.contentState),
	};
	if (content.staleDate !== undefined) aps['stale-date'] = unixSeconds('content.staleDate', content.staleDate);
	if (content.relevanceScore !== undefined) {
		if (typeof content.relevanceScore !== 'number' || !Number.isFinite(content.relevanceScore)) throw new InvalidArgumentError('content.relevanceScore', 'a finite number', content.relevanceScore);
		aps['relevance-score'] = content.relevanceScore;
	}
	if (content.alert !== undefined || event === 'start') aps['alert'] = alert('content.alert', content.alert);
	if (content.event === 'end' && content.dismissalDate !== undefined) aps['dismissal-date'] = unixSeconds('content.dismissalDate', content.dismissalDate);
	if (content.event === 'start') {
		if (typeof content.attributesType !== 'string' || content.attributesType.length === 0) throw new InvalidArgumentError('content.attributesType', "the name of the app's ActivityAttributes type", content.attributesType);
		aps['attributes-type'] = content.attributesType;
		aps['attributes'] = object('content.attributes', content.attributes);
		if (content.inputPushChannel !== undefined) aps['input-push-channel'] = checkChannelId('content.inputPushChannel', content.inputPushChannel);
		if (content.inputPushToken !== undefined) {
			if (typeof content.inputPushToken !== 'boolean') throw new InvalidArgumentError('content.inputPushToken', 'true or false', content.inputPushToken);
			if (content.inputPushToken) aps['input-push-token'] = 1;
		}
		if (content.inputPushChannel !== undefined && content.inputPushToken === true) throw new InvalidArgumentError('content.inputPushToken', 'left out when inputPushChannel is given (an activity is updated through a channel or through its own token)', true);
	}
	return aps;
}

function object(name: string, value: unknown): Readonly<Record<string, unknown>> {
	if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgumentError(name, 'an object', value);
	return value as Readonly<Record<string, unknown>>;
}

function alert(name: string, value: unknown): Record<string, unknown> {
	if (value === undefined) throw new InvalidArgumentError(name, 'an alert { title, body, sound? } (required to start a Live Activity)', value);
	if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidArgumentError(name, 'an object { title, body, sound? }', value);
	const a = value as Record<string, unknown>;
	for (const key of Object.keys(a)) if (key !== 'title' && key !== 'body' && key !== 'sound') throw new InvalidArgumentError(`${name}.${key}`, 'title, body or sound', 'an unknown key');
	for (const key of ['title', 'body'] as const) {
		const v = a[key];
		if (typeof v !== 'string' && (v === null || typeof v !== 'object' || Array.isArray(v))) throw new InvalidArgumentError(`${name}.${key}`, 'a string, or a localized form { "loc-key", "loc-args" }', v);
	}
	if (a['sound'] !== undefined && typeof a['sound'] !== 'string') throw new InvalidArgumentError(`${name}.sound`, 'a sound file name, or "default"', a['sound']);
	return { title: a['title'], body: a['body'], ...(a['sound'] === undefined ? {} : { sound: a['sound'] }) };
}
