/**
 * apns-worker: Apple push notifications from a background worker.
 */
export { ApnsManager } from './manager.js';
export type { ApnsManagerEvents, ManagerStats } from './manager.js';
export { Message, TOKEN_BYTES } from './message.js';
export type { Aps, MessageOptions, Priority, SendApsOptions } from './message.js';
export { Feedback } from './feedback.js';
export { ApnsError, ClosedError, ConnectionError, CredentialsError, DeliveryError, InvalidArgumentError, ProtocolError, TimeoutError } from './errors.js';
export type { ApnsErrorCode } from './errors.js';
export { DEFAULT_OPTIONS, ENVIRONMENTS } from './options.js';
export type { Address, ApnsManagerOptions, ReconnectOptions } from './options.js';
export { NotificationQueue, DEFAULT_QUEUE_OPTIONS } from './queue.js';
export type { Cursor, QueueListener, QueueOptions, QueueStats, ResendReason, SentLog } from './queue.js';
export type { Backend, BackendContext, BackendEvents, BackendFactory, DisconnectReason, GatewayTls } from './backends/backend.js';
export { createEventedBackend } from './backends/evented.js';
export { certificateInfo, OID_APPLE_PRODUCTION, OID_APPLE_SANDBOX } from './credentials.js';
export type { CertificateCredentials, CertificateInfo, Environment, PemSource } from './credentials.js';
export { describeStatus, STATUS_DESCRIPTIONS } from './frame.js';
