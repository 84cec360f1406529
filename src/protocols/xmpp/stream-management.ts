import { randomBytes } from 'node:crypto';
import type { SessionPresence } from '../../core/presence.js';
import type { PresenceEngine, Session } from '../../engine/engine.js';
import type { XmppConnection } from './connection.js';
import { NS } from './namespaces.js';
import { parseFrame, type XmlLimits } from './parser.js';
import { bounce, routeToAddress } from './stanza-delivery.js';
import { el, type XmlElement } from './xml.js';

/** XEP-0198 counters are unsigned 32-bit and wrap. */
const MOD = 2 ** 32;

interface Unacked {
  readonly seq: number;
  readonly text: string;
}

export interface SmLimits {
  /** How long a detached state stays resumable; 0 disables resumption. */
  readonly resumeTimeoutMs: number;
  /** Unacknowledged stanzas, and their characters, beyond which the stream is ended. */
  readonly maxUnacked: number;
  readonly maxUnackedChars: number;
  /** Offline storage per account, which the unacknowledged messages of an ended state respect. */
  readonly maxOfflineMessages: number;
  readonly xml: XmlLimits;
}

/**
 * The stream-management state of one session. It outlives its connection while resumption is possible,
 * and it outlives the engine session too: watchers see a lost stream go after the ordinary grace period,
 * but the client may still resume it (and gets its messages) until the resumption window ends.
 */
export class SmState {
  /** Stanzas received from the client and handled (the `h` we report). */
  inbound = 0;
  /** Stanzas sent to the client. */
  outbound = 0;
  unacked: Unacked[] = [];
  /** Characters held in `unacked`. */
  unackedChars = 0;
  conn: XmppConnection | null;
  /** The client had sent available presence: a resumed stream continues as available. */
  available = false;
  /** The client's presence when its connection was lost: what a resume after the grace period announces again. */
  presence: SessionPresence | null = null;
  /** Directed presence recipients when the connection was lost (RFC 6121 §4.6). */
  directed: ReadonlySet<string> = new Set();
  /** Cleared on resume, or ends the state when the resumption window is over. */
  expiry: NodeJS.Timeout | null = null;
  /** Called once when the client leaves more unacknowledged than the limits allow; the connection ends the stream. */
  onOverflow: (() => void) | null = null;
  private overflowed = false;
  /** Offline messages sent and not yet acknowledged, by sequence number: their rows are still stored (routing.ts). */
  readonly stillStored = new Map<number, number>();

  constructor(
    readonly id: string,
    readonly jid: string,
    readonly resource: string,
    public resumable: boolean,
    conn: XmppConnection,
    private readonly limits: Pick<SmLimits, 'maxUnacked' | 'maxUnackedChars'>,
  ) {
    this.conn = conn;
  }

  get fullJid(): string {
    return `${this.jid}/${this.resource}`;
  }

  sent(text: string): void {
    this.outbound = (this.outbound + 1) % MOD;
    this.unacked.push({ seq: this.outbound, text });
    this.unackedChars += text.length;
    if (!this.overflowed && (this.unacked.length > this.limits.maxUnacked || this.unackedChars > this.limits.maxUnackedChars)) {
      // XEP-0198 §5 lets the server end a stream whose client does not acknowledge: the queue is the
      // server's memory, and a client that never acks would otherwise grow it without bound.
      this.overflowed = true;
      this.resumable = false;
      this.onOverflow?.();
    }
  }

  /** The client has handled every stanza up to `h`. */
  ack(h: number): void {
    const n = (h - (this.outbound - this.unacked.length) + MOD) % MOD;
    if (n > this.unacked.length) return; // acks more than we sent: ignore rather than trust it
    for (let i = 0; i < n; i++) this.unackedChars -= (this.unacked[i] as Unacked).text.length;
    this.unacked.splice(0, n);
  }
}

/**
 * Every stream-management state of this node, by resumption id and by full JID. A state ends when its
 * resumption window runs out, when the client closes its stream cleanly or binds the resource afresh,
 * when its account is kicked, or at shutdown; the messages the client never acknowledged are then
 * stored offline (up to the offline limit; senders of the rest who may see the account get an error), so nothing handed to a
 * vanished client is lost silently.
 */
