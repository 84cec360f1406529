import { randomBytes } from 'node:crypto';
import type { PresenceEngine } from '../../engine/engine.js';
import type { XmppConnection } from './connection.js';

/** XEP-0198 counters are unsigned 32-bit and wrap. */
const MOD = 2 ** 32;

interface Unacked {
  readonly seq: number;
  readonly text: string;
}

/** The stream-management state of one session; it outlives its connection while resumption is possible. */
export class SmState {
  /** Stanzas received from the client and handled (the `h` we report). */
  inbound = 0;
  /** Stanzas sent to the client. */
  outbound = 0;
  unacked: Unacked[] = [];
  conn: XmppConnection | null;
  /** The client had sent available presence: a resumed stream continues as available. */
  available = false;
  /** Offline messages sent and not yet acknowledged, by sequence number: their rows are still stored (routing.ts). */
  readonly stillStored = new Map<number, number>();

  constructor(
    readonly id: string,
    readonly jid: string,
    readonly resource: string,
    readonly resumable: boolean,
    conn: XmppConnection,
  ) {
    this.conn = conn;
  }

  get fullJid(): string {
    return `${this.jid}/${this.resource}`;
  }

  sent(text: string): void {
    this.outbound = (this.outbound + 1) % MOD;
    this.unacked.push({ seq: this.outbound, text });
  }

  /** The client has handled every stanza up to `h`. */
  ack(h: number): void {
    const n = (h - (this.outbound - this.unacked.length) + MOD) % MOD;
    if (n > this.unacked.length) return; // acks more than we sent: ignore rather than trust it
    this.unacked.splice(0, n);
  }
}

/**
 * Every stream-management state of this node, by resumption id and by full JID. A state ends when its
 * engine session ends (resumption window over, clean close, replaced): the messages the client never
 * acknowledged are then stored offline, so nothing handed to a vanished client is lost.
 */
export class StreamManagement {
  private readonly byId = new Map<string, SmState>();
  private readonly byFull = new Map<string, SmState>();

  constructor(
    private readonly engine: PresenceEngine,
    readonly resumeTimeoutMs: number,
  ) {
    engine.events.on('session.closed', (e) => {
      void this.end(`${e.jid}/${e.session.resource}`);
    });
  }

  enable(conn: XmppConnection, jid: string, resource: string, resume: boolean): SmState {
    const state = new SmState(randomBytes(12).toString('base64url'), jid, resource, resume && this.resumeTimeoutMs > 0, conn);
    const previous = this.byFull.get(state.fullJid);
    if (previous) this.byId.delete(previous.id);
    this.byId.set(state.id, state);
    this.byFull.set(state.fullJid, state);
    return state;
  }

  /** The state a `<resume/>` names, if it belongs to `jid` and is still resumable. */
  find(id: string, jid: string): SmState | undefined {
    const s = this.byId.get(id);
    return s && s.jid === jid && s.resumable ? s : undefined;
  }

  ofFullJid(full: string): SmState | undefined {
    return this.byFull.get(full);
  }

  /** Ends the state of `full`: unacknowledged messages go to offline storage. */
  async end(full: string): Promise<void> {
    const s = this.byFull.get(full);
    if (!s) return;
    this.byFull.delete(full);
    this.byId.delete(s.id);
    const messages = s.unacked.filter((u) => !s.stillStored.has(u.seq) && u.text.startsWith('<message') && u.text.includes('<body'));
    s.unacked = [];
    for (const m of messages) {
      const from = /^<message[^>]*\sfrom='([^']*)'/.exec(m.text)?.[1] ?? '';
      await this.engine.store.addOfflineMessage({ to: s.jid, from, xml: m.text, at: Date.now() });
    }
  }
}
