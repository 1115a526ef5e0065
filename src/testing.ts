/**
 * Test helpers, for our tests and for yours: a mock gateway and feedback service on 127.0.0.1 with real
 * TLS, and certificates made at run time. Import from `apns-worker/testing`; production code never loads it.
 */
export { startMockGateway } from './mock/gateway.js';
export type { MockGateway, MockGatewayFaults, MockGatewayOptions, ReceivedNotification, SentError } from './mock/gateway.js';
export { startMockFeedback } from './mock/feedback.js';
export type { MockFeedback, MockFeedbackOptions, MockFeedbackTuple } from './mock/feedback.js';
export { makeLegacyPkcs12, makePkcs12, makeTestCertificates } from './mock/certs.js';
export type { ClientCertificateOptions, PemPair, TestCertificates } from './mock/certs.js';
export { startMockApnsHttp2 } from './mock/http2.js';
export type { MockApnsHttp2, MockApnsHttp2Faults, MockApnsHttp2Options, MockHttp2Notification } from './mock/http2.js';
export type { MockBroadcast, MockChannel } from './mock/channels.js';
export { startMockProxy } from './mock/proxy.js';
export type { MockProxy, MockProxyFaults, MockProxyOptions } from './mock/proxy.js';