export class StreamManagement {
  private readonly byId = new Map<string, SmState>();
  private readonly byFull = new Map<string, SmState>();
  /** States per account (bare JID), to tell which of its resources wait for resumption. */
  private readonly byJid = new Map<string, Set<SmState>>();
  private readonly ending = new Set<Promise<void>>();

  constructor(
    private readonly engine: PresenceEngine,
    private readonly limits: SmLimits,
  ) {
    engine.events.on('session.closed', (e) => {
      const s = this.byFull.get(`${e.jid}/${e.session.resource}`);
      // A state with a connection ends through that connection.
      if (!s || s.conn !== null) return;
      if (e.reason === 'timeout') {
        // The grace period is over: watchers were told it went; those it sent directed presence to hear it too.
        // The state stays resumable for the rest of its window.
        this.directedUnavailable(s);
        return;
      }
      void this.end(s);
    });
    engine.onSessionsElsewhere((jid, sessions) => {
      const mine = this.byJid.get(jid);
      if (mine === undefined) return;
      // The resource was bound on another node (the client could not resume here and bound afresh
      // there): as a fresh bind here would, that ends the state, and its messages go to offline storage.
      for (const s of [...mine]) {
        if (s.conn === null && sessions.some((x) => x.resource === s.resource && x.node !== engine.bus.node)) void this.end(s);
      }
    });
  }

  get resumeTimeoutMs(): number {
    return this.limits.resumeTimeoutMs;
  }

  enable(conn: XmppConnection, jid: string, resource: string, resume: boolean): SmState {
    const state = new SmState(randomBytes(12).toString('base64url'), jid, resource, resume && this.limits.resumeTimeoutMs > 0, conn, this.limits);
    const previous = this.byFull.get(state.fullJid);
    if (previous) void this.end(previous);
    this.byId.set(state.id, state);
    this.byFull.set(state.fullJid, state);
    let mine = this.byJid.get(jid);
    if (!mine) this.byJid.set(jid, (mine = new Set()));
    mine.add(state);
    return state;
  }

  /** Resources of `jid` whose state has no connection and may still be resumed. */
  heldResources(jid: string): string[] {
    const out: string[] = [];
    for (const s of this.byJid.get(jid) ?? []) if (s.conn === null && s.resumable) out.push(s.resource);
    return out;
  }

  /** The messages (chat or normal, with content) `s` was sent and has not acknowledged, other than stored ones sent again. */
  unackedMessages(s: SmState): XmlElement[] {
    const out: XmlElement[] = [];
    for (const u of s.unacked) {
      if (s.stillStored.has(u.seq)) continue;
      const m = this.storable(u.text);
      if (m) out.push(m);
    }
    return out;
  }

  /** The state a `<resume/>` names, if it belongs to `jid` and is still resumable. */
  find(id: string, jid: string): SmState | undefined {
    const s = this.byId.get(id);
    return s && s.jid === jid && s.resumable ? s : undefined;
  }

  ofFullJid(full: string): SmState | undefined {
    return this.byFull.get(full);
  }

  /** The connection of `s` was lost: the state may be resumed until the window ends. */
  detached(s: SmState): void {
    if (s.expiry) clearTimeout(s.expiry);
    s.expiry = setTimeout(() => {
      s.expiry = null;
      if (s.conn === null) void this.end(s);
    }, this.limits.resumeTimeoutMs);
    s.expiry.unref();
  }

  /** A new connection took `s` over. */
  resumed(s: SmState, conn: XmppConnection): void {
    if (s.expiry) clearTimeout(s.expiry);
    s.expiry = null;
    s.conn = conn;
  }

  /**
   * Ends a state (given as itself or by full JID): it can no longer be resumed and the messages the
   * client never acknowledged are stored offline, within the account's offline limit.
   */
  end(which: SmState | string): Promise<void> {
    // Tracked, so that shutdown waits for the messages to reach storage before it closes.
    const p = this.finish(which);
    this.ending.add(p);
    void p.finally(() => this.ending.delete(p));
    return p;
  }

