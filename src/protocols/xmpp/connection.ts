import { createHmac } from 'node:crypto';
import { isPresenceError } from '../../core/errors.js';
import { parseJid } from '../../core/jid.js';
import type { Session, SessionSink } from '../../engine/engine.js';
import type { Delivery } from '../../ports/bus.js';
import type { XmppContext } from './context.js';
import { StanzaError, StreamError, stanzaErrorReply, streamErrorXml, type StreamCondition } from './errors.js';
import { handleIq } from './iq-handlers.js';
import { NS } from './namespaces.js';
import { parseFrame, StreamParser } from './parser.js';
import { handlePresence, initialPresence, presenceDelivery, sendDirectedUnavailable } from './presence.js';
import { rosterPush, subscriptionPresence } from './roster.js';
import { handleRegistration } from './registration.js';
import { emitHook, routeMessage, settleOfflineAcks } from './routing.js';
import { hostOf, LoginThrottled } from '../../engine/login-throttle.js';
import { createMechanism, MECHANISMS, SaslFailure, type MechanismName, type SaslBackend, type SaslMechanism } from './sasl.js';
import { announceDirected, type SmState } from './stream-management.js';
import { ClientState } from './csi.js';
import type { TransportEvents, XmppTransport } from './transport.js';
import { el, escapeAttr, XmlElement } from './xml.js';
import { randomHex } from './random-ids.js';

interface OutItem {
  readonly text: string | Promise<string | null>;
  readonly onWritten?: () => void;
  readonly onCounted?: (seq: number) => void;
}

/** Bytes of input fed to the XML parser per turn of the event loop; the rest waits (socket paused). */
const INPUT_SLICE = 64 * 1024;
/**
 * Bytes of a stream still logging in read ahead of its login turn before its socket is paused. A login
 * step is a few hundred bytes and the client waits for the answer, so such a socket is not paused and
 * resumed at every step; one that floods before authenticating holds at most this beyond one read.
 */
const LOGIN_READ_AHEAD = 4 * 1024;
/** Stanzas parsed but not yet handled beyond which the stream stops reading until half are handled. */
const MAX_QUEUED_STANZAS = 256;
/** Handling stanzas this long (ms) in one turn yields to the event loop, so other streams keep their latency. */
const TURN_BUDGET_MS = 5;

type Stage = 'header' | 'tls-or-auth' | 'bind' | 'bound' | 'closed';

/**
 * One client stream (RFC 6120) over any transport: stream negotiation (STARTTLS, SASL, resource
 * binding), then the session's stanzas. It is the engine's SessionSink for its bound session.
 */
export class XmppConnection implements SessionSink, TransportEvents {
  lastReceived: number;
  readonly openedAt: number;
  private stage: Stage = 'header';
  private parser: StreamParser | null;
  private headerSent = false;
  private domain = '';
  private authJid: string | null = null;
  private authFailures = 0;
  private mechanism: SaslMechanism | null = null;
  session: Session | null = null;
  /** The client sent initial presence: it receives presence and messages sent to its bare JID. */
  available = false;
  /** JIDs this resource sent directed presence to; they hear when it leaves (RFC 6121 §4.6). */
  readonly directed = new Set<string>();
  private ended = false;
  /** Stanzas run one at a time, in order; pending engine work must not reorder a client's requests. */
  private queue: XmlElement[] = [];
  private busy = false;
  /** Outgoing text waiting for an earlier asynchronous piece (a roster push needing its version). */
  private outQueue: OutItem[] = [];
  private readonly unconfirmed = new Set<(ok: boolean) => void>();
  /** When the unanswered XEP-0199 ping was sent; null when none is outstanding (liveness.ts). */
  pingSentAt: number | null = null;
  /** When this stream's session was bound or resumed; 0 before (liveness.ts). */
  openedSessionAt = 0;
  /**
   * Time spent by the server on this stream's negotiation stanzas (a password check queued in a login
   * storm): the client is not charged for it against the negotiation timeout.
   */
  private serverWaitMs = 0;
  private serverBusySince: number | null = null;
  /** Since when this stream's input waits for its login turn (the server's time too). */
  private turnWaitSince: number | null = null;
  /** XEP-0198 state once the client enabled stream management. */
  sm: SmState | null = null;
  private ackRequested = false;
  /** XEP-0352: what the client said about itself; while inactive, presence to it is held back. */
  readonly csi = new ClientState();

  constructor(
    readonly transport: XmppTransport,
    readonly ctx: XmppContext,
    now: number,
  ) {
    this.lastReceived = now;
    this.openedAt = now;
    this.parser = transport.framing === 'tcp' ? this.newParser() : null;
  }

  get bound(): boolean {
    return this.stage === 'bound';
  }

  get jid(): string {
    return this.session?.jid ?? this.authJid ?? '';
  }

  get fullJid(): string {
    return this.session?.fullJid ?? '';
  }

  private toAttrSession: Session | null = null;
  private toAttrValue = '';

