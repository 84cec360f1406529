import type { LeaveReason } from '../core/events.js';
import type { AccountPresence, SessionPresence } from '../core/presence.js';
import type { RosterItem } from '../core/roster.js';
import type { SubType } from '../core/subscription.js';

/** A session as every node of a deployment sees it. */
export interface LiveSession extends SessionPresence {
  readonly protocol: string;
  /** Which node holds the connection (always the local node for the in-process bus). */
  readonly node: string;
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
    }
  | { readonly kind: 'roster'; readonly item: RosterItem | null; readonly contact: string }
  | { readonly kind: 'subscription'; readonly from: string; readonly type: SubType }
  | { readonly kind: 'kick'; readonly reason: string }
  /** A notification for the account's user (the push feature's notify API): shown by the client, not presence. */
  | { readonly kind: 'notification'; readonly id: string; readonly title?: string; readonly body: string; readonly data?: Readonly<Record<string, string>> };

export type DeliveryHandler = (to: string, delivery: Delivery, resource: string | null) => void;

/**
 * Live presence and fan-out. The in-process implementation keeps everything in memory; a Redis
 * implementation keeps the session registry in Redis and routes deliveries to the node holding each
 * recipient, so the engine above does not change when a deployment becomes a cluster.
 */
export interface PresenceBus {
  readonly node: string;
  /** Inserts or replaces the session; resolves with every session of the account afterwards. */
  putSession(jid: string, session: LiveSession): Promise<LiveSession[]>;
  /** Removes the session; resolves with the sessions of the account that remain. */
  removeSession(jid: string, resource: string): Promise<LiveSession[]>;
  sessionsOf(jid: string): Promise<LiveSession[]>;
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
  close(): Promise<void>;
}
