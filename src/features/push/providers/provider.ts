/** A device as a provider needs it. */
export interface PushTarget {
  /** The configured provider's name (a key of push_providers). */
  readonly provider: string;
  /** FCM registration token, APNs device token (hex), Web Push endpoint URL, or the webhook device id. */
  readonly token: string;
  /** APNs: a VoIP token, or another second token the client sent (Tigase's device-second-token). */
  readonly secondToken?: string;
  /** Web Push only: the subscription's keys (base64url), as in PushSubscription.toJSON(). */
  readonly keys?: { readonly p256dh: string; readonly auth: string };
}

/** What one push says. Providers put only these fields on the wire; sender and body are absent unless the server's privacy settings allow them. */
export interface PushMessage {
  /** Why it is sent: 'message' (a message waits), 'clear' (message-count 0: clear the badge), 'notify' (the notify API). */
  readonly reason: 'message' | 'clear' | 'notify';
  readonly count: number;
  readonly sender?: string;
  readonly body?: string;
  readonly title?: string;
  /** Devices show one notification per key (FCM collapse_key / apns-collapse-id / Web Push Topic). */
  readonly collapseKey: string;
  readonly urgency: 'high' | 'normal';
  readonly ttlSeconds: number;
  /** Extra string data for the app (FCM data, APNs custom keys, inside the Web Push payload). */
  readonly data?: Readonly<Record<string, string>>;
}

export type SendResult =
  | { readonly outcome: 'sent'; readonly status: number; readonly latencyMs: number; readonly id?: string }
  /** Try again later: network error, timeout, 429, 5xx; retryAfterMs from Retry-After when given. */
  | { readonly outcome: 'retry'; readonly status: number | null; readonly latencyMs: number; readonly error: string; readonly retryAfterMs?: number }
  /** The token is dead (FCM UNREGISTERED / 404, APNs 410 Unregistered or 400 BadDeviceToken, Web Push 404/410): prune the registration. */
  | { readonly outcome: 'dead'; readonly status: number; readonly latencyMs: number; readonly reason: string }
  /** This push cannot succeed as is (bad request, auth refused, payload too large): do not retry it; counts as a failure of the registration. */
  | { readonly outcome: 'failed'; readonly status: number | null; readonly latencyMs: number; readonly error: string };

export interface PushProvider {
  readonly name: string;
  readonly type: 'fcm' | 'apns' | 'webpush' | 'webhook';
  send(target: PushTarget, message: PushMessage, signal?: AbortSignal): Promise<SendResult>; // never rejects
  close(): Promise<void>;
}

/** Builds a provider from its configuration entry (validated: throws ProviderConfigError with a clear message naming the provider and field). */
export type ProviderFactory = (name: string, config: Record<string, unknown>, deps: { readonly dataDir: string; readonly log: import('pino').Logger }) => PushProvider;
export class ProviderConfigError extends Error {}