  /** The bound full JID escaped for an attribute value, computed once per session. */
  get toAttr(): string {
    if (this.session !== this.toAttrSession) {
      this.toAttrSession = this.session;
      this.toAttrValue = escapeAttr(this.fullJid);
    }
    return this.toAttrValue;
  }

  /** Between stanzas, a quiet TCP stream lets its parser's memory go (see StreamParser). */
  restParser(): void {
    this.parser?.rest();
  }

  get parserResting(): boolean {
    return this.parser?.resting ?? false;
  }

  get partialSince(): number | null {
    return this.parser?.partialSince ?? null;
  }

  private newParser(): StreamParser {
    return new StreamParser(this.ctx.opts.limits, {
      streamStart: (root) => this.onStreamStart(root),
      stanza: (s) => this.enqueue(s),
      streamEnd: () => this.onStreamEnd(),
    });
  }

  // ---------------------------------------------------------------- transport events

  onData(chunk: Buffer): void {
    if (this.ended) return;
    this.lastReceived = this.ctx.now();
    this.pingSentAt = null;
    if (!this.parser) return;
    this.inputBacklog.push(chunk);
    this.inputBytes += chunk.length;
    // Input waiting to be parsed: past a slice of it (a client that sends without waiting for answers)
    // the socket is no longer read; for a stream logging in, past LOGIN_READ_AHEAD.
    if (this.inputBytes > (this.loggingIn ? LOGIN_READ_AHEAD : INPUT_SLICE)) this.transport.holdInput('input', true);
    if (this.inputBacklog.length !== 1) return;
    if (!this.loggingIn) {
      this.feedInput();
    } else if (!this.inputScheduled) {
      // Login work waits for its turn behind the online sessions' traffic (login-turns.ts).
      this.inputScheduled = true;
      this.turnWaitSince = this.lastReceived;
      this.ctx.loginTurns.enqueue(() => {
        this.turnTaken();
        this.feedInput();
      });
    }
  }

  /**
   * Still logging in: negotiation (stream headers, SASL, bind) and, once bound, what a client does
   * before its initial presence (session, roster, disco). Its input waits for login turns, as does that
   * of a client that made itself unavailable again: the sessions online come first.
   */
  private get loggingIn(): boolean {
    return this.stage !== 'bound' || !this.available;
  }

  /** RFC 7395 frames of a stream still logging in, waiting for their login turn (in order). */
  private framesWaiting: string[] | null = null;

  /**
   * Input waiting to be parsed. A pipelining client's bytes are parsed at most INPUT_SLICE per turn,
   * and not at all while too many parsed stanzas wait to be handled; meanwhile the socket is paused,
   * so the backlog stays small and the kernel pushes back on the client.
   */
  private inputBacklog: Buffer[] = [];
  private inputBytes = 0;
  private inputScheduled = false;

  private feedInput(): void {
    this.inputScheduled = false;
    if (this.ended) {
      this.inputBacklog = [];
      this.inputBytes = 0;
      return;
    }
    let budget = INPUT_SLICE;
    while (this.inputBacklog.length > 0 && budget > 0 && this.queue.length < MAX_QUEUED_STANZAS && !this.ended) {
      const parser = this.parser;
      if (!parser) {
        // A stream restart on a transport without a parser: nothing to feed.
        this.inputBacklog = [];
        this.inputBytes = 0;
        break;
      }
      let chunk = this.inputBacklog[0] as Buffer;
      if (chunk.length > budget) {
        this.inputBacklog[0] = chunk.subarray(budget);
        chunk = chunk.subarray(0, budget);
      } else {
        this.inputBacklog.shift();
      }
      budget -= chunk.length;
      this.inputBytes -= chunk.length;
      try {
        parser.write(chunk, this.lastReceived);
      } catch (e) {
        this.fail(e);
        return;
      }
    }
    if (this.ended) return;
    const backlog = this.inputBacklog.length > 0;
    this.transport.holdInput('input', backlog || this.queue.length >= MAX_QUEUED_STANZAS);
    // A full queue resumes feeding from drain(); a slice used up resumes on the next turn.
    if (backlog && this.queue.length < MAX_QUEUED_STANZAS && !this.inputScheduled) {
      this.inputScheduled = true;
      setImmediate(() => this.feedInput());
    }
  }

  onFrame(text: string): void {
    if (this.ended) return;
    if (this.loggingIn || this.framesWaiting !== null) {
      if (this.framesWaiting === null) {
        this.framesWaiting = [];
        this.turnWaitSince = this.ctx.now();
        this.ctx.loginTurns.enqueue(() => {
          this.turnTaken();
          const frames = this.framesWaiting ?? [];
          this.framesWaiting = null;
          for (const f of frames) this.frame(f);
        });
      }
      this.framesWaiting.push(text);
      return;
    }
    this.frame(text);
  }

  /** The login turn came: the wait for it was the server's time, not the client's. */
  private turnTaken(): void {
    if (this.turnWaitSince === null) return;
    this.serverWaitMs += this.ctx.now() - this.turnWaitSince;
    this.turnWaitSince = null;
  }

