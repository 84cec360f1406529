import type { LeaveReason } from '../core/events.js';
import type { AccountPresence, LastSeen, SessionPresence } from '../core/presence.js';
import type { RosterItem } from '../core/roster.js';
import type { SubType } from '../core/subscription.js';

/** A session as every node of a deployment sees it. */
export interface LiveSession extends SessionPresence {
  readonly protocol: string;
  /** Which node holds the connection (always the local node for the in-process bus). */
  readonly node: string;
  /**
   * The connection is lost and the session waits out its grace period (or stream management's
   * resumption window) on its node: still online for watchers, but nothing reaches it live. Other
   * nodes cannot look at the connection, so the registry says it (the push policy counts on it).
   * Set a moment after the loss is noticed and cleared when the client comes back.
   */
  readonly detached?: true;
}

/**
 * An account's sessions right after a change, and the registry's version of the account at that point.
 * A clustered bus numbers every change of an account's sessions (the number only grows), so that two
 * nodes changing one account at once can tell which result is the later one; the in-process bus, where
 * changes of an account are applied one at a time, gives 0 ("no versions").
 */
export interface AccountSessions {
  readonly sessions: readonly LiveSession[];
  readonly version: number;
  /**
   * The account's sessions just before this change (clustered bus, for changes it numbered): with them
   * the node that made change v knows exactly what watchers were shown at v-1, whatever its own cache
   * learnt since from other nodes' later changes. Absent: the engine's cached presence is the "before".
   */
  readonly before?: readonly LiveSession[];
}

/**
 * What the engine sends to an account's connected sessions. Plain data, so a clustered bus can
 * serialise it to another node; the in-process bus passes the same object to every recipient, which
 * lets each protocol encode it once per change instead of once per recipient.
 */
export type Delivery =
  | {
      readonly kind: 'presence';
      readonly from: string;
      readonly presence: AccountPresence;
      /** The session whose change caused this update (null when the account became unavailable). */
      readonly session: SessionPresence | null;
      /**
       * Only one resource changed (it came, went or changed while another resource still represents the
       * account): protocols that show per-resource presence (XMPP) use it, the others ignore it.
       */
      readonly resourceOnly?: true;
      /** Set when the account went offline because its last session ended: why it ended. */
      readonly reason?: LeaveReason;
      /**
       * The registry version of `from` this presence was computed at (clustered bus only). A node that
       * already delivered a later version of `from` treats this one as stale (see the engine's dispatch).
       */
      readonly version?: number;
    }
  | { readonly kind: 'roster'; readonly item: RosterItem | null; readonly contact: string }
  | { readonly kind: 'subscription'; readonly from: string; readonly type: SubType }
  /** Ends the account's sessions (or the one resource) on every node holding them; `reason` is what the client is told. */
  | { readonly kind: 'kick'; readonly reason: string }
  /** A notification for the account's user (the push feature's notify API): shown by the client, not presence. */
  | { readonly kind: 'notification'; readonly id: string; readonly title?: string; readonly body: string; readonly data?: Readonly<Record<string, string>> }
  | StanzaDelivery;

/**
 * A protocol stanza routed to one resource (XMPP messages, IQs, directed presence), wherever the
 * resource is connected: the sending node chose the resource (and so `node`) from the registry; the
 * engine of that node hands it to the front door that registered for stanzas (see
 * PresenceEngine.onStanza), which also decides what happens when the resource is no longer there.
 * Sent with `deliver(account, d, resource)`; per recipient it keeps its order with every other delivery.
 */
export interface StanzaDelivery {
  readonly kind: 'stanza';
  /** The node the sender found the resource on: every other node's engine ignores the delivery. */
  readonly node: string;
  /** The stanza, serialised, with its `from` and `to` already set. */
  readonly xml: string;
  readonly route: StanzaRoute;
}

