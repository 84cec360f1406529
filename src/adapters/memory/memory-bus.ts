import type { Delivery, DeliveryHandler, LiveSession, PresenceBus } from '../../ports/bus.js';

/** The embedded deployment's bus: one process holds every session, deliveries are direct calls. */
export class MemoryBus implements PresenceBus {
  readonly node = 'local';
  private readonly sessions = new Map<string, Map<string, LiveSession>>();
  private sessionCount = 0;
  private handler: DeliveryHandler = () => {};

  async putSession(jid: string, session: LiveSession): Promise<LiveSession[]> {
    let m = this.sessions.get(jid);
    if (!m) {
      m = new Map();
      this.sessions.set(jid, m);
    }
    if (!m.has(session.resource)) this.sessionCount++;
    m.set(session.resource, session);
    return [...m.values()];
  }

  async removeSession(jid: string, resource: string): Promise<LiveSession[]> {
    const m = this.sessions.get(jid);
    if (!m) return [];
    if (m.delete(resource)) this.sessionCount--;
    if (m.size === 0) {
      this.sessions.delete(jid);
      return [];
    }
    return [...m.values()];
  }

  async sessionsOf(jid: string): Promise<LiveSession[]> {
    const m = this.sessions.get(jid);
    return m ? [...m.values()] : [];
  }

  async sessionsOfMany(jids: readonly string[]): Promise<Map<string, LiveSession[]>> {
    const out = new Map<string, LiveSession[]>();
    for (const j of jids) {
      const m = this.sessions.get(j);
      if (m) out.set(j, [...m.values()]);
    }
    return out;
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

  async close(): Promise<void> {
    this.sessions.clear();
    this.sessionCount = 0;
  }
}