  private frame(text: string): void {
    if (this.ended) return;
    // RFC 7395 frames arrive one element each; a full stanza queue pauses the socket under them.
    if (this.queue.length >= MAX_QUEUED_STANZAS) this.transport.holdInput('input', true);
    this.lastReceived = this.ctx.now();
    this.pingSentAt = null;
    try {
      const e = parseFrame(text, this.ctx.opts.limits);
      if (e.ns === NS.framing && e.name === 'open') this.onStreamStart(e);
      else if (e.ns === NS.framing && e.name === 'close') this.onStreamEnd();
      else if (this.stage === 'header') throw new StreamError('not-well-formed', 'expected <open/>');
      else this.enqueue(e.ns === '' ? new XmlElement(e.name, NS.client, e.attrs, e.children) : e);
    } catch (err) {
      this.fail(err);
    }
  }

  onTransportClosed(): void {
    if (this.ended) return;
    this.ended = true;
    this.stage = 'closed';
    this.leave(true, 'timeout');
  }

  // ---------------------------------------------------------------- stream negotiation

  private onStreamStart(root: XmlElement): void {
    const ws = this.transport.framing === 'websocket';
    if (!ws && (root.name !== 'stream' || root.ns !== NS.stream)) throw new StreamError('invalid-namespace', 'expected <stream:stream>');
    const to = root.attr('to') ?? '';
    this.domain = to.toLowerCase();
    this.sendHeader();
    if (!ws) {
      // The stream's content namespace is the default namespace of the header (RFC 6120 §4.8.2).
      const contentNs = (root as XmlElement & { attrs: Record<string, string> }).attrs['xmlns'];
      if (contentNs !== undefined && contentNs !== NS.client) throw new StreamError('invalid-namespace', 'content namespace must be jabber:client');
    }
    if (!this.ctx.engine.isLocalDomain(this.domain)) throw new StreamError('host-unknown', `this server does not serve ${to.slice(0, 100)}`);
    const version = root.attr('version');
    if (version === undefined || !/^1\.\d+$/.test(version)) throw new StreamError('unsupported-version', 'XMPP 1.0 streams only');
    if (this.stage === 'header') this.stage = this.authJid ? 'bind' : 'tls-or-auth';
    this.sendFeatures();
  }

  private sendHeader(): void {
    const id = randomHex(8);
    // Only a domain we serve is claimed; for host-unknown the header names no one.
    const from = this.ctx.engine.isLocalDomain(this.domain) ? ` from='${escapeAttr(this.domain)}'` : '';
    if (this.transport.framing === 'websocket') {
      this.transport.send(`<open xmlns='${NS.framing}' id='${id}'${from} version='1.0' xml:lang='en'/>`);
    } else {
      this.transport.send(
        `<?xml version='1.0'?><stream:stream xmlns='${NS.client}' xmlns:stream='${NS.stream}' id='${id}'${from} version='1.0' xml:lang='en'>`,
      );
    }
    this.headerSent = true;
  }

  private plainAllowed(): boolean {
    return this.transport.secure || !this.ctx.opts.requireTls;
  }

  private sendFeatures(): void {
    let f = '';
    if (this.authJid === null) {
      const tlsNeeded = this.ctx.opts.requireTls && !this.transport.secure;
      if (this.transport.canStartTls) f += `<starttls xmlns='${NS.tls}'>${tlsNeeded ? '<required/>' : ''}</starttls>`;
      if (!tlsNeeded || !this.transport.canStartTls) {
        const mechs = MECHANISMS.filter((m) => m !== 'PLAIN' || this.plainAllowed());
        f += `<mechanisms xmlns='${NS.sasl}'>${mechs.map((m) => `<mechanism>${m}</mechanism>`).join('')}</mechanisms>`;
        if (this.ctx.opts.registration === 'open') f += `<register xmlns='${NS.registerFeature}'/>`;
      }
    } else {
      f += `<bind xmlns='${NS.bind}'/><session xmlns='${NS.session}'><optional/></session><sm xmlns='${NS.sm}'/><csi xmlns='${NS.csi}'/>`;
      f += `<ver xmlns='${NS.rosterVer}'/><sub xmlns='${NS.preApproval}'/>`;
    }
    this.transport.send(`<stream:features xmlns:stream='${NS.stream}'>${f}</stream:features>`);
  }

  private restartStream(): void {
    this.stage = 'header';
    if (this.transport.framing === 'tcp') this.parser = this.newParser();
  }

  private onStreamEnd(): void {
    if (this.ended) return;
    this.closeStream(null, false);
  }

  // ---------------------------------------------------------------- stanzas

  private enqueue(stanza: XmlElement): void {
    if (this.ended) return;
    this.queue.push(stanza);
    if (!this.busy) void this.drain();
  }

