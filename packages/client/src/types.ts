/** The shows a session can choose (docs/native-protocol.md); `offline` only ever describes a contact. */
export type Show = 'available' | 'chat' | 'away' | 'xa' | 'dnd';
export type ContactShow = Show | 'offline';

/** What you send as your own presence. Omitted fields take the protocol defaults. */
export interface PresenceInput {
  readonly show?: Show;
  /** At most 1024 characters; null for none. */
  readonly status?: string | null;
  /** -128..127; the session with the highest priority represents the account. */
  readonly priority?: number;
}

/** Your session's presence as the server applied it. */
export interface OwnPresence {
  readonly show: Show;
  readonly status: string | null;
  readonly priority: number;
}

/**
 * Why a contact's last session ended: a goodbye (`graceful`), a lost connection (`timeout`), the same
 * device logging in again (`replaced`), the server ending it (`kicked`, `shutdown`), or the server
 * finding it online after its own crash (`crash-recovery`); `node_down` when a cluster node died.
 */
export type LeaveReason = 'graceful' | 'timeout' | 'replaced' | 'kicked' | 'shutdown' | 'crash-recovery' | 'node_down';

/** A contact's presence (or your own account's, when you have several sessions). */
export interface ContactPresence {
  /** The bare JID, lower-cased by the server. */
  readonly jid: string;
  /** True while at least one of the contact's sessions is available. */
  readonly available: boolean;
  readonly show: ContactShow;
  readonly status: string | null;
  readonly priority: number;
  /** When the contact was last heard while online; null while online, or when you may not know. */
  readonly lastSeen: Date | null;
  /** Only on the push telling you the contact went offline because its last session ended: why. */
  readonly reason?: LeaveReason;
}

export type Subscription = 'none' | 'to' | 'from' | 'both';

export interface SubscriptionState {
  readonly jid: string;
  /** `to`: you see the contact; `from`: the contact sees you. */
  readonly subscription: Subscription;
  /** You asked to see the contact and await an answer. */
  readonly pendingOut: boolean;
  /** The contact asked to see you and awaits your answer. */
  readonly pendingIn: boolean;
  /** You approved a request the contact has not sent yet. */
  readonly preApproved: boolean;
}

export interface RosterItem extends SubscriptionState {
  readonly name: string | null;
  readonly groups: readonly string[];
}

export type RosterChange = { readonly kind: 'changed'; readonly item: RosterItem } | { readonly kind: 'removed'; readonly jid: string };

export type SubscriptionKind = 'subscribe' | 'subscribed' | 'unsubscribe' | 'unsubscribed';

export interface SubscriptionEvent {
  readonly from: string;
  /** `subscribe`: a request for your presence; the others answer or cancel. */
  readonly kind: SubscriptionKind;
}

/**
 * The subset of the WebSocket API the client uses; browsers' WebSocket and the `ws` package both fit.
 * Handlers take `any` because the two libraries type their event objects differently; the client only
 * reads `data`, `code` and `reason`.
 */
export interface WebSocketLike {
  readonly readyState: number;
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;
