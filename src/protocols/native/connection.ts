import type { Duplex } from 'node:stream';
import type { WebSocket } from 'ws';
import { isPresenceError, PresenceError } from '../../core/errors.js';
import type { LeaveReason } from '../../core/events.js';
import { parseAccountJid } from '../../core/jid.js';
import type { SubType } from '../../core/subscription.js';
import type { Delivery } from '../../ports/bus.js';
import { LoginThrottled } from '../../engine/login-throttle.js';
import type { PresenceEngine, Session, SessionSink } from '../../engine/engine.js';
import {
  errorFrame,
  parseRequest,
  presenceInput,
  presencePush,
  presenceView,
  RequestError,
  result,
  rosterFields,
  rosterItemView,
  str,
  type Request,
} from './messages.js';
import { LoginTurns } from '../login-turns.js';
import { Outbox, textFrame } from './outbox.js';
import type { NativeRequestRegistry } from '../../features/registries.js';

export interface NativeLimits {
  /** Sustained requests per second a connection may send. */
  readonly rate: number;
  /** Requests a connection may send at once above the sustained rate. */
  readonly burst: number;
  /** Rejected requests in a row after which the connection is closed as a flood. */
  readonly maxStrikes: number;
  /** Failed logins after which the connection is closed. */
  readonly maxAuthFailures: number;
}

export interface NativeHooks {
  onError(code: string): void;
}

/** WebSocket close codes (RFC 6455 §7.4.1) the server uses. */
export const CLOSE = { normal: 1000, goingAway: 1001, policy: 1008, tooBig: 1009, internal: 1011 } as const;

const SUBSCRIPTION_TYPES: Record<string, SubType> = {
  subscribe: 'subscribe',
  approve: 'subscribed',
  unsubscribe: 'unsubscribe',
  deny: 'unsubscribed',
};

/**
 * Encoded once per delivery: the engine hands one delivery object to every recipient in a row, so a
 * one-entry cache serves all of them without the GC cost a WeakMap of every delivery would have.
 */
let lastDelivery: Delivery | null = null;
let lastFrame: Buffer = Buffer.alloc(0);

function encodeDelivery(d: Exclude<Delivery, { kind: 'stanza' }>): Buffer {
  if (d === lastDelivery) return lastFrame;
  let s: string;
  switch (d.kind) {
    case 'presence':
      s = JSON.stringify(presencePush(d.presence, d.reason));
      break;
    case 'roster':
      s = JSON.stringify(d.item ? { type: 'roster', item: rosterItemView(d.item) } : { type: 'roster', removed: d.contact });
      break;
    case 'subscription':
      s = JSON.stringify({ type: 'subscription', from: d.from, kind: d.type });
      break;
    case 'kick':
      s = JSON.stringify({ type: 'closing', reason: d.reason });
      break;
    case 'notification':
      s = JSON.stringify({ type: 'notification', id: d.id, ...(d.title !== undefined ? { title: d.title } : {}), body: d.body, ...(d.data !== undefined ? { data: d.data } : {}) });
      break;
  }
  lastDelivery = d;
  lastFrame = textFrame(s);
  return lastFrame;
}

/**
 * One client connection of the native protocol. Before `auth` only `auth` and `ping` are accepted;
 * after it, the connection is the sink of one engine session.
 */
export class NativeConnection implements SessionSink {
  lastReceived: number;
  readonly openedAt: number;
  /** When the unanswered WebSocket ping was sent; null when none is outstanding (liveness.ts). */
  pingSentAt: number | null = null;
  /** When the session was opened; 0 before (liveness.ts). */
  openedSessionAt = 0;
  /** Time the server spent checking this connection's logins: not the client's against the auth timeout. */
  private authWaitMs = 0;
  private authSince = 0;
  private session: Session | null = null;
  private authFailures = 0;
  private tokens: number;
  private tokensAt: number;
  private strikes = 0;
  /** Deliveries held back while the initial snapshot is being assembled, so none arrive before it. */
  private held: Buffer[] | null = null;
  private readonly outbox: Outbox;
  private ended = false;
  private closeAfterReply: { code: number; reason: string } | null = null;
  private readonly queue: Request[] = [];
  private busy = false;

  constructor(
    private readonly ws: WebSocket,
    socket: Duplex,
    private readonly engine: PresenceEngine,
    private readonly limits: NativeLimits,
    private readonly hooks: NativeHooks,
    now: number,
    /** Request types features registered, looked up for any type that is not built in. */
    private readonly extensions: NativeRequestRegistry | null = null,
    /** The liveness clock (NativeServerOptions.now). */
    private readonly clock: () => number = Date.now,
    private readonly loginTurns: LoginTurns = new LoginTurns(),
  ) {
    this.lastReceived = now;
    this.openedAt = now;
    this.tokens = limits.burst;
    this.tokensAt = now;
    this.outbox = new Outbox(ws, socket);
  }