  private async drain(): Promise<void> {
    this.busy = true;
    if (this.stage !== 'bound') this.serverBusySince = this.ctx.now();
    let turnStart = performance.now();
    while (!this.ended) {
      if (performance.now() - turnStart > TURN_BUDGET_MS) {
        // Stanzas handled without real I/O chain as microtasks and would hold the loop for the whole burst.
        await new Promise<void>((resolve) => setImmediate(resolve));
        turnStart = performance.now();
        if (this.ended) break;
      }
      if (this.queue.length <= MAX_QUEUED_STANZAS / 2) this.resumeInput();
      const s = this.queue.shift();
      if (s === undefined) break;
      try {
        await this.handle(s);
      } catch (e) {
        if (e instanceof StreamError) {
          this.fail(e);
          break;
        }
        if (e instanceof StanzaError) {
          if (s.attr('type') !== 'error' && s.attr('type') !== 'result') this.sendStanza(stanzaErrorReply(s, e.condition, e.text, e.app));
          continue;
        }
        if (isPresenceError(e)) {
          const cond =
            e.code === 'bad-jid' ? 'jid-malformed'
            : e.code === 'not-allowed' ? 'not-allowed'
            : e.code === 'not-found' ? 'item-not-found'
            // internal-server-error is of type "wait": the client may retry (the database is back soon).
            : e.code === 'unavailable' ? 'internal-server-error'
            : 'bad-request';
          if (s.attr('type') !== 'error' && s.attr('type') !== 'result') this.sendStanza(stanzaErrorReply(s, cond, e.message));
          continue;
        }
        this.ctx.log.error({ err: e }, 'xmpp stanza failed');
        if (s.attr('type') !== 'error' && s.attr('type') !== 'result') this.sendStanza(stanzaErrorReply(s, 'internal-server-error'));
      }
    }
    this.queue.length = this.ended ? 0 : this.queue.length;
    this.busy = false;
    if (this.serverBusySince !== null) {
      this.serverWaitMs += this.ctx.now() - this.serverBusySince;
      this.serverBusySince = null;
    }
    this.resumeInput();
  }

  /** The stanza queue has room again: parse what waits, or let the socket be read. */
  private resumeInput(): void {
    if (this.ended || this.queue.length >= MAX_QUEUED_STANZAS) return;
    if (this.inputBacklog.length > 0) {
      if (!this.inputScheduled) {
        this.inputScheduled = true;
        setImmediate(() => this.feedInput());
      }
      return;
    }
    this.transport.holdInput('input', false);
  }

  private async handle(s: XmlElement): Promise<void> {
    if (this.stage === 'tls-or-auth') return this.negotiate(s);
    if (s.ns === NS.sm) {
      await this.streamManagement(s);
      // Offline messages the client has now acknowledged leave storage (routing.ts).
      if (s.name === 'a' || s.name === 'resume') await settleOfflineAcks(this);
      return;
    }
    if (this.stage === 'bind') {
      if (s.name === 'iq' && s.ns === NS.client && s.child('bind', NS.bind)) return this.bind(s);
      if (s.name === 'iq' && s.ns === NS.client && s.attr('type') === 'get' && s.child('query', NS.discoInfo)) return handleIq(this, s);
      throw new StreamError('not-authorized', 'bind a resource first');
    }
    if (this.stage !== 'bound') return;
    if (s.ns === NS.csi) {
      // XEP-0352 nonzas: not stanzas, so not counted by stream management, and never answered.
      if (s.name === 'inactive') this.csi.inactive = true;
      else if (s.name === 'active') {
        this.csi.inactive = false;
        this.flushHeld();
      } else throw new StreamError('unsupported-stanza-type', `unknown client state element ${s.name.slice(0, 50)}`);
      return;
    }
    if (s.ns !== NS.client) throw new StreamError('unsupported-stanza-type', `unknown element ${s.name} in ${s.ns.slice(0, 100)}`);
    if (this.sm) this.sm.inbound = (this.sm.inbound + 1) % 2 ** 32;
    switch (s.name) {
      case 'iq':
        return handleIq(this, s);
      case 'presence':
        return handlePresence(this, s);
      case 'message':
        return routeMessage(this, s);
    }
    throw new StreamError('unsupported-stanza-type', `unknown stanza <${s.name.slice(0, 50)}>`);
  }

  private async negotiate(s: XmlElement): Promise<void> {
    if (s.ns === NS.tls && s.name === 'starttls') {
      if (!this.transport.canStartTls) {
        this.transport.send(`<failure xmlns='${NS.tls}'/>`);
        this.closeStream(null, false);
        return;
      }
      this.transport.send(`<proceed xmlns='${NS.tls}'/>`);
      this.transport.startTls();
      this.restartStream();
      return;
    }
    if (s.ns === NS.sasl) return this.sasl(s);
    if (s.ns === NS.client && s.name === 'iq' && s.child('query', NS.register)) {
      return handleRegistration(this, s);
    }
    throw new StreamError('not-authorized', 'authenticate first');
  }