/** How the receiving front door hands a routed stanza over, and what it does if it cannot. */
export interface StanzaRoute {
  /** The sender's full JID (answers, directed presence checks and bounced errors are about it). */
  readonly from: string;
  /**
   * The resource is gone (or may not take it): `drop` silently; `bounce` answers the sender with
   * service-unavailable; `bare` routes the message again by the rules for the bare JID (RFC 6121 §8.5.3.2.1).
   */
  readonly ifGone: 'drop' | 'bounce' | 'bare';
  /** An IQ request with this id: the resource's answer to `from` is routed back. */
  readonly expect?: string;
  /** Taken only if the resource sent directed presence to `from` (the only state that lives on its node alone). */
  readonly directed?: true;
  /** Taken only if the resource is available (directed presence to a bare JID). */
  readonly available?: true;
  /** A message delivered live: the receiving node tells the features (push), naming these resources of the account. */
  readonly hook?: readonly string[];
  /** ifGone bare: the other resources the message went to at the same time (they took it if they are still there). */
  readonly also?: readonly string[];
  /** ifGone bare: resources already found gone, and how many times the message was routed again. */
  readonly tried?: readonly string[];
  readonly hops?: number;
}

export type DeliveryHandler = (to: string, delivery: Delivery, resource: string | null) => void;

/**
 * A small message from one node's engine to every other node's: a cache to drop, or the last seen the
 * origin computed when an account went offline (other nodes only learn that its sessions went).
 */
export type ClusterNote =
  | {
      readonly kind: 'invalidate';
      readonly jid: string;
      /** What changed in the store: the roster, the block list, the settings, or the account itself (created or deleted). */
      readonly parts: ReadonlyArray<'roster' | 'blocks' | 'settings' | 'account'>;
    }
  | { readonly kind: 'last-seen'; readonly jid: string; readonly lastSeen: LastSeen };

/**
 * What the rest of a cluster did that this node's engine must follow. The in-process bus never emits
 * any. Handlers that return a promise are awaited where the bus says so (node-down).
 */
export type ClusterEvent =
  /** Another node changed the account's sessions: cached presence follows, silently (the other node fanned out). */
  | { readonly kind: 'sessions'; readonly jid: string; readonly sessions: readonly LiveSession[]; readonly version: number }
  /**
   * This node was chosen to declare a dead node's sessions of `jid` offline: they are already gone from
   * the registry; the engine ends them (reason node_down) and fans the account's presence out. The bus
   * waits for the returned promise before it counts the account as done.
   */
  | {
      readonly kind: 'node-down';
      readonly jid: string;
      readonly removed: readonly LiveSession[];
      readonly remaining: readonly LiveSession[];
      readonly version: number;
      /** When the dead node was last heard (its last lease renewal). */
      readonly heardAt: number;
    }
  /** Another node took over the local session `resource` (the same full JID logged in there). */
  | { readonly kind: 'taken-over'; readonly jid: string; readonly resource: string }
  /**
   * This node lost its lease (paused or cut off for longer than node_lease_ms, and declared dead by the
   * others, who already told every watcher): every local session must end at once, silently.
   */
  | { readonly kind: 'fenced' }
  /**
   * The live state was rebuilt after the bus lost its connection (Redis restarted, failed over or was
   * unreachable): cached presence must be recomputed, and the accounts in `refresh` (changed here
   * while the bus could not tell the others; every local account when deliveries were lost) announced again.
   */
  | {
      readonly kind: 'resynced';
      readonly refresh: readonly string[];
      readonly allLocal: boolean;
      /** Cache notes of other nodes may have been lost: cached rosters, blocks and settings must be read again. */
      readonly reloadCaches: boolean;
    }
  | { readonly kind: 'note'; readonly note: ClusterNote };

export type ClusterHandler = (event: ClusterEvent) => void | Promise<void>;

/**
 * What features exchange with their peers on the other nodes (FeatureContext.cluster), apart from the
 * engine's notes: the bus carries them and knows nothing of what they mean.
 */
export type PeerEvent =
  /**
   * A message another node published on `topic`; per sender, in the order it published them. `done`
   * must be called once it is handled: a sender waiting for acknowledgements waits for it.
   */
  | { readonly kind: 'message'; readonly topic: string; readonly payload: unknown; readonly from: string; readonly done: () => void }
  /** Messages of other nodes may be missed from now on (this node lost the feed, or was fenced). */
  | { readonly kind: 'lost' }
  /**
   * The feed carries messages again, and some may have been missed meanwhile: whatever a feature keeps
   * in memory from its peers' messages must be read again from the database.
   */
  | { readonly kind: 'resync' };

