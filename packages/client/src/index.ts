export { PresencedClient } from './client.js';
export type { ClientEvents, ClientOptions, ClientState, ConnectedApp, ConnectedEvent, ServerNotification, PushRegistration, PushRegistrationInput, DisconnectedEvent, HeartbeatOptions, ReconnectingEvent } from './client.js';
export { PresencedConnection } from './connection.js';
export type { CloseInfo, Push } from './connection.js';
export { PresencedError, isPresencedError } from './errors.js';
export type { ClientErrorCode, ErrorCode, ServerErrorCode } from './errors.js';
export { Emitter } from './emitter.js';
export type { Listener } from './emitter.js';
export { backoffDelay, RECONNECT_DEFAULTS } from './backoff.js';
export type { ReconnectOptions } from './backoff.js';
export type {
  ContactPresence,
  ContactShow,
  LeaveReason,
  OwnPresence,
  PresenceInput,
  RosterChange,
  RosterItem,
  Show,
  Subscription,
  SubscriptionEvent,
  SubscriptionKind,
  SubscriptionState,
  WebSocketConstructor,
  WebSocketLike,
} from './types.js';