  /**
   * What the mechanisms may look up, each lookup first passing `gate` (the login throttle). A password
   * check waits for its turn in the password pool; when the turn comes it is dropped if this stream has
   * ended meanwhile (aborted: nothing was checked, nothing is counted) or if the throttle now refuses it.
   */
  private saslBackend(gate: (jid: string) => void): SaslBackend {
    const engine = this.ctx.engine;
    const admit = (jid: string) => (): void => {
      if (this.ended) throw new SaslFailure('aborted', 'stream closed');
      gate(jid);
    };
    return {
      domain: this.domain,
      checkPassword: async (jid, password) => (gate(jid), engine.authenticatePassword(jid, password, { admit: admit(jid) })),
      scramKeys: async (jid, algo) => (gate(jid), engine.scramKeys(jid, algo)),
      fakeSalt: (jid) => createHmac('sha256', this.ctx.saltSecret).update(jid).digest().subarray(0, 16).toString('base64'),
    };
  }

  /** The SASL exchange in progress as the login throttle sees it: whose password, and whether it was refused. */
  private saslAttempt: { account: string | null; refusedMs: number } | null = null;

  private async sasl(s: XmlElement): Promise<void> {
    const throttle = this.ctx.engine.loginThrottle;
    const address = hostOf(this.transport.remote);
    const refuse = (ms: number): SaslFailure => new SaslFailure('temporary-auth-failure', new LoginThrottled(ms).message);
    try {
      if (this.ctx.opts.requireTls && !this.transport.secure && this.transport.canStartTls) {
        throw new SaslFailure('encryption-required', 'STARTTLS first');
      }
      let data: Buffer;
      if (s.name === 'auth') {
        const name = s.attr('mechanism') ?? '';
        if (!(MECHANISMS as readonly string[]).includes(name)) throw new SaslFailure('invalid-mechanism');
        if (name === 'PLAIN' && !this.plainAllowed()) throw new SaslFailure('encryption-required', 'PLAIN needs TLS');
        // An address that failed too often waits before trying again; an account's wait is checked once
        // the mechanism names it (login-throttle.ts says who it binds).
        const addressWait = throttle.wait('xmpp', null, address);
        if (addressWait > 0) throw refuse(addressWait);
        const attempt = { account: null as string | null, refusedMs: 0 };
        this.saslAttempt = attempt;
        const gate = (jid: string): void => {
          attempt.account = jid;
          const ms = throttle.wait('xmpp', jid, address);
          if (ms > 0) {
            attempt.refusedMs = ms;
            throw refuse(ms);
          }
        };
        this.mechanism = createMechanism(name as MechanismName, this.saslBackend(gate));
        const text = s.text().trim();
        if (text === '') {
          // No initial response: ask for it with an empty challenge.
          this.transport.send(`<challenge xmlns='${NS.sasl}'/>`);
          return;
        }
        data = decode(text);
      } else if (s.name === 'response') {
        if (!this.mechanism) throw new SaslFailure('malformed-request', 'no exchange in progress');
        data = decode(s.text().trim());
      } else if (s.name === 'abort') {
        this.mechanism = null;
        throw new SaslFailure('aborted');
      } else {
        throw new SaslFailure('malformed-request', `unexpected <${s.name.slice(0, 50)}>`);
      }
      const step = await (this.mechanism as SaslMechanism).step(data);
      if (this.ended) return;
      if (!step.done) {
        this.transport.send(`<challenge xmlns='${NS.sasl}'>${Buffer.from(step.challenge).toString('base64')}</challenge>`);
        return;
      }
      this.mechanism = null;
      this.authJid = this.ctx.engine.localJid(step.jid);
      throttle.succeeded(this.saslAttempt?.account ?? step.jid, address);
      this.saslAttempt = null;
      const extra = step.additional === null ? '' : Buffer.from(step.additional).toString('base64');
      this.transport.send(`<success xmlns='${NS.sasl}'>${extra}</success>`);
      this.restartStream();
    } catch (e) {
      if (!(e instanceof SaslFailure)) throw e;
      this.mechanism = null;
      const attempt = this.saslAttempt;
      this.saslAttempt = null;
      // PLAIN turns any error of the password check into not-authorized; a refusal says what it is.
      const failure = attempt !== null && attempt.refusedMs > 0 ? refuse(attempt.refusedMs) : e;
      if (failure.condition === 'not-authorized') throttle.failed(attempt?.account ?? null, address);
      const text = failure.message !== failure.condition ? `<text>${escapeText(failure.message)}</text>` : '';
      this.transport.send(`<failure xmlns='${NS.sasl}'><${failure.condition}/>${text}</failure>`);
      if (failure.condition === 'not-authorized' || failure.condition === 'temporary-auth-failure') {
        this.authFailures++;
        if (this.authFailures >= this.ctx.opts.maxAuthFailures) throw new StreamError('policy-violation', 'too many failed authentication attempts');
      }
    }
  }

