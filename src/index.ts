/**
 * apns-worker: Apple push notifications from a background worker.
 */
export { ApnsManager } from './manager.js';
export type { ApnsManagerEvents, ManagerStats } from './manager.js';
export { Message, MAX_COLLAPSE_ID_BYTES, PUSH_TYPES, TOKEN_BYTES } from './message.js';
export type { Aps, MessageOptions, Priority, PushType, SendApsOptions } from './message.js';
export { MAX_HTTP2_PAYLOAD_BYTES, MAX_HTTP2_VOIP_PAYLOAD_BYTES, topicFor } from './protocol/http2.js';
export { describeStatus, MAX_BINARY_PAYLOAD_BYTES, STATUS_DESCRIPTIONS } from './protocol/binary.js';
export { ProviderToken, TOKEN_MIN_INTERVAL_MS, TOKEN_REFRESH_MS } from './provider-token.js';
export type { ProviderTokenOptions } from './provider-token.js';
export { Feedback } from './feedback.js';
export { DEFAULT_STORAGE_POLICY } from './channels.js';
export { DEFAULT_BROADCAST_PRIORITY, MAX_BROADCAST_PAYLOAD_BYTES } from './broadcasts.js';
export type { BroadcastOptions, BroadcastReceipt, BroadcastResult, BroadcastStats } from './broadcasts.js';
export { liveActivityAps } from './live-activity.js';
export type { LiveActivityAlert, LiveActivityContent, LiveActivityEnd, LiveActivityStart, LiveActivityTime, LiveActivityUpdate } from './live-activity.js';
export type { ChannelInfo, CreateChannelOptions, StoragePolicy } from './channels.js';
export { ApnsError, ChannelError, ClosedError, ConnectionError, CredentialsError, DeliveryError, InvalidArgumentError, ProtocolError, ServerError, TimeoutError } from './errors.js';
export type { ApnsErrorCode } from './errors.js';
export { DEFAULT_OPTIONS, ENVIRONMENTS } from './options.js';
export type { Address, ApnsManagerOptions, Logger, ProxyOptions, RateLimit, ReconnectOptions } from './options.js';
export { Receipt } from './receipt.js';
export { proxyFromUrl } from './proxy.js';
export type { FailedToken, SendResult, SentToken } from './receipt.js';
export { NotificationQueue, DEFAULT_QUEUE_OPTIONS } from './queue.js';
export type { Cursor, DriverQueue, FailureDetail, InFlight, QueueListener, QueueOptions, QueueStats, ResendReason } from './queue.js';
export type { Backend, BackendContext, BackendEvents, BackendFactory, DisconnectReason, DriverOptions, DriverSetup, GatewayTls, TokenSource } from './backends/backend.js';
export { createEventedBackend } from './backends/evented.js';
export { createThreadedBackend } from './backends/threaded.js';
export { certificateInfo, OID_APPLE_PRODUCTION, OID_APPLE_SANDBOX } from './credentials.js';
export type { CertificateCredentials, CertificateInfo, Environment, PemSource } from './credentials.js';
