/**
 * @presenced/extension-api: what a presenced server-side presence extension is made of.
 *
 * An extension is an ES module whose default export is a `PresenceExtension` (write it with
 * `definePresenceExtension` for the types). presenced runs each extension in a worker thread of its
 * own, calls its hooks one at a time, in the order things happened, each within a time budget, and
 * hands it a context (`ExtensionContext`) through which it reaches the server. Everything that crosses
 * between the server and the extension is plain data (structured clone): no functions, no classes.
 *
 * This package has no runtime dependencies; at run time an extension needs nothing from it but the
 * identity function `definePresenceExtension`, which it may leave out.
 */

/** An available session's show, as XMPP and the native protocol say it. */
export type Show = 'chat' | 'available' | 'away' | 'xa' | 'dnd';
/** An account's aggregate state: a show, or offline. */
export type StatusWord = Show | 'offline';

/**
 * Why a session ended:
 * - `graceful`: the client said goodbye;
 * - `timeout`: the connection was lost (closed without goodbye, or silent) and its grace period ran out;
 * - `replaced`: the same resource logged in again;
 * - `kicked`: the server ended it (account removed, password changed, flooding);
 * - `shutdown`: the server is stopping;
 * - `crash-recovery`: found online at start after an unclean stop;
 * - `node_down`: the cluster node holding it died.
 */
export const LEAVE_REASONS = ['graceful', 'timeout', 'replaced', 'kicked', 'shutdown', 'crash-recovery', 'node_down'] as const;
export type LeaveReason = (typeof LEAVE_REASONS)[number];

/** One connected device of a user. */
export interface SessionInfo {
  readonly resource: string;
  /** The front door it came through: `native` (WebSocket) or `xmpp`. */
  readonly protocol: string;
  /** false for a connected session that has not (yet) announced itself available. */
  readonly available: boolean;
  readonly show: Show;
  readonly status: string | null;
  readonly priority: number;
  /** Epoch ms of the session's last presence change or activity. */
  readonly lastActive: number;
}

/**
 * A push registration of the user (a device reachable through a configured push provider): what the
 * seed calls the user's "external token". The token itself is not given to extensions: a provider
 * token is a credential to reach the device, and extensions push through `ctx.push.send`, which uses
 * it on their behalf. `id` names the registration in `PushNotification.devices`.
 */
export interface ExternalToken {
  readonly id: string;
  /** The name of the provider in the server's `push_providers`. */
  readonly provider: string;
  /** The provider's type: `fcm`, `apns`, `webpush` or `webhook` (null if no longer configured). */
  readonly type: string | null;
  /** The resource the device registered from, when known. */
  readonly resource: string | null;
  /** false once the server disabled it after repeated failures (until the device registers again). */
  readonly enabled: boolean;
  readonly createdAt: number;
}

/** A user as the server knows them when the hook is called. */
export interface PresenceUser {
  /** Bare JID, e.g. `alice@example.com`. */
  readonly jid: string;
  readonly online: boolean;
  readonly show: StatusWord;
  readonly status: string | null;
  /** Every session, available or not, best first. */
  readonly sessions: readonly SessionInfo[];
  /** Push registrations (empty when the push feature is off). */
  readonly externalTokens: readonly ExternalToken[];
  /** Epoch ms when the user was last online; null while online or if never seen. */
  readonly lastSeen: number | null;
}

/** RFC 6121 subscription state of a roster item, seen from its owner. */
export interface SubscriptionState {
  /** The owner receives the contact's presence. */
  readonly to: boolean;
  /** The contact receives the owner's presence (the contact "follows" the owner). */
  readonly from: boolean;
  readonly pendingOut: boolean;
  readonly pendingIn: boolean;
}

export interface SubscriptionChange {
  readonly owner: string;
  readonly contact: string;
  /** null: the roster item is gone. */
  readonly state: SubscriptionState | null;
}

/** What made `onUserPresence` be called. */
export type PresenceChange =
  | { readonly type: 'connect'; readonly resource: string; readonly protocol: string; readonly at: number }
  | { readonly type: 'disconnect'; readonly resource: string; readonly reason: LeaveReason; readonly at: number }
  /** What the user's contacts see changed: online, show or status. `previous` is what they saw before. */
  | { readonly type: 'presence'; readonly previous: { readonly online: boolean; readonly show: StatusWord; readonly status: string | null }; readonly at: number }
  | { readonly type: 'subscription'; readonly contact: string; readonly state: SubscriptionState | null; readonly at: number };