  private async bind(s: XmlElement): Promise<void> {
    if (s.attr('type') !== 'set') throw new StanzaError('bad-request', 'bind is a set');
    const jid = this.authJid as string;
    let resource: string | null = s.child('bind', NS.bind)?.childText('resource')?.trim() || null;
    if (resource !== null) {
      try {
        resource = parseJid(`${jid}/${resource}`).resource;
      } catch {
        throw new StanzaError('bad-request', 'invalid resource');
      }
      if (this.ctx.opts.resourceConflict === 'new_resource') {
        const engine = this.ctx.engine;
        // Connected here, or registered on another node (where a lost connection still waiting out its
        // grace period looks the same as a live one).
        const taken =
          engine.localSessionsOf(jid).some((x) => x.resource === resource && x.sink !== null) ||
          (await engine.sessionsOf(jid)).some((x) => x.resource === resource && x.node !== engine.bus.node);
        if (taken) resource = null;
      }
    }
    // A fresh bind of a resource whose stream could have been resumed: that stream is over.
    if (resource !== null) await this.ctx.sm.end(`${jid}/${resource}`);
    const session = await this.ctx.engine.openSession(jid, resource, 'xmpp', this, null);
    if (this.ended) {
      this.ctx.engine.detach(session, this, { grace: false, reason: 'timeout' });
      return;
    }
    this.session = session;
    this.stage = 'bound';
    this.openedSessionAt = this.ctx.now();
    this.sendStanza(
      el('iq', NS.client, { type: 'result', id: s.attr('id') }, el('bind', NS.bind, {}, el('jid', NS.bind, {}, session.fullJid))),
    );
  }

  // ---------------------------------------------------------------- output

  /** Writes a stanza in order after anything queued before it. */
  sendStanza(stanza: XmlElement | string, onWritten?: () => void, onCounted?: (seq: number) => void): void {
    if (this.ended) return;
    const text = typeof stanza === 'string' ? stanza : stanza.toString();
    if (this.csi.inactive) {
      // XEP-0352: an inactive client gets presence later, only the newest per contact; anything
      // else that matters (a message) brings what was held first, so it sees a consistent picture.
      if (onWritten === undefined && onCounted === undefined && this.csi.hold(text, this.fullJid)) return;
      if (text.startsWith('<message')) this.flushHeld();
    }
    this.sendNow(text, onWritten, onCounted);
  }

  private sendNow(text: string, onWritten?: () => void, onCounted?: (seq: number) => void): void {
    if (this.outQueue.length === 0) this.write(text, onWritten, onCounted);
    else this.outQueue.push({ text, ...(onWritten ? { onWritten } : {}), ...(onCounted ? { onCounted } : {}) });
  }

  /**
   * Resolves true once the stanza was handed to the socket, false if the connection ended first.
   * `onCounted` gets the stanza's XEP-0198 sequence number when stream management counts it.
   */
  sendConfirmed(stanza: XmlElement | string, onCounted?: (seq: number) => void): Promise<boolean> {
    return new Promise((resolve) => {
      if (this.ended) return resolve(false);
      const done = (ok: boolean) => {
        this.unconfirmed.delete(done);
        resolve(ok);
      };
      this.unconfirmed.add(done);
      this.sendStanza(stanza, () => done(true), onCounted);
    });
  }

  /** Writes the presence held for an inactive client (XEP-0352), oldest first. */
  private flushHeld(): void {
    for (const text of this.csi.take()) this.sendNow(text);
  }

  /** Queues text computed asynchronously; later stanzas wait for it so the client sees them in order. */
  sendLater(p: Promise<string | null>): void {
    if (this.ended) return;
    this.outQueue.push({ text: p });
    if (this.outQueue.length === 1) void this.pumpOut();
  }

  private async pumpOut(): Promise<void> {
    while (this.outQueue.length > 0) {
      const head = this.outQueue[0] as OutItem;
      let text: string | null;
      try {
        text = await head.text;
      } catch (e) {
        this.ctx.log.error({ err: e }, 'xmpp output failed');
        text = null;
      }
      this.outQueue.shift();
      if (text !== null && !this.ended) this.write(text, head.onWritten, head.onCounted);
    }
  }

  /** Every stanza leaves through here, so stream management counts exactly what the client was sent. */
  private write(text: string, onWritten?: () => void, onCounted?: (seq: number) => void): void {
    this.transport.send(text, onWritten);
    const sm = this.sm;
    if (!sm) return;
    sm.sent(text);
    onCounted?.(sm.outbound);
    if (!this.ackRequested) {
      this.ackRequested = true;
      // One request per burst, after the burst.
      setImmediate(() => {
        if (!this.ended && this.sm === sm) this.transport.send(`<r xmlns='${NS.sm}'/>`);
      });
    }
  }

  /** The transport gave up on a client that does not read its output (see OutputLimits). */
  onOutputStalled(): void {
    if (this.ended) return;
    this.ctx.log.warn({ remote: this.transport.remote, jid: this.fullJid || this.jid }, 'xmpp client does not read its output: stream ended');
    // The error cannot reach a client that does not read; it is sent for one that merely reads slowly.
    this.closeStream(new StreamError('policy-violation', 'output not read'), true);
    this.transport.destroy();
  }

  // ---------------------------------------------------------------- XEP-0198 stream management

