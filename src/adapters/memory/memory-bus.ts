import type { AccountSessions, ClusterHandler, ClusterNote, Delivery, DeliveryHandler, LiveSession, PeerHandler, PresenceBus } from '../../ports/bus.js';

/** The embedded deployment's bus: one process holds every session, deliveries are direct calls. */
export class MemoryBus implements PresenceBus {
  readonly node = 'local';
  /**
   * An account's sessions: the session itself while it is the only one (almost every account), a Map by
   * resource once there are more. A one-entry Map costs a few hundred bytes, which at 10,000 idle
   * sessions is a noticeable share of the memory per session.
   */
  private readonly sessions = new Map<string, LiveSession | Map<string, LiveSession>>();
  private sessionCount = 0;
  private handler: DeliveryHandler = () => {};

  health(): null {
    return null;
  }

  async putSession(jid: string, session: LiveSession): Promise<AccountSessions> {
    return { sessions: this.put(jid, session), version: 0 };
  }

  private put(jid: string, session: LiveSession): LiveSession[] {
    const cur = this.sessions.get(jid);
    if (cur === undefined) {
      this.sessions.set(jid, session);
      this.sessionCount++;
      return [session];
    }
    if (!(cur instanceof Map)) {
      if (cur.resource === session.resource) {
        this.sessions.set(jid, session);
        return [session];
      }
      const m = new Map([[cur.resource, cur], [session.resource, session]]);
      this.sessions.set(jid, m);
      this.sessionCount++;
      return [cur, session];
    }
    if (!cur.has(session.resource)) this.sessionCount++;
    cur.set(session.resource, session);
    return [...cur.values()];
  }

  async removeSession(jid: string, resource: string): Promise<AccountSessions> {
    return { sessions: this.remove(jid, resource), version: 0 };
  }

  private remove(jid: string, resource: string): LiveSession[] {
    const cur = this.sessions.get(jid);
    if (cur === undefined) return [];
    if (!(cur instanceof Map)) {
      if (cur.resource !== resource) return [cur];
      this.sessions.delete(jid);
      this.sessionCount--;
      return [];
    }
    if (cur.delete(resource)) this.sessionCount--;
    const rest = [...cur.values()];
    if (rest.length === 1) this.sessions.set(jid, rest[0]!);
    else if (rest.length === 0) this.sessions.delete(jid);
    return rest;
  }

  async sessionsOf(jid: string): Promise<LiveSession[]> {
    return this.list(jid) ?? [];
  }

  async accountSessions(jid: string): Promise<AccountSessions> {
    return { sessions: this.list(jid) ?? [], version: 0 };
  }

  async sessionsOfMany(jids: readonly string[]): Promise<Map<string, LiveSession[]>> {
    const out = new Map<string, LiveSession[]>();
    for (const j of jids) {
      const l = this.list(j);
      if (l) out.set(j, l);
    }
    return out;
  }

  private list(jid: string): LiveSession[] | null {
    const cur = this.sessions.get(jid);
    if (cur === undefined) return null;
    return cur instanceof Map ? [...cur.values()] : [cur];
  }

  async counts(): Promise<{ sessions: number; accounts: number }> {
    return { sessions: this.sessionCount, accounts: this.sessions.size };
  }

  deliver(to: string, delivery: Delivery, resource: string | null = null): void {
    this.handler(to, delivery, resource);
  }

  onDelivery(handler: DeliveryHandler): void {
    this.handler = handler;
  }

  /** One process is the whole deployment: there is nobody to tell. */
  publishNote(_note: ClusterNote): void {}

  onCluster(_handler: ClusterHandler): void {}

  async publishPeer(_topic: string, _payload: unknown, _opts?: { readonly acknowledged?: boolean }): Promise<void> {}

  onPeer(_handler: PeerHandler): void {}

  async close(): Promise<void> {
    this.sessions.clear();
    this.sessionCount = 0;
  }
}