export interface PushNotification {
  readonly title?: string;
  readonly body: string;
  /** String values only (what every provider carries). */
  readonly data?: Readonly<Record<string, string>>;
  /** A newer push with the same key replaces a waiting one. */
  readonly collapseKey?: string;
  readonly urgency?: 'high' | 'normal';
  /**
   * Only these registrations (ExternalToken ids) of the user. Left out, the server's push policy picks:
   * every enabled device whose own session is not active.
   */
  readonly devices?: readonly string[];
}

export interface PushResult {
  /** The registrations a push was queued for (durably: it will be sent, retried if need be). */
  readonly queued: readonly string[];
}

export interface NotifyPayload {
  readonly title?: string;
  readonly body: string;
  readonly data?: Readonly<Record<string, string>>;
}

export interface NotifyResult {
  readonly id: string;
  /** Sessions it was delivered to live. */
  readonly sessions: number;
  /** Devices a push was queued for. */
  readonly pushed: number;
}

/** The extension's own durable key-value store (kept in the server's database, apart from others'). */
export interface KeyValueStore {
  /** undefined when the key is not set. */
  get<T = unknown>(key: string): Promise<T | undefined>;
  /** Any JSON value; keys up to 256 characters, values up to 64 KiB of JSON. */
  set(key: string, value: unknown): Promise<void>;
  /** true if the key was set. */
  delete(key: string): Promise<boolean>;
  /** Keys starting with `prefix` (all when left out), sorted, at most 1000. */
  list(prefix?: string): Promise<string[]>;
}

/** Lines go to the server's log, tagged with the extension's name. */
export interface ExtensionLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
}

export interface ExtensionContext<Settings = Record<string, unknown>> {
  /** The extension's name (from its configuration entry, or its own). */
  readonly name: string;
  /** The `settings` object of its configuration entry ({} when none). */
  readonly settings: Settings;
  readonly log: ExtensionLogger;
  readonly kv: KeyValueStore;
  readonly push: {
    /** Queues a push to the user's devices through the configured providers (fails when push is off). */
    send(jid: string, notification: PushNotification): Promise<PushResult>;
  };
  /** Delivers a notification to the user's connected sessions, and by push to their devices that are not active. */
  notify(jid: string, payload: NotifyPayload): Promise<NotifyResult>;
  readonly presence: {
    /** The user as the server knows them now. */
    get(jid: string): Promise<PresenceUser>;
    /** The accounts that receive `jid`'s presence (its roster items with a `from` subscription). */
    followers(jid: string): Promise<string[]>;
  };
}

type Awaitable<T> = T | Promise<T>;

export interface PresenceExtension<Settings = Record<string, unknown>> {
  /** Lower-case letters, digits, `-` and `_`, up to 64; names the extension in logs, metrics and `extensions list`. */
  readonly name: string;
  /** Once, before any event. A throw (or running past the budget) fails the start. */
  onStart?(ctx: ExtensionContext<Settings>): Awaitable<void>;
  /** Before the extension's worker is stopped (reload, shutdown), within the budget. */
  onStop?(ctx: ExtensionContext<Settings>): Awaitable<void>;
  /** A user connected, disconnected, changed what contacts see, or had a subscription change. */
  onUserPresence?(user: PresenceUser, change: PresenceChange, ctx: ExtensionContext<Settings>): Awaitable<void>;
  /** One session ended, with why. */
  onSessionClosed?(session: SessionInfo, reason: LeaveReason, user: PresenceUser, ctx: ExtensionContext<Settings>): Awaitable<void>;
  onSubscriptionChanged?(change: SubscriptionChange, ctx: ExtensionContext<Settings>): Awaitable<void>;
}

/** The hooks an extension may define (anything else on the default export besides `name` is refused). */
export const EXTENSION_HOOKS = ['onStart', 'onStop', 'onUserPresence', 'onSessionClosed', 'onSubscriptionChanged'] as const;

/** Declares an extension; returns it unchanged (it exists for the types). */
export function definePresenceExtension<Settings = Record<string, unknown>>(extension: PresenceExtension<Settings>): PresenceExtension<Settings> {
  return extension;
}