  private async streamManagement(s: XmlElement): Promise<void> {
    const sm = this.sm;
    switch (s.name) {
      case 'enable': {
        if (this.stage !== 'bound' || !this.session || sm) {
          this.transport.send(`<failed xmlns='${NS.sm}'><unexpected-request xmlns='${NS.stanzas}'/></failed>`);
          return;
        }
        const resume = s.attr('resume') === 'true' || s.attr('resume') === '1';
        const state = this.ctx.sm.enable(this, this.session.jid, this.session.resource, resume);
        state.onOverflow = () => {
          if (this.sm === state && state.conn === this) this.closeStream(new StreamError('resource-constraint', 'too many unacknowledged stanzas'), true);
        };
        this.sm = state;
        const max = Math.floor(this.ctx.sm.resumeTimeoutMs / 1000);
        this.transport.send(state.resumable ? `<enabled xmlns='${NS.sm}' id='${state.id}' resume='true' max='${max}'/>` : `<enabled xmlns='${NS.sm}'/>`);
        return;
      }
      case 'r':
        if (sm) this.transport.send(`<a xmlns='${NS.sm}' h='${sm.inbound}'/>`);
        return;
      case 'a': {
        if (!sm) return;
        const h = Number(s.attr('h'));
        if (!Number.isInteger(h) || h < 0) throw new StreamError('bad-format', 'bad h');
        sm.ack(h);
        this.ackRequested = false;
        if (sm.unacked.length > 0) {
          this.ackRequested = true;
          this.transport.send(`<r xmlns='${NS.sm}'/>`);
        }
        return;
      }
      case 'resume':
        return this.resume(s);
    }
    throw new StreamError('unsupported-stanza-type', `unknown stream management element ${s.name.slice(0, 50)}`);
  }

  private async resume(s: XmlElement): Promise<void> {
    const jid = this.authJid;
    const state = jid && this.stage === 'bind' ? this.ctx.sm.find(s.attr('previd') ?? '', jid) : undefined;
    const h = Number(s.attr('h'));
    if (!state || !Number.isInteger(h) || h < 0) {
      this.transport.send(`<failed xmlns='${NS.sm}'><item-not-found xmlns='${NS.stanzas}'/></failed>`);
      return;
    }
    state.ack(h);
    const previous = state.conn;
    this.ctx.sm.resumed(state, this);
    // Inside the grace period this takes the lingering (or not yet noticed dead) session over and
    // watchers see nothing; after it, the session had ended and this opens it again.
    let session: Session;
    try {
      session = await this.ctx.engine.openSession(state.jid, state.resource, 'xmpp', this, null);
    } catch (e) {
      // Shutting down: the state stays as it was (detached, its window running) for endAll to store.
      state.conn = previous;
      if (previous === null) this.ctx.sm.detached(state);
      throw e;
    }
    if (this.ended) {
      // Lost again while we waited for the engine: detached once more, the window starts over.
      state.conn = null;
      this.ctx.sm.detached(state);
      this.ctx.engine.detach(session, this, { grace: true, reason: 'timeout' });
      return;
    }
    this.session = session;
    this.sm = state;
    this.stage = 'bound';
    this.openedSessionAt = this.ctx.now();
    this.available = state.available;
    for (const full of state.directed) this.directed.add(full);
    this.transport.send(`<resumed xmlns='${NS.sm}' previd='${state.id}' h='${state.inbound}'/>`);
    // XEP-0198 §5: what the client did not acknowledge is sent again, keeping its sequence numbers.
    for (const u of state.unacked) this.transport.send(u.text);
    if (state.unacked.length > 0) {
      this.ackRequested = true;
      this.transport.send(`<r xmlns='${NS.sm}'/>`);
    }
    const last = state.presence;
    if (this.available && last !== null && !session.presence.available) {
      // The session had ended (watchers saw it go): it arrives again, as it was, for everyone who sees it.
      await this.ctx.engine.setPresence(session, { show: last.show, status: last.status, priority: last.priority });
      if (this.directed.size > 0) announceDirected(this.ctx.engine, session, this.directed);
    }
    // Contacts' presence may have changed while the stream was away, and messages that arrived meanwhile
    // were stored: the client gets both as on a fresh initial presence.
    if (this.available) await initialPresence(this, session.presence.priority);
  }

  // ---------------------------------------------------------------- SessionSink

  deliver(d: Delivery): void {
    if (this.ended || !this.session) return;
    switch (d.kind) {
      case 'presence': {
        const p = presenceDelivery(this, d);
        if (p) this.sendStanza(p);
        return;
      }
      case 'roster':
        this.sendLater(rosterPush(this, d.item, d.contact));
        return;
      case 'subscription':
        this.sendStanza(subscriptionPresence(d.from, this.session.jid, d.type));
        return;
      case 'kick':
        this.close(d.reason);
        return;
      case 'notification':
        // A notification from the server itself, to be shown and not answered (RFC 6121 §5.2.2 headline).
        this.sendStanza(
          el('message', NS.client, { type: 'headline', from: this.domain, to: this.session.fullJid, id: d.id }, d.title !== undefined ? el('subject', NS.client, {}, d.title) : null, el('body', NS.client, {}, d.body)),
        );
        return;
      case 'stanza':
        // Routed stanzas reach connections through the engine's stanza handler (stanza-delivery.ts), not here.
        return;
    }
  }

