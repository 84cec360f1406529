import type { AccountPresence, SessionPresence } from './presence.js';
import type { SubState } from './subscription-state.js';

/**
 * Why a session ended, one word for every front door, so features and clients can tell a goodbye from
 * a loss:
 * - `graceful`: the client said goodbye (native close 1000 or `bye`, XMPP `</stream:stream>`/`<close/>`);
 * - `timeout`: the connection was lost (closed without goodbye and the grace or resumption window ran
 *   out, or the idle sweep found it silent);
 * - `replaced`: the same resource logged in again;
 * - `kicked`: the server ended it (account removed, password changed, admin, flooding);
 * - `shutdown`: the server is stopping;
 * - `crash-recovery`: found online at start after an unclean stop;
 * - `node_down`: the cluster node holding it died.
 */
export const LEAVE_REASONS = ['graceful', 'timeout', 'replaced', 'kicked', 'shutdown', 'crash-recovery', 'node_down'] as const;
export type LeaveReason = (typeof LEAVE_REASONS)[number];

/** Everything that happens to presence, for features (apps, push, extensions) to consume. */
export interface PresenceEvents {
  'session.opened': { jid: string; session: SessionPresence; protocol: string };
  'session.changed': { jid: string; session: SessionPresence; previous: SessionPresence };
  /**
   * `protocol` is given when the session ended on another node (reason node_down: this node declares a
   * dead node's sessions offline); listeners on the node holding a session know its protocol already.
   */
  'session.closed': { jid: string; session: SessionPresence; reason: LeaveReason; protocol?: string };
  /**
   * A login took over a resource whose connection was still up: that connection ended (reason
   * `replaced`) while the session itself goes on, so watchers see nothing and no `session.closed`
   * is emitted. `session` is the session as it was; `protocol` is the new connection's.
   *
   * `elsewhere`: the new connection is on another node of the cluster, which emits `session.opened`
   * for it (this node only saw its own connection end; `protocol` is then the old connection's).
   */
  'session.replaced': { jid: string; session: SessionPresence; protocol: string; elsewhere?: true };
  /**
   * `version`, with a clustered bus: the registry version of the account this presence was computed at
   * (it only grows). Changes made on two nodes reach listeners on two nodes, in any order; the larger
   * version is the later state.
   */
  'presence.changed': { jid: string; presence: AccountPresence; previous: AccountPresence; version?: number };
  'subscription.changed': { owner: string; contact: string; state: SubState | null };
  'block.changed': { owner: string; contact: string; blocked: boolean };
  'account.created': { jid: string };
  'account.deleted': { jid: string };
}

export type EventName = keyof PresenceEvents;
type Listener<K extends EventName> = (payload: PresenceEvents[K]) => void;

/**
 * A tiny synchronous typed emitter. Listeners run in registration order; a throwing listener is
 * reported through `onListenerError` and never stops the others, because one faulty extension must
 * not keep presence from reaching everyone else.
 */
export class EventHub {
  private readonly listeners = new Map<EventName, Array<Listener<never>>>();
  onListenerError: (err: unknown, event: EventName) => void = () => {};

  on<K extends EventName>(event: K, fn: Listener<K>): () => void {
    let list = this.listeners.get(event);
    if (!list) {
      list = [];
      this.listeners.set(event, list);
    }
    list.push(fn as Listener<never>);
    return () => {
      const l = this.listeners.get(event);
      if (!l) return;
      const i = l.indexOf(fn as Listener<never>);
      if (i >= 0) l.splice(i, 1);
    };
  }

  hasListeners(event: EventName): boolean {
    return (this.listeners.get(event)?.length ?? 0) > 0;
  }

  emit<K extends EventName>(event: K, payload: PresenceEvents[K]): void {
    const list = this.listeners.get(event);
    if (!list || list.length === 0) return;
    for (const fn of list.slice()) {
      try {
        (fn as Listener<K>)(payload);
      } catch (err) {
        this.onListenerError(err, event);
      }
    }
  }
}