  private async finish(which: SmState | string): Promise<void> {
    const s = typeof which === 'string' ? this.byFull.get(which) : which;
    if (!s) return;
    if (s.expiry) clearTimeout(s.expiry);
    s.expiry = null;
    s.resumable = false;
    if (this.byFull.get(s.fullJid) === s) this.byFull.delete(s.fullJid);
    this.byId.delete(s.id);
    const mine = this.byJid.get(s.jid);
    if (mine?.delete(s) && mine.size === 0) this.byJid.delete(s.jid);
    const pending = s.unacked.filter((u) => !s.stillStored.has(u.seq));
    s.unacked = [];
    s.unackedChars = 0;
    const store = this.engine.store;
    for (const u of pending) {
      const m = this.storable(u.text);
      if (!m) continue;
      // Counted with each message, atomically: routing (here or on another node) may store for the same account meanwhile.
      const id = await store.addOfflineMessageIfRoom({ to: s.jid, from: m.attr('from') ?? '', xml: u.text, at: Date.now() }, this.limits.maxOfflineMessages);
      if (id === null) await this.bounce(m, s.jid);
    }
  }

  /** At shutdown: every state ends, so unacknowledged messages reach storage before it closes. */
  async endAll(): Promise<void> {
    for (const s of [...this.byId.values()]) void this.end(s);
    while (this.ending.size > 0) await Promise.all([...this.ending]);
  }

  /** A message worth keeping for later, as routing stores them: chat or normal, with a body or subject. */
  private storable(text: string): XmlElement | null {
    if (!text.startsWith('<message')) return null;
    let m: XmlElement;
    try {
      m = parseFrame(text, this.limits.xml);
    } catch {
      return null;
    }
    const type = m.attr('type') ?? 'normal';
    if (type !== 'chat' && type !== 'normal') return null;
    return m.child('body') || m.child('subject') ? m : null;
  }

  /**
   * XEP-0198 §5 treats what cannot be kept as undeliverable: the sender hears service-unavailable
   * when it is still connected, on any node (errors are never stored).
   */
  private async bounce(m: XmlElement, to: string): Promise<void> {
    const from = m.attr('from');
    if (!from) return;
    const slash = from.indexOf('/');
    const bare = slash >= 0 ? from.slice(0, slash) : from;
    // As in routing: "storage full" proves the account exists, so only a sender who may see its
    // presence is told; anyone else's message is dropped as silently as one to nobody.
    if (!(await this.engine.canSee(bare, to))) return;
    await bounce(this.engine, m, 'service-unavailable', 'offline storage full');
  }

  private directedUnavailable(s: SmState): void {
    for (const full of s.directed) void sendTo(this.engine, s.fullJid, full, el('presence', NS.client, { from: s.fullJid, to: full, type: 'unavailable' }));
  }
}

/** A stream resumed after its session had ended: whoever it had sent directed presence to gets its presence again. */
export function announceDirected(engine: PresenceEngine, session: Session, targets: ReadonlySet<string>): void {
  const p = session.presence;
  for (const full of targets) {
    const stanza = el(
      'presence',
      NS.client,
      { from: session.fullJid, to: full },
      p.show !== 'available' ? el('show', NS.client, {}, p.show) : null,
      p.status ? el('status', NS.client, {}, p.status) : null,
      p.priority !== 0 ? el('priority', NS.client, {}, String(p.priority)) : null,
    );
    void sendTo(engine, session.fullJid, full, stanza);
  }
}

/** Directed presence goes to the named resource, or to the available resources of a bare JID (RFC 6121 §4.6), on any node. */
function sendTo(engine: PresenceEngine, from: string, full: string, stanza: XmlElement): Promise<void> {
  const slash = full.indexOf('/');
  const bare = slash >= 0 ? full.slice(0, slash) : full;
  const resource = slash >= 0 ? full.slice(slash + 1) : null;
  return routeToAddress(engine, bare, resource, stanza, from);
}