  close(reason: string): void {
    if (this.ended) return;
    const condition: StreamCondition =
      reason === 'replaced' ? 'conflict'
      : reason === 'shutdown' ? 'system-shutdown'
      : reason === 'kicked' || reason === 'account-removed' || reason === 'password-changed' ? 'not-authorized'
      : 'policy-violation';
    // The engine has already taken the session from us (replaced, removed, shutdown): nothing to detach.
    this.session = null;
    this.closeStream(new StreamError(condition, reason), false);
  }

  // ---------------------------------------------------------------- ending

  private fail(e: unknown): void {
    if (e instanceof StreamError) {
      this.closeStream(e, true);
      return;
    }
    this.ctx.log.error({ err: e }, 'xmpp stream failed');
    this.closeStream(new StreamError('internal-server-error'), true);
  }

  /** Sends a stream error (if any) and closes the stream. */
  closeStream(error: StreamError | null, grace: boolean): void {
    if (this.ended) return;
    if (error && !this.headerSent) this.sendHeader();
    if (error) this.transport.send(streamErrorXml(error.condition, error.text));
    this.transport.send(this.transport.framing === 'websocket' ? `<close xmlns='${NS.framing}'/>` : '</stream:stream>');
    this.ended = true;
    this.stage = 'closed';
    // A clean close by the client is its goodbye; a stream we end for an error is a lost connection.
    this.leave(grace, error ? 'timeout' : 'graceful');
    this.transport.end();
  }

  /** Dead peer (idle timeout): the session lingers for the grace period. */
  terminate(): void {
    if (this.ended) return;
    this.ended = true;
    this.stage = 'closed';
    this.leave(true, 'timeout');
    this.transport.destroy();
  }

  private leave(grace: boolean, reason: 'graceful' | 'timeout'): void {
    for (const done of [...this.unconfirmed]) done(false);
    const s = this.session;
    const sm = this.sm;
    if (sm && sm.conn === this) {
      sm.conn = null;
      if (grace && sm.resumable && s) {
        // Resumable: the state (and the messages for it) is kept for the resumption window, but watchers
        // see the session go after the ordinary grace period, as for any lost connection. Directed
        // presence recipients hear of it then too (StreamManagement), not before: a quick resume shows nothing.
        sm.available = this.available;
        sm.presence = s.presence;
        sm.directed = new Set(this.directed);
        this.ctx.sm.detached(sm);
        this.ctx.engine.detach(s, this, { grace: true, reason });
        // Features may wake the device (XEP-0357): what it was sent and never acknowledged waits for it.
        if (this.ctx.extensions?.hooks.listenerCount('stream.held')) emitHook(this, 'stream.held', { jid: s.jid, resource: s.resource, messages: this.ctx.sm.unackedMessages(sm) });
        return;
      }
      void this.ctx.sm.end(sm);
    }
    if (!s) return;
    if (this.directed.size > 0) void sendDirectedUnavailable(this).catch((err: unknown) => this.ctx.log.error({ err }, 'directed unavailable presence failed'));
    this.ctx.engine.detach(s, this, { grace, reason });
  }

  /** XEP-0199: the server asks a silent client whether it is still there. */
  ping(): void {
    if (this.ended || this.pingSentAt !== null || this.stage !== 'bound') return;
    this.pingSentAt = this.ctx.now();
    this.sendStanza(el('iq', NS.client, { type: 'get', id: `ping-${this.pingSentAt.toString(36)}`, to: this.fullJid, from: this.domain }, el('ping', NS.ping)));
  }

  /**
   * A connection that is not yet bound, or that sits inside an unfinished stanza. The negotiation
   * timeout counts the client's time only, not the server's on its stanzas (see serverWaitMs), up to
   * ten times the timeout in all.
   */
  timedOut(now: number): StreamError | null {
    if (this.stage !== 'bound') {
      const serverTime =
        this.serverWaitMs + (this.serverBusySince !== null ? now - this.serverBusySince : 0) + (this.turnWaitSince !== null ? now - this.turnWaitSince : 0);
      const limit = this.ctx.opts.negotiationTimeoutMs;
      if (now - this.openedAt - serverTime > limit || now - this.openedAt > 10 * limit) {
        return new StreamError('connection-timeout', 'stream negotiation took too long');
      }
    }
    const since = this.partialSince;
    if (since !== null && now - since > this.ctx.opts.stanzaTimeoutMs) return new StreamError('connection-timeout', 'stanza not completed in time');
    return null;
  }

  get isEnded(): boolean {
    return this.ended;
  }

  get streamDomain(): string {
    return this.domain;
  }
}

function decode(text: string): Buffer {
  if (text === '=') return Buffer.alloc(0);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw new SaslFailure('incorrect-encoding');
  return Buffer.from(text, 'base64');
}

function escapeText(s: string): string {
  return s.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}