  get authenticated(): boolean {
    return this.session !== null;
  }

  /**
   * An auth request is being verified. The auth timeout is for clients that dawdle; the time a password
   * check takes on a loaded server is the server's, and a client must not lose its connection (with no
   * answer to its request) for it. The failure limit still bounds how long a connection can try.
   */
  get authenticating(): boolean {
    return this.checkingAuth;
  }

  private checkingAuth = false;

  // ---------------------------------------------------------------- SessionSink

  deliver(d: Delivery): void {
    // The native protocol shows account presence only; a change of one resource alone is not news.
    if (d.kind === 'presence' && d.resourceOnly) return;
    // Stanzas are for the XMPP front door (the engine hands them to it, never to a session's sink).
    if (d.kind === 'stanza') return;
    const frame = encodeDelivery(d);
    if (this.held) this.held.push(frame);
    else this.sendFrame(frame);
  }

  close(reason: string): void {
    if (this.ended) return;
    this.send(JSON.stringify({ type: 'closing', reason }));
    this.end(reason === 'shutdown' ? CLOSE.goingAway : CLOSE.normal, reason, false);
  }

  // ---------------------------------------------------------------- transport events

  /** Anything from the client (a frame, a pong) shows it is there. */
  heard(now: number): void {
    this.lastReceived = now;
    this.pingSentAt = null;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Not authenticated within the auth timeout, the server's time on its logins not counted. */
  authTimedOut(now: number, authTimeoutMs: number): boolean {
    return !this.authenticated && !this.checkingAuth && now - this.openedAt - this.authWaitMs > authTimeoutMs;
  }

  /** Frames of a connection not yet logged in, waiting for their login turn (in order). */
  private framesWaiting: Array<{ data: Buffer | ArrayBuffer | Buffer[]; isBinary: boolean; now: number }> | null = null;

  onMessage(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean, now: number): void {
    this.heard(now);
    if (this.session === null || this.framesWaiting !== null) {
      // Before its session is open a connection's requests (its auth above all) wait for their login
      // turn behind the online sessions' traffic (login-turns.ts).
      if (this.framesWaiting === null) {
        this.framesWaiting = [];
        const since = this.clock();
        this.loginTurns.enqueue(() => {
          // Waiting for the turn was the server's time, not the client's (auth timeout).
          this.authWaitMs += this.clock() - since;
          const frames = this.framesWaiting ?? [];
          this.framesWaiting = null;
          for (const f of frames) if (!this.ended) this.frame(f.data, f.isBinary, f.now);
        });
      }
      this.framesWaiting.push({ data, isBinary, now });
      return;
    }
    this.frame(data, isBinary, now);
  }

  private frame(data: Buffer | ArrayBuffer | Buffer[], isBinary: boolean, now: number): void {
    if (isBinary) {
      this.reject(null, new PresenceError('bad-request', 'binary frames are not accepted; send JSON text'));
      return;
    }
    if (!this.takeToken(now)) {
      this.strikes++;
      this.hooks.onError('rate-limited');
      if (this.strikes >= this.limits.maxStrikes) {
        this.send(errorFrame(null, 'rate-limited', 'too many requests; closing'));
        this.end(CLOSE.policy, 'flooding', true);
        return;
      }
      this.send(errorFrame(idOf(data), 'rate-limited', `more than ${this.limits.rate} requests per second`));
      return;
    }
    this.strikes = 0;
    let req: Request;
    try {
      req = parseRequest(data.toString(), this.extensions === null ? undefined : (t) => this.extensions?.has(t) === true);
    } catch (e) {
      this.reject(e instanceof RequestError ? e.id : null, e);
      return;
    }
    this.queue.push(req);
    if (!this.busy) this.drain();
  }

  /**
   * Requests of one connection run one at a time, in the order sent: a client may pipeline `auth` and
   * its first requests, or a roster change and a presence, and have them applied in that order.
   */
  private drain(): void {
    const req = this.queue.shift();
    if (req === undefined || this.ended) {
      this.busy = false;
      this.queue.length = 0;
      return;
    }
    this.busy = true;
    this.handle(req)
      .then(
        (value) => {
          this.send(result(req.id, value));
          // Deliveries held while an auth assembled its snapshot go out after the snapshot, never
          // before it: sent first, a change newer than the snapshot would be overwritten by it.
          if (req.type === 'auth') this.flushHeld();
        },
        (e: unknown) => this.reject(req.id, e),
      )
      .finally(() => {
        // A request may end the connection (bye, too many failed logins): only after its answer went out.
        const close = this.closeAfterReply;
        if (close) this.end(close.code, close.reason, true);
        this.drain();
      });
  }

  /**
   * The socket closed. `clean` when the client said goodbye (close code 1000 or a `bye` request). The
   * close frame's text (`_reason`) is the client's to choose: the session's end is a goodbye or a loss.
   */
  onClose(clean: boolean, _reason: string): void {
    this.ended = true;
    this.outbox.discard();
    const s = this.session;
    if (s) this.engine.detach(s, this, { grace: !clean, reason: clean ? 'graceful' : 'timeout' });
  }

  // ---------------------------------------------------------------- requests

  private async handle(req: Request): Promise<unknown> {
    const b = req.body;
    if (req.type === 'ping') return { time: new Date().toISOString() };
    if (req.type === 'auth') return this.auth(b);
    const session = this.session;
    if (!session) throw new PresenceError('not-authenticated', 'send "auth" first');
    const jid = session.jid;
    switch (req.type) {
      case 'presence': {
        const p = await this.engine.setPresence(session, presenceInput(b));
        return { show: p.show, status: p.status, priority: p.priority };
      }
      case 'roster.get': {
        const r = await this.engine.roster(jid);
        return { version: r.version, items: r.items.map(rosterItemView) };
      }
      case 'roster.set': {
        const { name, groups } = rosterFields(b);
        return { item: rosterItemView(await this.engine.setRosterItem(jid, str(b, 'jid'), name, groups)) };
      }
      case 'roster.remove':
        return { removed: await this.engine.removeRosterItem(jid, str(b, 'jid')) };
      case 'subscribe':
      case 'approve':
      case 'deny':
      case 'unsubscribe': {
        const contact = str(b, 'jid');
        if (req.type === 'subscribe' && (b.name !== undefined || b.groups !== undefined)) {
          const { name, groups } = rosterFields(b);
          await this.engine.setRosterItem(jid, contact, name, groups);
        }
        const state = await this.engine.subscription(jid, contact, SUBSCRIPTION_TYPES[req.type] as SubType);
        const { subscription, pendingOut, pendingIn, preApproved } = rosterItemView({ owner: jid, contact, name: null, groups: [], state });
        return { jid: parseAccountJid(contact), subscription, pendingOut, pendingIn, preApproved };
      }
      case 'block':
        return { changed: await this.engine.block(jid, str(b, 'jid')) };
      case 'unblock':
        return { changed: await this.engine.unblock(jid, str(b, 'jid')) };
      case 'blocks.get':
        return { jids: await this.engine.blocks(jid) };
      case 'presence.get': {
        const all = await this.engine.contactsPresence(jid);
        const wanted = b.jids;
        if (wanted === undefined) return { contacts: all.map(presenceView) };
        if (!Array.isArray(wanted) || !wanted.every((x) => typeof x === 'string')) {
          throw new PresenceError('bad-request', '"jids" must be an array of strings');
        }
        const set = new Set(wanted);
        return { contacts: all.filter((p) => set.has(p.jid)).map(presenceView) };
      }
      case 'bye':
        this.closeAfterReply = { code: CLOSE.normal, reason: 'bye' };
        return {};
    }
    const feature = this.extensions?.get(req.type);
    if (feature !== undefined) return feature({ jid, resource: session.resource, body: b });
    throw new PresenceError('unknown-type', `unknown request type "${req.type}"`);
  }

  private async auth(b: Record<string, unknown>): Promise<unknown> {
    if (this.session) throw new PresenceError('already-authenticated', 'this connection is already authenticated');
    this.checkingAuth = true;
    this.authSince = this.clock();
    try {
      return await this.verifyAndOpen(b);
    } finally {
      this.checkingAuth = false;
      this.authWaitMs += this.clock() - this.authSince;
    }
  }

  private async verifyAndOpen(b: Record<string, unknown>): Promise<unknown> {
    try {
      let jid: string;
      // Failed logins are throttled per account and address (engine/login-throttle.ts): a refusal is
      // error code rate-limited, with the wait in its message.
      const address = (this.ws as unknown as { _socket?: { remoteAddress?: string } })._socket?.remoteAddress ?? null;
      try {
        jid = await this.engine.loginThrottle.attempt('native', b.token === undefined ? b.jid : null, address, async () => {
          // A password check waits its turn in the password pool: dropped then if the connection went
          // (nothing checked, nothing counted) or if the throttle now refuses it.
          const admit = (): void => {
            if (this.ended) throw new PresenceError('not-allowed', 'connection closed');
            this.engine.loginThrottle.check('native', b.jid, address);
          };
          const who = b.token !== undefined ? await this.engine.authenticateToken(b.token) : await this.engine.authenticatePassword(b.jid, b.password, { admit });
          if (b.token !== undefined && b.jid !== undefined && this.engine.localJid(b.jid) !== who) {
            throw new PresenceError('auth-failed', 'token does not belong to this jid');
          }
          return who;
        });
      } catch (e) {
        if (isPresenceError(e) && (e.code === 'auth-failed' || e instanceof LoginThrottled)) {
          this.authFailures++;
          if (this.authFailures >= this.limits.maxAuthFailures) {
            this.closeAfterReply = { code: CLOSE.policy, reason: 'too many failed logins' };
          }
        }
        throw e;
      }
      const resource = str(b, 'resource', { optional: true, max: 1023 }) ?? null;
      const initial = b.presence === false ? null : presenceInput(typeof b.presence === 'object' && b.presence !== null ? (b.presence as Record<string, unknown>) : {});
      if (this.ended) throw new PresenceError('not-allowed', 'connection closed');
      this.held = [];
      const session = await this.engine.openSession(jid, resource, 'native', this, initial);
      this.session = session;
      this.openedSessionAt = this.clock();
      if (this.ended) {
        this.engine.detach(session, this, { grace: true, reason: 'timeout' });
        throw new PresenceError('not-allowed', 'connection closed');
      }
      const contacts = await this.engine.contactsPresence(jid);
      const p = session.presence;
      return {
        jid,
        resource: session.resource,
        presence: p.available ? { show: p.show, status: p.status, priority: p.priority } : null,
        contacts: contacts.map(presenceView),
      };
    } catch (e) {
      this.held = null;
      throw e;
    }
  }

  private flushHeld(): void {
    const held = this.held;
    this.held = null;
    if (held) for (const f of held) this.sendFrame(f);
  }

  // ---------------------------------------------------------------- helpers

  private takeToken(now: number): boolean {
    const { rate, burst } = this.limits;
    this.tokens = Math.min(burst, this.tokens + ((now - this.tokensAt) / 1000) * rate);
    this.tokensAt = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  private reject(id: string | number | null, e: unknown): void {
    const err = isPresenceError(e) ? e : new PresenceError('internal', 'internal error');
    this.hooks.onError(err.code);
    if (!isPresenceError(e)) this.onInternalError(e);
    this.send(errorFrame(id, err.code, err.message));
  }

  onInternalError: (e: unknown) => void = () => {};

  private send(text: string): void {
    this.sendFrame(textFrame(text));
  }

  private sendFrame(frame: Buffer): void {
    if (this.ws.readyState === 1) this.outbox.push(frame);
  }

  /** Closes the socket; `clean` ends the session at once instead of after the grace period. */
  private end(code: number, reason: string, clean: boolean): void {
    if (!this.ended) {
      this.ended = true;
      const s = this.session;
      if (s) this.engine.detach(s, this, { grace: !clean, reason: leaveReasonOf(reason, clean) });
    }
    this.outbox.flush();
    if (this.ws.readyState === 0 || this.ws.readyState === 1) this.ws.close(code, reason.slice(0, 120));
  }

  /** No traffic for longer than the idle timeout: the peer is gone without saying so. */
  terminate(): void {
    if (!this.ended) {
      this.ended = true;
      const s = this.session;
      if (s) this.engine.detach(s, this, { grace: true, reason: 'timeout' });
    }
    this.outbox.discard();
    this.ws.terminate();
  }

  /** Sends a WebSocket ping; one at a time, until anything is heard (liveness.ts). */
  ping(now: number): void {
    if (this.pingSentAt !== null) return;
    // A socket no longer open cannot be pinged, but is timed as if it had been: it is ended in due course.
    this.pingSentAt = now;
    if (this.ws.readyState === 1) this.ws.ping();
  }
}

/**
 * The session end reason for a connection the server closes itself: after `bye` a goodbye, after a
 * policy close (flooding) a kick, and without a clean close a lost connection.
 */
function leaveReasonOf(closeReason: string, clean: boolean): LeaveReason {
  if (!clean) return 'timeout';
  return closeReason === 'bye' ? 'graceful' : 'kicked';
}

/** Best effort: echo the id of a rate-limited request so the client can match the error. */
function idOf(data: Buffer | ArrayBuffer | Buffer[]): string | number | null {
  const text = Buffer.isBuffer(data) ? data.toString('utf8', 0, Math.min(data.length, 256)) : '';
  const m = /"id"\s*:\s*("(?:[^"\\]{1,64})"|-?\d{1,15})/.exec(text);
  if (!m || m[1] === undefined) return null;
  return m[1].startsWith('"') ? m[1].slice(1, -1) : Number(m[1]);
}