export type PeerHandler = (event: PeerEvent) => void;

/** How long a sender waits for the other nodes to acknowledge a feature message (a node that does not is slow or cut off). */
export const PEER_ACK_TIMEOUT_MS = 2_000;

/** Counters a clustered bus keeps for the metrics endpoint. */
export interface BusStats {
  /** Delivery batches written for other nodes. */
  batchesSent: number;
  /** Deliveries (recipient × delivery) sent to other nodes. */
  remoteDeliveries: number;
  /**
   * Deliveries handed to the bus for sessions on other nodes, sent or not yet (gathered for the end of
   * the tick, or kept while Redis is unreachable): minus remoteDeliveries, what waits to leave.
   */
  remoteQueued: number;
  /** Deliveries received from other nodes. */
  deliveriesReceived: number;
  /** Lease renewals that failed (Redis unreachable or too slow), and times this node found itself fenced. */
  leaseRenewFailures: number;
  fenced: number;
  /** Registry writes refused because the writer's epoch was no longer current. */
  writesRefused: number;
  /** Dead nodes this node declared, and the sessions it declared offline for them. */
  nodesDeclaredDown: number;
  sessionsDeclaredOffline: number;
  /** Rebuilds of the local registry replica (start, reconnects). */
  resyncs: number;
  /** Whether the bus can reach Redis now (1) or not (0). */
  connected: number;
}

/**
 * Live presence and fan-out. The in-process implementation keeps everything in memory; a Redis
 * implementation keeps the session registry in Redis and routes deliveries to the node holding each
 * recipient, so the engine above does not change when a deployment becomes a cluster.
 */
export interface PresenceBus {
  readonly node: string;
  /** Inserts or replaces the session; resolves with every session of the account afterwards. */
  putSession(jid: string, session: LiveSession): Promise<AccountSessions>;
  /** Removes the session; resolves with the sessions of the account that remain. */
  removeSession(jid: string, resource: string): Promise<AccountSessions>;
  sessionsOf(jid: string): Promise<LiveSession[]>;
  /** sessionsOf with the account's registry version (0 for the in-process bus). */
  accountSessions(jid: string): Promise<AccountSessions>;
  sessionsOfMany(jids: readonly string[]): Promise<Map<string, LiveSession[]>>;
  /** Number of sessions and of online accounts known to the bus (cluster-wide where applicable). */
  counts(): Promise<{ sessions: number; accounts: number }>;
  /**
   * Hands `delivery` to the sessions of `to` (all of them, or only `resource`) wherever they are
   * connected. Fire-and-forget: ordering per recipient is preserved, delivery to a session that
   * vanished is dropped.
   */
  deliver(to: string, delivery: Delivery, resource?: string | null): void;
  /** The local node's receiver of deliveries; set once by the engine. */
  onDelivery(handler: DeliveryHandler): void;
  /** Tells every other node's engine (no-op for the in-process bus). Fire-and-forget. */
  publishNote(note: ClusterNote): void;
  /** The engine's receiver of cluster events; set once by the engine. */
  onCluster(handler: ClusterHandler): void;
  /**
   * Sends a feature's message (JSON-serialisable) to every other node; no-op for the in-process bus.
   * Resolves once the cluster took it, so anything any node publishes afterwards reaches every node
   * after it; with `acknowledged`, once every live node also handled it (or `PEER_ACK_TIMEOUT_MS`
   * passed). While Redis is unreachable it is kept and sent when it is back (and resolves at once).
   * Never rejects.
   */
  publishPeer(topic: string, payload: unknown, opts?: { readonly acknowledged?: boolean }): Promise<void>;
  /** The receiver of other nodes' feature messages; set once by the feature host. */
  onPeer(handler: PeerHandler): void;
  /** Counters for metrics (clustered buses only). */
  readonly stats?: Readonly<BusStats>;
  /**
   * Null while this node can serve through the bus; otherwise why not, for the health check (Redis
   * unreachable, declared down and joining again, still joining, shutting down).
   */
  health(): string | null;
  close(): Promise<void>;
}
