import { randomBytes } from 'node:crypto';
import { PresenceError } from '../core/errors.js';
import { EventHub, type LeaveReason } from '../core/events.js';
import { domainOf, parseAccountJid, parseResource } from '../core/jid.js';
import {
  aggregatePresence,
  isShow,
  lastSeenOnGoingOffline,
  MAX_STATUS_LENGTH,
  samePresence,
  validatePriority,
  type AccountPresence,
  type LastSeen,
  type SessionPresence,
  type Show,
} from '../core/presence.js';
import type { RosterItem } from '../core/roster.js';
import { exchange, type SubType } from '../core/subscription.js';
import { NONE, type SubState } from '../core/subscription-state.js';
import { canSeePresence } from '../core/visibility.js';
import type { AccountSessions, ClusterEvent, ClusterNote, Delivery, LiveSession, PresenceBus, StanzaDelivery } from '../ports/bus.js';
import type { AccountSettings, PresenceCheckpoint, ScramKeys, Store } from '../ports/store.js';
import { checkPasswordShape } from './credentials.js';
import { Passwords, type PasswordWork } from './passwords.js';
import { internJid } from './compact.js';
import { SmallMap } from './small-map.js';
import { RosterCache } from './roster-cache.js';
import { KeyedLock } from './keyed-lock.js';
import { accountGeneration, issueToken, verifyToken } from './tokens.js';
import { LoginThrottle, type LoginThrottleOptions } from './login-throttle.js';
import { isXmlSafeText } from '../core/text.js';
import { DeliveryVersions } from './delivery-versions.js';

/** How a protocol front door receives what the engine sends to one of its sessions. */
export interface SessionSink {
  deliver(delivery: Delivery): void;
  /** The engine ends the connection (replaced by a newer login, account removed, shutdown). */
  close(reason: string): void;
  /** Epoch ms the client was last heard (any frame, stanza or pong): a lost session's last seen. */
  readonly lastReceived: number;
}

/**
 * The front door that routes stanzas (XMPP) receives the stanza deliveries meant for this node here,
 * with this node's session of `to/resource` if there is one (connected or not): what to do when there
 * is none, or when it cannot take the stanza, is the front door's to decide (see StanzaRoute).
 */
export type StanzaHandler = (to: string, delivery: StanzaDelivery, resource: string | null, session: Session | null) => void;

export interface PresenceInput {
  readonly show?: Show;
  readonly status?: string | null;
  readonly priority?: number;
}

/** A session held by this node. Its identity survives a reconnect inside the grace period. */
export class Session {
  sink: SessionSink | null;
  presence: SessionPresence;
  lingerTimer: NodeJS.Timeout | null = null;
  /**
   * When the client was last heard, recorded when its connection went (null while connected): for a
   * lost connection its last frame or pong, for a goodbye the time of the goodbye.
   */
  lastHeard: number | null = null;
  /** Whether the registry was last told this session is detached (LiveSession.detached). */
  registeredDetached = false;
  constructor(
    readonly jid: string,
    readonly resource: string,
    public protocol: string,
    sink: SessionSink,
    presence: SessionPresence,
  ) {
    this.sink = sink;
    this.presence = presence;
  }
  get fullJid(): string {
    return `${this.jid}/${this.resource}`;
  }
}

interface AccountState {
  readonly jid: string;
  /** Replaced when another node changed the roster (a cluster note). */
  roster: RosterCache;
  /** Shared empty set until the account blocks someone: most never do, and a Set per account adds up. */
  blocks: ReadonlySet<string>;
  settings: AccountSettings;
  lastSeen: LastSeen | null;
  presence: AccountPresence;
  /** When the account last came online (null while offline): the crash checkpoint's "online since". */
  onlineSince: number | null;
  /**
   * The latest last-heard of the available sessions that ended during the current online period, so
   * that the account's last seen is the last moment any of its sessions was heard, not only the last one.
   */
  heardWhileOnline: number;
  readonly local: SmallMap<string, Session>;
  /**
   * Whether the account exists. A state is also kept for an unknown JID someone asked about, so that
   * asking about it again costs what asking about a real account costs (no probing by timing).
   */
  exists: boolean;
  /**
   * The registry version `presence` was derived from (clustered bus; always 0 with the in-process bus).
   * A result older than this comes from a change that another node's later change already superseded.
   */
  version: number;
}

export interface EngineOptions {
  readonly domains: readonly string[];
  /** How long a session whose connection dropped stays online waiting for a reconnect. */
  readonly gracePeriodMs: number;
  /** Presence visible to anyone unless the account says otherwise. */
  readonly defaultPublicPresence: boolean;
  readonly tokenSecret: Buffer;
  /** Accounts without local sessions kept in memory; beyond this the least recently used are dropped. */
  readonly cacheSize?: number;
  /**
   * How often the online accounts' "online since / last heard / last status" are written down, so that
   * after an unclean stop their last seen is their last activity (see start()). 0 turns it off.
   */
  readonly checkpointMs?: number;
  /** Throttling of failed logins shared by every front door; off when omitted. */
  readonly loginThrottle?: LoginThrottleOptions;
  /** Password hashing and checking (a worker pool, the verified-password cache); the defaults when omitted. */
  readonly passwords?: Passwords;
  readonly now?: () => number;
}

/** An account found online at start after an unclean stop, and the last seen it was given. */
export interface RecoveredAccount {
  readonly jid: string;
  readonly lastSeen: LastSeen;
  readonly reason: LeaveReason;
}

/** What ended sessions tell recompute() about how the account was last heard. */
interface Leaving {
  /** When the account was last heard through the session that went (or became unavailable). */
  readonly heardAt: number;
  /** Set when an explicit unavailable presence caused it: its status becomes the last status. */
  readonly unavailable: { readonly status: string | null } | null;
  /** Set when the session ended (rather than became unavailable). */
  readonly reason: LeaveReason | null;
}

export interface RosterView {
  readonly version: number;
  readonly items: RosterItem[];
}

export interface EngineStats {
  deliveries: number;
  presenceChanges: number;
  /** Account states read from the store into the cache (presenced_account_loads_total). */
  accountLoads: number;
}

const MAX_RESOURCE_ATTEMPTS = 5;
/** What someone who may no longer see an account is told: offline, with no status and no last-seen. */
const OFFLINE_MASK = (jid: string): AccountPresence => aggregatePresence(jid, [], null);

/**
 * The presence engine: applies the pure rules of core/ to durable state (Store) and live state
 * (PresenceBus), and fans every change out to the sessions allowed to see it. Protocol front doors call
 * it and implement SessionSink; features subscribe to `events`.
 */
export class PresenceEngine {
  readonly events = new EventHub();
  readonly stats: EngineStats = { deliveries: 0, presenceChanges: 0, accountLoads: 0 };
  /** Every front door asks it before checking a password and tells it the outcome. */
  readonly loginThrottle: LoginThrottle;
  /** Password work (passwords.ts): whoever passed it in closes it; one made here is closed by shutdown(). */
  readonly passwords: Passwords;
  private readonly ownPasswords: boolean;
  private readonly states = new Map<string, AccountState>();
  private readonly loading = new Map<string, Promise<AccountState>>();
  private readonly sessionLock = new KeyedLock();
  private readonly rosterLock = new KeyedLock();
  private readonly domains: Set<string>;
  private readonly now: () => number;
  private readonly cacheSize: number;
  private closing = false;
  private checkpointTimer: NodeJS.Timeout | null = null;
  private checkpointRun: Promise<void> | null = null;
  /** What the checkpoint table holds, per account, as last written by this process. */
  private readonly checkpointed = new Map<string, PresenceCheckpoint>();
  /**
   * Every account that chose publicPresence, kept in memory once loadPublicity() ran (null before):
   * an anonymous question about an account that is not public is answered from it alone, touching
   * neither the store nor the state cache, so a hidden account (online or not) and an unknown JID
   * cost the same, cold or warm.
   */
  private publicity: Map<string, boolean> | null = null;
  /** The latest presence version delivered here per account (clustered bus): see DeliveryVersions. */
  private readonly versions = new DeliveryVersions();

  constructor(
    readonly store: Store,
    readonly bus: PresenceBus,
    private readonly opts: EngineOptions,
  ) {
    this.domains = new Set(opts.domains);
    this.now = opts.now ?? Date.now;
    this.cacheSize = opts.cacheSize ?? 10_000;
    this.passwords = opts.passwords ?? new Passwords();
    this.ownPasswords = opts.passwords === undefined;
    this.loginThrottle = new LoginThrottle(opts.loginThrottle ?? { accountFree: 1, addressFree: 1, maxDelayMs: 0 }, (raw) => {
      try {
        return this.localJid(raw);
      } catch {
        return raw.toLowerCase();
      }
    });
    bus.onDelivery((to, d, resource) => this.dispatchLocal(to, d, resource));
    bus.onCluster((e) => this.onClusterEvent(e));
  }

  // ---------------------------------------------------------------- accounts

  /** Normalises a JID and checks that this server hosts its domain. */
  localJid(input: unknown): string {
    if (typeof input !== 'string') throw new PresenceError('bad-jid', 'jid must be a string');
    const jid = parseAccountJid(input);
    if (!this.domains.has(domainOf(jid))) {
      throw new PresenceError('not-found', `domain ${domainOf(jid)} is not served here`);
    }
    return jid;
  }

  isLocalDomain(domain: string): boolean {
    return this.domains.has(domain);
  }

  /**
   * Creates an account. `work` places its password derivations in the pool's fair queue (default: under
   * the account; in-band registration passes the client's address, so one address's flood of
   * registrations takes one turn per round).
   */
  async createAccount(jidInput: string, password: string, work: PasswordWork = {}): Promise<string> {
    const jid = this.localJid(jidInput);
    const bad = checkPasswordShape(password);
    if (bad) throw new PresenceError('bad-request', bad);
    const creds = await this.passwords.derive(password, { key: work.fairKey ?? `account:${jid}`, ...(work.admit ? { admit: work.admit } : {}) });
    await this.store.createAccount({ jid, ...creds, createdAt: this.now() });
    // Registration is usually followed by a login with the same password: it needs no second derivation.
    this.passwords.remember(jid, password, creds);
    const cached = this.states.get(jid);
    if (cached) cached.exists = true;
    this.tellOthers({ kind: 'invalidate', jid, parts: ['account'] });
    this.events.emit('account.created', { jid });
    return jid;
  }

  async changePassword(jidInput: string, password: string): Promise<void> {
    const jid = this.localJid(jidInput);
    const bad = checkPasswordShape(password);
    if (bad) throw new PresenceError('bad-request', bad);
    const creds = await this.passwords.derive(password, { key: `account:${jid}` });
    this.passwords.forget(jid);
    if (!(await this.store.setCredentials(jid, creds))) throw new PresenceError('not-found', `no account ${jid}`);
    // Tokens issued before now stop working: a password change is how a user locks out a lost device.
    await this.store.updateSettings(jid, { tokensNotBefore: this.now() });
    // So do the connections that logged in with the old password, on every node (a kick delivery).
    this.bus.deliver(jid, { kind: 'kick', reason: 'password-changed' });
  }

  async deleteAccount(jidInput: string): Promise<boolean> {
    const jid = this.localJid(jidInput);
    if (!(await this.store.getAccount(jid))) return false;
    const state = this.states.get(jid);
    if (state) {
      for (const s of [...state.local.values()]) {
        const sink = s.sink;
        s.sink = null;
        sink?.close('account-removed');
        await this.closeSession(s, 'kicked');
      }
    }
    // Contacts lose the account from their rosters, as if it had removed them (RFC 6121 §2.5.2).
    const pointing = await this.store.getItemsPointingAt(jid);
    await this.store.removeRosterItems(pointing.map((i) => ({ owner: i.owner, contact: i.contact })));
    const existed = await this.store.deleteAccount(jid);
    this.passwords.forget(jid);
    this.states.delete(jid);
    this.publicity?.delete(jid);
    this.tellOthers({ kind: 'invalidate', jid, parts: ['account'] });
    for (const item of pointing) {
      const s = this.states.get(item.owner);
      s?.roster.delete(jid);
      this.tellOthers({ kind: 'invalidate', jid: item.owner, parts: ['roster'] });
      this.bus.deliver(item.owner, { kind: 'roster', item: null, contact: jid });
      if (item.state.to) this.bus.deliver(item.owner, { kind: 'presence', from: jid, presence: OFFLINE_MASK(jid), session: null });
    }
    if (existed) this.events.emit('account.deleted', { jid });
    return existed;
  }

  async accountExists(jid: string): Promise<boolean> {
    return (await this.store.getAccount(jid)) !== undefined;
  }

  /**
   * Checks a password sent in clear (SASL PLAIN, native auth, HTTP Basic). Resolves with the normalised
   * JID, or rejects with 'auth-failed' without saying which part was wrong. The check waits its turn in
   * the password pool's fair queue under the account; `work.admit` is called when the turn comes and may
   * refuse it (the connection went, or the login throttle now says wait). See passwords.ts for what it
   * costs.
   */
  async authenticatePassword(jidInput: unknown, password: unknown, work: PasswordWork = {}): Promise<string> {
    let jid: string;
    try {
      jid = this.localJid(jidInput);
    } catch {
      throw new PresenceError('auth-failed', 'wrong jid or password');
    }
    if (typeof password !== 'string' || checkPasswordShape(password)) {
      throw new PresenceError('auth-failed', 'wrong jid or password');
    }
    const account = await this.store.getAccount(jid);
    const ticket = { key: work.fairKey ?? `account:${jid}`, ...(work.admit ? { admit: work.admit } : {}) };
    if (!(await this.passwords.verify(jid, password, account, ticket)) || !account) {
      throw new PresenceError('auth-failed', 'wrong jid or password');
    }
    return jid;
  }

  /** The stored SCRAM keys of an account (XMPP SASL); null for an unknown account or JID. */
  async scramKeys(jidInput: string, algo: 'sha1' | 'sha256'): Promise<ScramKeys | null> {
    let jid: string;
    try {
      jid = this.localJid(jidInput);
    } catch {
      return null;
    }
    const account = await this.store.getAccount(jid);
    if (!account) return null;
    return algo === 'sha1' ? account.scramSha1 : account.scramSha256;
  }

  /** Issues a token for an existing account (rejects with 'not-found' otherwise), bound to this incarnation of it. */
  async issueToken(jid: string, ttlSeconds: number, scope = 'login'): Promise<{ token: string; expiresAt: number }> {
    const account = await this.store.getAccount(jid);
    if (!account) throw new PresenceError('not-found', 'no such account');
    const iat = this.now();
    const exp = iat + ttlSeconds * 1000;
    const acc = accountGeneration(this.opts.tokenSecret, account.passwordHash);
    return { token: issueToken(this.opts.tokenSecret, { sub: jid, acc, iat, exp, scope }), expiresAt: exp };
  }

  async authenticateToken(token: unknown, scope = 'login'): Promise<string> {
    const claims = verifyToken(this.opts.tokenSecret, token, this.now());
    if (!claims || claims.scope !== scope) throw new PresenceError('auth-failed', 'invalid or expired token');
    const account = await this.store.getAccount(claims.sub);
    // A token dies with the account it was issued for: a re-created account has another generation.
    if (!account || accountGeneration(this.opts.tokenSecret, account.passwordHash) !== claims.acc) {
      throw new PresenceError('auth-failed', 'invalid or expired token');
    }
    const settings = await this.store.getSettings(claims.sub);
    const notBefore = typeof settings.tokensNotBefore === 'number' ? settings.tokensNotBefore : 0;
    if (claims.iat <= notBefore) throw new PresenceError('auth-failed', 'invalid or expired token');
    return claims.sub;
  }

  // ---------------------------------------------------------------- account state cache

  /**
   * The account's state, loaded if need be. `authenticated`: the caller has just authenticated the
   * account (a session is opening), so it exists and its row need not be read again for that.
   */
  private async state(jid: string, authenticated = false): Promise<AccountState> {
    const cached = this.states.get(jid);
    if (cached) {
      // Re-insert to mark it recently used; Map keeps insertion order, which eviction walks.
      this.states.delete(jid);
      this.states.set(jid, cached);
      return cached;
    }
    let p = this.loading.get(jid);
    if (!p) {
      p = this.loadState(jid, authenticated).finally(() => this.loading.delete(jid));
      this.loading.set(jid, p);
    }
    return p;
  }

  private async loadState(jid: string, authenticated: boolean): Promise<AccountState> {
    this.stats.accountLoads++;
    const [roster, blocks, settings, lastSeen, account] = await Promise.all([
      this.store.getRoster(jid),
      this.store.getBlocks(jid),
      this.store.getSettings(jid),
      this.store.getLastSeen(jid),
      authenticated ? true : this.store.getAccount(jid),
    ]);
    const { sessions, version } = await this.bus.accountSessions(jid);
    const state: AccountState = {
      jid: internJid(jid),
      roster: new RosterCache(internJid(jid), roster),
      blocks: blocks.length ? new Set(blocks) : NO_BLOCKS,
      settings,
      lastSeen,
      presence: aggregatePresence(jid, sessions, lastSeen),
      onlineSince: null,
      heardWhileOnline: 0,
      local: new SmallMap(),
      exists: account !== undefined,
      version,
    };
    const raced = this.states.get(jid);
    if (raced) return raced;
    this.states.set(jid, state);
    this.evict();
    return state;
  }

  private evict(): void {
    if (this.states.size <= this.cacheSize) return;
    // Each state is looked at once at most: one kept is moved to the back of the order, so that when
    // most states are in use (a storm of logins larger than the cache) the next eviction does not walk
    // past all of them again; a storm of n logins would otherwise cost n² steps.
    let budget = this.states.size;
    for (const [jid, s] of this.states) {
      if (this.states.size <= this.cacheSize || budget-- <= 0) break;
      // A state whose account has work under way (a login between loading it and adding its session)
      // must stay: that work holds this object, and a fresh copy loaded later would not know of it.
      if (s.local.size === 0 && !this.sessionLock.held(jid)) {
        this.states.delete(jid);
      } else {
        this.states.delete(jid);
        this.states.set(jid, s);
      }
    }
  }

  // ---------------------------------------------------------------- sessions

  /**
   * Opens (or takes over) the session `resource` of `jid`. A session with the same resource that is
   * lingering after a dropped connection, or still connected elsewhere, is taken over without watchers
   * seeing it go offline.
   */
  async openSession(
    jid: string,
    resourceInput: string | null,
    protocol: string,
    sink: SessionSink,
    initial: PresenceInput | null,
  ): Promise<Session> {
    if (this.closing) throw new PresenceError('not-allowed', 'server is shutting down');
    const resource = resourceInput === null ? null : parseResource(resourceInput);
    const input = initial === null ? null : checkPresenceInput(initial);
    return this.sessionLock.run(jid, async () => {
      const state = await this.state(jid, true);
      state.exists = true; // it authenticated, whatever an older cached lookup said
      const res = resource ?? (await this.freshResource(state));
      const existing = state.local.get(res);
      const now = this.now();
      if (existing) {
        if (existing.lingerTimer) clearTimeout(existing.lingerTimer);
        existing.lingerTimer = null;
        existing.lastHeard = null;
        const old = existing.sink;
        existing.sink = sink;
        existing.protocol = protocol;
        old?.close('replaced');
        if (old && this.events.hasListeners('session.replaced')) this.events.emit('session.replaced', { jid, session: existing.presence, protocol });
        if (input) await this.applyPresence(state, existing, sessionFrom(res, input, now));
        else if (existing.registeredDetached) await this.register(state, existing);
        return existing;
      }
      const presence = input
        ? sessionFrom(res, input, now)
        : { resource: res, available: false, show: 'available' as Show, status: null, priority: 0, lastActive: now };
      const session = new Session(jid, res, protocol, sink, presence);
      state.local.set(res, session);
      let all: AccountSessions;
      try {
        all = await this.bus.putSession(jid, this.live(session));
      } catch (e) {
        // Not registered (a clustered bus that cannot reach Redis): the login fails and leaves nothing behind.
        if (state.local.get(res) === session) state.local.delete(res);
        throw e;
      }
      this.events.emit('session.opened', { jid, session: presence, protocol });
      await this.recompute(state, all, session.presence);
      return session;
    });
  }

  private async freshResource(state: AccountState): Promise<string> {
    const taken = new Set((await this.bus.sessionsOf(state.jid)).map((s) => s.resource));
    for (let i = 0; i < MAX_RESOURCE_ATTEMPTS; i++) {
      const r = `pd-${randomBytes(6).toString('base64url')}`;
      if (!taken.has(r) && !state.local.has(r)) return r;
    }
    throw new PresenceError('internal', 'could not allocate a resource');
  }

  async setPresence(session: Session, input: PresenceInput): Promise<SessionPresence> {
    const checked = checkPresenceInput(input);
    return this.sessionLock.run(session.jid, async () => {
      const state = await this.state(session.jid);
      if (state.local.get(session.resource) !== session) throw new PresenceError('not-found', 'session has ended');
      await this.applyPresence(state, session, sessionFrom(session.resource, checked, this.now()));
      return session.presence;
    });
  }

  /** The session stays connected but stops being available (XMPP `<presence type='unavailable'/>`). */
  async setUnavailable(session: Session, status: string | null): Promise<void> {
    const checked = checkPresenceInput({ status });
    await this.sessionLock.run(session.jid, async () => {
      const state = await this.state(session.jid);
      if (state.local.get(session.resource) !== session) throw new PresenceError('not-found', 'session has ended');
      const next = { ...sessionFrom(session.resource, checked, this.now()), available: false };
      await this.applyPresence(state, session, next);
    });
  }

  private async applyPresence(state: AccountState, session: Session, next: SessionPresence): Promise<void> {
    const previous = session.presence;
    session.presence = next;
    let all: AccountSessions;
    try {
      all = await this.bus.putSession(state.jid, this.live(session));
    } catch (e) {
      if (session.presence === next) session.presence = previous;
      throw e;
    }
    session.registeredDetached = session.sink === null;
    if (this.events.hasListeners('session.changed')) this.events.emit('session.changed', { jid: state.jid, session: next, previous });
    // An explicit unavailable presence is the account's last word if it takes it offline.
    const leaving: Leaving | null = previous.available && !next.available ? { heardAt: next.lastActive, unavailable: { status: next.status }, reason: null } : null;
    await this.recompute(state, all, next, !sameSessionPresence(previous, next), leaving);
  }

  /**
   * The connection behind `session` is gone. With `grace` the session stays online for the grace
   * period so a quick reconnect shows watchers nothing; otherwise (a clean goodbye) it ends now.
   */
  detach(session: Session, sink: SessionSink, opts: { grace: boolean; reason: LeaveReason; graceMs?: number }): void {
    if (session.sink !== sink) return; // already taken over by a newer connection
    session.sink = null;
    const reason = opts.reason;
    // A lost connection was last heard at its last frame or pong, however long it took to notice; a
    // goodbye was heard now.
    session.lastHeard = opts.grace ? Math.min(sink.lastReceived, this.now()) : this.now();
    // A protocol may hold a session longer than the default (XMPP stream management's resumption window).
    const graceMs = opts.graceMs ?? this.opts.gracePeriodMs;
    if (opts.grace && graceMs > 0 && !this.closing) {
      session.lingerTimer = setTimeout(() => {
        session.lingerTimer = null;
        void this.closeSession(session, reason);
      }, graceMs);
      // Other nodes cannot see that the connection is gone: the registry tells them (LiveSession.detached).
      void this.sessionLock
        .run(session.jid, async () => {
          const state = this.states.get(session.jid);
          if (state === undefined || state.local.get(session.resource) !== session || session.sink !== null || session.registeredDetached) return;
          await this.register(state, session);
        })
        .catch(() => {
          // The session was taken over on another node meanwhile, or the bus cannot be reached (it
          // registers its sessions again, as they are then, once back): nothing to mark any more.
        });
      return;
    }
    void this.closeSession(session, reason);
  }

  async closeSession(session: Session, reason: LeaveReason): Promise<void> {
    await this.sessionLock.run(session.jid, async () => {
      const state = this.states.get(session.jid);
      if (!state || state.local.get(session.resource) !== session) return;
      if (session.sink !== null) return; // reattached while we waited for the lock
      if (session.lingerTimer) clearTimeout(session.lingerTimer);
      session.lingerTimer = null;
      state.local.delete(session.resource);
      let remaining: AccountSessions;
      try {
        remaining = await this.bus.removeSession(session.jid, session.resource);
      } catch {
        // The session is gone here whatever the bus says; the others are what the bus knows of.
        const known = await this.bus.accountSessions(session.jid);
        remaining = { sessions: known.sessions.filter((s) => !(s.resource === session.resource && s.node === this.bus.node)), version: 0 };
      }
      this.events.emit('session.closed', { jid: session.jid, session: session.presence, reason });
      // Per-resource watchers (XMPP) must hear that this resource went, even when the account stays online.
      const gone = session.presence.available ? { ...session.presence, available: false } : null;
      const leaving: Leaving | null = gone ? { heardAt: session.lastHeard ?? this.now(), unavailable: null, reason } : null;
      await this.recompute(state, remaining, gone, gone !== null, leaving);
      this.evict();
    });
  }

  /** The sessions of `jid` connected to this node (a protocol routes stanzas to their sinks). */
  localSessionsOf(jid: string): Session[] {
    const state = this.states.get(jid);
    return state ? [...state.local.values()] : [];
  }

  private live(s: Session): LiveSession {
    const live: LiveSession = { ...s.presence, protocol: s.protocol, node: this.bus.node };
    return s.sink === null ? { ...live, detached: true } : live;
  }

  /**
   * Writes a session's registry entry again, its presence unchanged (its connection went or came
   * back: LiveSession.detached). Watchers see nothing; the account's cached version follows. Under the
   * account's session lock.
   */
  private async register(state: AccountState, session: Session): Promise<void> {
    const all = await this.bus.putSession(state.jid, this.live(session));
    session.registeredDetached = session.sink === null;
    await this.recompute(state, all, null);
  }

  /**
   * Derives the account presence from its sessions and, if watchers could tell the difference, fans it
   * out (with `force`, even if they could not: re-announcing after the cluster lost deliveries).
   *
   * In a cluster, two nodes may change one account at once, and this node's cache may already have
   * followed a later change of another node when this result comes back. What watchers were shown
   * just before this change is then `at.before` (exact, from the registry), not the cache; the change
   * is fanned out with its version whenever it changed what watchers see, and receivers keep the latest
   * version (DeliveryVersions), so they end on the newest presence whatever the order of arrival.
   */
  private recompute(
    state: AccountState,
    at: AccountSessions,
    cause: SessionPresence | null,
    resourceChanged = false,
    leaving: Leaving | null = null,
    force = false,
  ): Promise<void> {
    const version = at.version;
    // Whether this result is the newest this node knows of the account (always, with the in-process bus).
    const newest = version === 0 || version >= state.version;
    const previous = at.before === undefined ? state.presence : aggregatePresence(state.jid, at.before, state.lastSeen);
    const next = aggregatePresence(state.jid, at.sessions, state.lastSeen);
    let persisted: Promise<void> = Promise.resolve();
    let presence = next;
    let reason: LeaveReason | null = null;
    if (previous.online && !next.online) {
      // Last seen is the last moment the account was heard while online, by whichever session.
      const heardAt = Math.max(state.heardWhileOnline, leaving?.heardAt ?? this.now());
      const lastSeen = lastSeenOnGoingOffline(previous, heardAt, leaving?.unavailable ?? null);
      state.lastSeen = lastSeen;
      if (newest) {
        state.onlineSince = null;
        state.heardWhileOnline = 0;
      }
      presence = aggregatePresence(state.jid, at.sessions, lastSeen);
      // A failed write (database unavailable) must not fail the presence change, which has happened,
      // nor go unhandled from a session closed by a timer: it is reported, and memory keeps the value.
      persisted = this.store.setLastSeen(state.jid, lastSeen).catch((err: unknown) => this.onLastSeenError(err, state.jid));
      reason = leaving?.reason ?? null;
      // Other nodes saw the sessions go; the last seen is only known here.
      this.tellOthers({ kind: 'last-seen', jid: state.jid, lastSeen });
    } else if (!previous.online && next.online) {
      if (newest) {
        state.onlineSince = this.now();
        state.heardWhileOnline = 0;
      }
    } else if (next.online && leaving !== null) {
      state.heardWhileOnline = Math.max(state.heardWhileOnline, leaving.heardAt);
    }
    if (newest) {
      state.presence = presence;
      if (version !== 0) state.version = version;
    }
    const sessions = at.sessions.length;
    if (samePresence(previous, presence)) {
      if (force) this.fanOut(state, presenceDelivery(state.jid, presence, cause, false, null, version), sessions);
      else if (resourceChanged && cause !== null) this.fanOut(state, presenceDelivery(state.jid, presence, cause, true, null, version), sessions);
      return persisted;
    }
    this.stats.presenceChanges++;
    if (this.events.hasListeners('presence.changed')) this.events.emit('presence.changed', version === 0 ? { jid: state.jid, presence, previous } : { jid: state.jid, presence, previous, version });
    this.fanOut(state, presenceDelivery(state.jid, presence, cause, false, reason, version), sessions);
    return persisted;
  }

  /**
   * Sends a presence delivery to every contact allowed to see the account, and to the account's own
   * sessions when it has more than one (a lone session is not told its own presence). `sessions` is
   * the account's session count after the change, cluster-wide: in a cluster the other sessions may be
   * on other nodes, so this node's own count cannot decide.
   */
  private fanOut(state: AccountState, d: Delivery, sessions: number): void {
    const blocks = state.blocks;
    state.roster.forEachWhere(isSubscriber, (contact) => {
      if (!blocks.has(contact)) this.bus.deliver(contact, d);
    });
    if (this.bus.node === 'local' ? state.local.size > 1 : sessions > 1) this.bus.deliver(state.jid, d);
  }

  private stanzaHandler: StanzaHandler | null = null;
  private readonly elsewhere: Array<(jid: string, sessions: readonly LiveSession[]) => void> = [];

  /** Set once by the front door that routes stanzas between resources (XMPP). */
  onStanza(handler: StanzaHandler): void {
    this.stanzaHandler = handler;
  }

  /**
   * Called with an account's sessions each time another node changed them (clustered bus): a front
   * door holding state of its own about a resource (XMPP stream management) learns that the resource
   * was bound elsewhere.
   */
  onSessionsElsewhere(listener: (jid: string, sessions: readonly LiveSession[]) => void): void {
    this.elsewhere.push(listener);
  }

  /** The bus hands every delivery for an account with sessions on this node to here. */
  private dispatchLocal(to: string, delivery: Delivery, resource: string | null): void {
    if (delivery.kind === 'stanza') {
      // The bus hands every delivery to the local engine too; a stanza is for the one node its sender chose.
      if (delivery.node !== this.bus.node) return;
      this.stats.deliveries++;
      const s = resource === null ? null : (this.states.get(to)?.local.get(resource) ?? null);
      this.stanzaHandler?.(to, delivery, resource, s);
      return;
    }
    const state = this.states.get(to);
    if (!state || state.local.size === 0) return;
    if (delivery.kind === 'kick') {
      this.kickLocal(state, delivery.reason, resource);
      return;
    }
    let d = delivery;
    if (d.kind === 'presence' && d.version !== undefined) {
      const admitted = this.versions.admit(d);
      if (admitted === null) return;
      d = admitted;
    }
    if (d.kind === 'presence' && d.from !== to && state.blocks.has(d.from)) return;
    if (resource !== null) {
      const s = state.local.get(resource);
      if (s?.sink) {
        this.stats.deliveries++;
        s.sink.deliver(d);
      }
      return;
    }
    const one = state.local.single();
    if (one !== undefined) {
      if (one.sink) {
        this.stats.deliveries++;
        one.sink.deliver(d);
      }
      return;
    }
    for (const s of state.local.values()) {
      if (!s.sink) continue;
      this.stats.deliveries++;
      s.sink.deliver(d);
    }
  }

  /**
   * Ends this node's sessions of the account (or its one resource): the connection is told why, the
   * session ends at once with reason kicked (watchers see it go).
   */
  private kickLocal(state: AccountState, reason: string, resource: string | null): void {
    for (const s of [...state.local.values()]) {
      if (resource !== null && s.resource !== resource) continue;
      const sink = s.sink;
      s.sink = null;
      sink?.close(reason);
      void this.closeSession(s, 'kicked');
    }
  }

  // ---------------------------------------------------------------- the rest of the cluster

  /** Tells the other nodes' engines (the in-process bus has none to tell). */
  private tellOthers(note: ClusterNote): void {
    this.bus.publishNote(note);
  }

  private onClusterEvent(e: ClusterEvent): void | Promise<void> {
    switch (e.kind) {
      case 'sessions':
        this.followSessions(e.jid, e.sessions, e.version);
        for (const l of this.elsewhere) l(e.jid, e.sessions);
        return;
      case 'node-down':
        return this.endSessionsOfDeadNode(e);
      case 'taken-over':
        this.takenOver(e.jid, e.resource);
        return;
      case 'fenced':
        this.dropEveryLocalSession();
        return;
      case 'resynced':
        return this.afterResync(e.refresh, e.allLocal, e.reloadCaches);
      case 'note':
        return this.applyNote(e.note);
    }
  }

  /**
   * Another node changed the account's sessions and fanned the result out itself: the cached state
   * follows silently, so presence queries answered here, and this node's next change of the account,
   * start from the truth.
   */
  private followSessions(jid: string, sessions: readonly LiveSession[], version: number): void {
    const state = this.states.get(jid);
    if (state === undefined || version <= state.version) return;
    state.version = version;
    const previous = state.presence;
    let next = aggregatePresence(jid, sessions, state.lastSeen);
    if (previous.online && !next.online) {
      // Provisional until the other node's last-seen note arrives (milliseconds later).
      const lastSeen = lastSeenOnGoingOffline(previous, this.now());
      state.lastSeen = lastSeen;
      next = aggregatePresence(jid, sessions, lastSeen);
      state.onlineSince = null;
      state.heardWhileOnline = 0;
    } else if (!previous.online && next.online) {
      state.onlineSince = this.now();
      state.heardWhileOnline = 0;
    }
    state.presence = next;
  }

  /**
   * This node declares the sessions of a dead node offline (the bus already removed them from the
   * registry): session.closed events with reason node_down, then the account's presence, fanned out
   * as if they had ended one after the other.
   */
  private async endSessionsOfDeadNode(e: Extract<ClusterEvent, { kind: 'node-down' }>): Promise<void> {
    await this.sessionLock.run(e.jid, async () => {
      const state = await this.state(e.jid);
      for (const s of e.removed) this.events.emit('session.closed', { jid: e.jid, session: presenceOnly(s), reason: 'node_down', protocol: s.protocol });
      // What watchers were last told included the dead node's sessions, whatever this cache learnt since.
      let before: readonly LiveSession[] = [...e.remaining, ...e.removed];
      for (const s of e.removed) {
        const after = before.filter((x) => x !== s);
        const gone = s.available ? { ...presenceOnly(s), available: false } : null;
        const heardAt = Math.max(e.heardAt, s.lastActive);
        const leaving: Leaving | null = gone ? { heardAt, unavailable: null, reason: 'node_down' } : null;
        await this.recompute(state, { sessions: after, version: e.version, before }, gone, gone !== null, leaving);
        before = after;
      }
      this.evict();
    });
  }

  /** The same full JID logged in on another node: this node's connection for it ends, the session goes on there. */
  private takenOver(jid: string, resource: string): void {
    const state = this.states.get(jid);
    const s = state?.local.get(resource);
    if (state === undefined || s === undefined) return;
    if (s.lingerTimer) clearTimeout(s.lingerTimer);
    s.lingerTimer = null;
    state.local.delete(resource);
    const sink = s.sink;
    s.sink = null;
    sink?.close('replaced');
    if (sink && this.events.hasListeners('session.replaced')) this.events.emit('session.replaced', { jid, session: s.presence, protocol: s.protocol, elsewhere: true });
  }

  /**
   * This node was declared dead while it was paused or cut off: the others already told every watcher
   * its sessions ended (and emitted the events), so every connection here closes without a word to the
   * registry, and every cached state goes (it may have missed changes). Clients reconnect, to this
   * node (under its new epoch) or another.
   */
  private dropEveryLocalSession(): void {
    for (const state of this.states.values()) {
      for (const s of [...state.local.values()]) {
        if (s.lingerTimer) clearTimeout(s.lingerTimer);
        s.lingerTimer = null;
        state.local.delete(s.resource);
        const sink = s.sink;
        s.sink = null;
        sink?.close('shutdown');
      }
    }
    this.states.clear();
    this.versions.clear();
  }

  /**
   * The bus rebuilt its view of the cluster after losing Redis. Versions may have restarted, so
   * what was remembered of them goes; accounts changed here meanwhile (and all local ones if
   * deliveries were lost) are announced again from the registry's truth; other cached states follow
   * the registry, or are dropped to be read again when next needed.
   */
  private async afterResync(refresh: readonly string[], allLocal: boolean, reloadCaches: boolean): Promise<void> {
    this.versions.clear();
    const announce = new Set(refresh);
    if (reloadCaches) {
      if (this.publicity !== null) await this.loadPublicity();
      for (const [jid, state] of [...this.states]) {
        if (state.local.size > 0) await this.applyNote({ kind: 'invalidate', jid, parts: ['roster', 'blocks', 'settings'] });
      }
    }
    for (const [jid, state] of [...this.states]) {
      if (allLocal && state.local.size > 0) announce.add(jid);
      if (announce.has(jid)) continue;
      if (state.local.size === 0) {
        this.states.delete(jid);
        continue;
      }
      const at = await this.bus.accountSessions(jid);
      state.version = 0;
      this.followSessions(jid, at.sessions, at.version);
    }
    for (const jid of announce) {
      await this.sessionLock.run(jid, async () => {
        const state = await this.state(jid);
        const at = await this.bus.accountSessions(jid);
        state.version = 0;
        await this.recompute(state, at, null, false, null, true);
      });
    }
  }

  private async applyNote(note: ClusterNote): Promise<void> {
    if (note.kind === 'last-seen') {
      const state = this.states.get(note.jid);
      if (state !== undefined && !state.presence.online) {
        state.lastSeen = note.lastSeen;
        state.presence = aggregatePresence(note.jid, [], note.lastSeen);
      }
      return;
    }
    const { jid, parts } = note;
    if (this.publicity !== null && (parts.includes('settings') || parts.includes('account'))) {
      const settings = await this.store.getSettings(jid);
      if (typeof settings.publicPresence === 'boolean') this.publicity.set(jid, settings.publicPresence);
      else this.publicity.delete(jid);
    }
    await this.loading.get(jid)?.catch(() => {});
    const state = this.states.get(jid);
    if (state === undefined) return;
    await this.rosterLock.run(jid, async () => {
      if (this.states.get(jid) !== state) return;
      if (parts.includes('account') && !(await this.store.getAccount(jid))) {
        // Deleted through another node: its sessions here end as they do on that node.
        for (const s of [...state.local.values()]) {
          const sink = s.sink;
          s.sink = null;
          sink?.close('account-removed');
          await this.closeSession(s, 'kicked');
        }
        this.states.delete(jid);
        this.publicity?.delete(jid);
        return;
      }
      if (state.local.size === 0) {
        // Nobody here needs it now: read again when next asked about.
        this.states.delete(jid);
        return;
      }
      if (parts.includes('account')) state.exists = true;
      const [roster, blocks, settings] = await Promise.all([
        parts.includes('roster') ? this.store.getRoster(jid) : null,
        parts.includes('blocks') ? this.store.getBlocks(jid) : null,
        parts.includes('settings') ? this.store.getSettings(jid) : null,
      ]);
      if (roster !== null) state.roster = new RosterCache(state.jid, roster);
      if (blocks !== null) state.blocks = blocks.length ? new Set(blocks) : NO_BLOCKS;
      if (settings !== null) state.settings = settings;
    });
  }

  // ---------------------------------------------------------------- presence queries

  /** Presence of an account as the server knows it, with no visibility check (admin use). */
  async presenceOf(jid: string): Promise<AccountPresence> {
    return (await this.presenceOfMany([jid])).get(jid) as AccountPresence;
  }

  /**
   * The one rule every front door shows (admin API, native snapshot and presence.get, XEP-0012, and
   * through the cached state the HTTP presence API): the live sessions, and for an account with no
   * available session (none at all, or only connected-but-unavailable ones) its last seen and last status.
   */
  async presenceOfMany(jids: readonly string[]): Promise<Map<string, AccountPresence>> {
    const sessions = await this.bus.sessionsOfMany(jids);
    const lastSeen = new Map<string, LastSeen | null>();
    const unknown: string[] = [];
    for (const j of jids) {
      if (sessions.get(j)?.some((s) => s.available)) continue;
      // A cached state's last seen is the freshest (it is set before the store write completes).
      const cached = this.states.get(j);
      if (cached !== undefined) lastSeen.set(j, cached.lastSeen);
      else unknown.push(j);
    }
    if (unknown.length) for (const [j, ls] of await this.store.getLastSeenMany(unknown)) lastSeen.set(j, ls);
    const out = new Map<string, AccountPresence>();
    for (const j of jids) out.set(j, aggregatePresence(j, sessions.get(j) ?? [], lastSeen.get(j) ?? null));
    return out;
  }

  async sessionsOf(jid: string): Promise<LiveSession[]> {
    return this.bus.sessionsOf(jid);
  }

  /** Whether `viewer` (a bare JID, or null for anonymous) may see `target`'s presence. */
  async canSee(viewer: string | null, target: string): Promise<boolean> {
    const t = await this.state(target);
    const v = this.viewerNeedsState(viewer, target) ? await this.state(viewer as string) : null;
    return this.visible(viewer, t, v);
  }

  /**
   * The presence `viewer` (null: anonymous) may see of `target`, or null when it may not see it or
   * `target` has no account: one answer for both, so no front door can be used to probe which accounts
   * exist. Synchronous when both accounts are in memory, which is the common case on a busy status
   * endpoint; otherwise a promise that loads them, doing the same loading for an unknown JID as for a
   * real one. `target` must be a normalised JID of a local domain.
   */
  visiblePresence(viewer: string | null, target: string): AccountPresence | null | Promise<AccountPresence | null> {
    if (viewer === null && !this.maybePublic(target)) return null;
    const t = this.states.get(target);
    const needViewer = this.viewerNeedsState(viewer, target);
    const v = needViewer ? this.states.get(viewer as string) : null;
    if (t === undefined || v === undefined) return this.visiblePresenceLoaded(viewer, target, needViewer);
    this.states.delete(target); // mark recently used, as state() does
    this.states.set(target, t);
    return t.exists && this.visible(viewer, t, v) ? t.presence : null;
  }

  private async visiblePresenceLoaded(viewer: string | null, target: string, needViewer: boolean): Promise<AccountPresence | null> {
    const t = await this.state(target);
    const v = needViewer ? await this.state(viewer as string) : null;
    return t.exists && this.visible(viewer, t, v) ? t.presence : null;
  }

  /**
   * Reads which accounts chose publicPresence, so that anonymous questions about the others are answered
   * from memory (see `publicity`). The composition root calls it once at start, before serving.
   */
  async loadPublicity(): Promise<void> {
    this.publicity = await this.store.listPublicPresenceChoices();
  }

  /** false when the account's presence is certainly not public; true when it may be (then ask its state). */
  private maybePublic(jid: string): boolean {
    if (this.publicity === null) return true;
    return this.publicity.get(jid) ?? this.opts.defaultPublicPresence;
  }

  private viewerNeedsState(viewer: string | null, target: string): boolean {
    return viewer !== null && viewer !== target && this.isLocalDomain(domainOf(viewer));
  }

  private visible(viewer: string | null, t: AccountState, v: AccountState | null): boolean {
    const target = t.jid;
    return canSeePresence({
      viewer,
      target,
      targetItemForViewer: viewer === null ? undefined : t.roster.stateOf(viewer),
      targetBlocksViewer: viewer !== null && t.blocks.has(viewer),
      viewerBlocksTarget: v !== null && v.blocks.has(target),
      targetPublic: typeof t.settings.publicPresence === 'boolean' ? t.settings.publicPresence : this.opts.defaultPublicPresence,
    });
  }

  /** Presence of every contact `jid` may see: what a client is given when it connects. */
  async contactsPresence(jid: string): Promise<AccountPresence[]> {
    const state = await this.state(jid);
    const candidates: string[] = [];
    state.roster.forEachWhere((s) => s.to, (c) => candidates.push(c));
    const visible: string[] = [];
    for (const c of candidates) if (await this.canSee(jid, c)) visible.push(c);
    return [...(await this.presenceOfMany(visible)).values()];
  }

  // ---------------------------------------------------------------- roster and subscriptions

  async roster(jid: string): Promise<RosterView> {
    const state = await this.state(jid);
    return { version: await this.store.getRosterVersion(jid), items: state.roster.items() };
  }

  async setRosterItem(owner: string, contactInput: string, name: string | null, groups: readonly string[]): Promise<RosterItem> {
    if ((name !== null && !isXmlSafeText(name)) || !groups.every(isXmlSafeText)) {
      throw new PresenceError('bad-request', 'roster name or group contains control characters or unpaired surrogates');
    }
    const contact = parseAccountJid(contactInput);
    if (contact === owner) throw new PresenceError('bad-request', 'an account cannot be its own contact');
    return this.rosterLock.run(owner, async () => {
      const state = await this.state(owner);
      // The subscription flags are kept as stored: another node may have changed them since this cache heard.
      const item = await this.store.updateRosterPair(owner, contact, (stored) => {
        const next: RosterItem = { owner, contact, name, groups: [...groups], state: stored?.state ?? NONE };
        return { put: [next], result: next };
      });
      state.roster.set(item);
      this.tellOthers({ kind: 'invalidate', jid: owner, parts: ['roster'] });
      this.bus.deliver(owner, { kind: 'roster', item, contact });
      return item;
    });
  }

  /** Removes a contact: cancels both directions of the subscription, then drops the item (RFC 6121 §2.5.2). */
  async removeRosterItem(owner: string, contactInput: string): Promise<boolean> {
    const contact = parseAccountJid(contactInput);
    const state = await this.state(owner);
    // As stored, not as cached: which directions to cancel may have changed on another node.
    const item = await this.store.getRosterItem(owner, contact);
    if (!item) return false;
    if (item.state.to || item.state.pendingOut) await this.subscription(owner, contact, 'unsubscribe');
    if (item.state.from || item.state.pendingIn || item.state.preApproved) await this.subscription(owner, contact, 'unsubscribed');
    await this.rosterLock.run(owner, async () => {
      await this.store.removeRosterItems([{ owner, contact }]);
      state.roster.delete(contact);
      this.tellOthers({ kind: 'invalidate', jid: owner, parts: ['roster'] });
    });
    this.bus.deliver(owner, { kind: 'roster', item: null, contact });
    return true;
  }

  /**
   * The user `owner` sends a subscription stanza of `type` to `contactInput`. Both rosters live here,
   * so both sides of RFC 6121's exchange are applied and stored together.
   */
  async subscription(owner: string, contactInput: string, type: SubType): Promise<SubState> {
    const contact = parseAccountJid(contactInput);
    if (contact === owner) throw new PresenceError('bad-request', 'an account cannot subscribe to itself');
    const local = this.isLocalDomain(domainOf(contact));
    if (!local) throw new PresenceError('not-allowed', `domain ${domainOf(contact)} is not served here (no federation)`);
    // An unknown local contact behaves like one who never answers: telling the sender it does not
    // exist would let anyone probe which accounts exist.
    const contactExists = await this.accountExists(contact);
    return this.rosterLock.runAll([owner, contact], async () => {
      const a = await this.state(owner);
      const b = contactExists ? await this.state(contact) : null;
      // Both items are read where they are written, in one transaction taken in turn with any other
      // node's change between the same two accounts: this node's cached rosters may not have heard of
      // that change yet, and flags computed from them would undo it (a watcher would stop being
      // told of the contact, and see a ghost when the contact's node dies).
      const { r, aItem, bItem, nextA, nextB, writes } = await this.store.updateRosterPair(owner, contact, (aStored, bStored) => {
        const aItem = aStored;
        const bItem = b === null ? undefined : bStored;
        const r = exchange({
          sender: aItem?.state,
          recipient: bItem?.state,
          type,
          senderBlocksRecipient: a.blocks.has(contact),
          recipientBlocksSender: b !== null && b.blocks.has(owner),
        });
        const writes: RosterItem[] = [];
        const nextA: RosterItem = { owner, contact, name: aItem?.name ?? null, groups: aItem?.groups ?? [], state: r.sender };
        const nextB: RosterItem = { owner: contact, contact: owner, name: bItem?.name ?? null, groups: bItem?.groups ?? [], state: r.recipient };
        // A pending-in request alone does not make a visible roster entry until it is answered, but we
        // keep it as an item so the request survives restarts.
        if (r.senderChanged || !aItem) writes.push(nextA);
        if (b && r.recipientChanged) writes.push(nextB);
        return { put: writes, result: { r, aItem, bItem, nextA, nextB, writes } };
      });
      a.roster.set(nextA);
      if (b && bItem !== undefined) b.roster.set(r.recipientChanged ? nextB : bItem);
      else if (b && r.recipientChanged) b.roster.set(nextB);
      for (const w of writes) this.tellOthers({ kind: 'invalidate', jid: w.owner, parts: ['roster'] });

      if (r.senderChanged || !aItem) {
        this.bus.deliver(owner, { kind: 'roster', item: nextA, contact });
        this.events.emit('subscription.changed', { owner, contact, state: nextA.state });
      }
      if (b && r.recipientChanged) {
        this.bus.deliver(contact, { kind: 'roster', item: nextB, contact: owner });
        this.events.emit('subscription.changed', { owner: contact, contact: owner, state: nextB.state });
      }
      if (b && r.deliverToRecipient) this.bus.deliver(contact, { kind: 'subscription', from: owner, type });
      if (r.autoReplied) this.bus.deliver(owner, { kind: 'subscription', from: contact, type: 'subscribed' });

      // Presence follows the `from` flags: whoever gained a subscriber sends its presence to it,
      // whoever lost one tells it "unavailable" (RFC 6121 §3.1.5, §3.2.2, §3.3.2).
      this.presenceAfterChange(a, contact, aItem?.state ?? NONE, r.sender);
      if (b) this.presenceAfterChange(b, owner, bItem?.state ?? NONE, r.recipient);
      return r.sender;
    });
  }

  private presenceAfterChange(owner: AccountState, contact: string, before: SubState, after: SubState): void {
    if (before.from === after.from || owner.blocks.has(contact)) return;
    const presence = after.from ? owner.presence : OFFLINE_MASK(owner.jid);
    this.bus.deliver(contact, { kind: 'presence', from: owner.jid, presence, session: null });
  }

  // ---------------------------------------------------------------- blocking (XEP-0191)

  async blocks(jid: string): Promise<string[]> {
    return [...(await this.state(jid)).blocks];
  }

  async block(owner: string, contactInput: string): Promise<boolean> {
    const contact = parseAccountJid(contactInput);
    if (contact === owner) throw new PresenceError('bad-request', 'an account cannot block itself');
    return this.rosterLock.run(owner, async () => {
      const state = await this.state(owner);
      if (state.blocks.has(contact)) return false;
      await this.store.addBlock(owner, contact);
      state.blocks = new Set([...state.blocks, contact]);
      this.tellOthers({ kind: 'invalidate', jid: owner, parts: ['blocks'] });
      this.events.emit('block.changed', { owner, contact, blocked: true });
      // The blocked contact sees the owner go unavailable, and the owner stops seeing the contact.
      if (state.roster.get(contact)?.state.from) {
        this.bus.deliver(contact, { kind: 'presence', from: owner, presence: OFFLINE_MASK(owner), session: null });
      }
      if (state.roster.get(contact)?.state.to) {
        this.bus.deliver(owner, { kind: 'presence', from: contact, presence: OFFLINE_MASK(contact), session: null });
      }
      return true;
    });
  }

  async unblock(owner: string, contactInput: string): Promise<boolean> {
    const contact = parseAccountJid(contactInput);
    return this.rosterLock.run(owner, async () => {
      const state = await this.state(owner);
      if (!state.blocks.has(contact)) return false;
      await this.store.removeBlock(owner, contact);
      const rest = new Set(state.blocks);
      rest.delete(contact);
      state.blocks = rest.size ? rest : NO_BLOCKS;
      this.tellOthers({ kind: 'invalidate', jid: owner, parts: ['blocks'] });
      this.events.emit('block.changed', { owner, contact, blocked: false });
      const item = state.roster.get(contact);
      if (item?.state.from) this.bus.deliver(contact, { kind: 'presence', from: owner, presence: state.presence, session: null });
      if (item?.state.to && (await this.canSee(owner, contact))) {
        this.bus.deliver(owner, { kind: 'presence', from: contact, presence: await this.presenceOf(contact), session: null });
      }
      return true;
    });
  }

  // ---------------------------------------------------------------- settings

  async settings(jid: string): Promise<AccountSettings> {
    return (await this.state(jid)).settings;
  }

  async updateSettings(jid: string, patch: Record<string, unknown>): Promise<AccountSettings> {
    const settings = await this.store.updateSettings(jid, patch);
    if (typeof settings.publicPresence === 'boolean') this.publicity?.set(jid, settings.publicPresence);
    else this.publicity?.delete(jid);
    const state = this.states.get(jid);
    if (state) state.settings = settings;
    this.tellOthers({ kind: 'invalidate', jid, parts: ['settings'] });
    return settings;
  }

  // ---------------------------------------------------------------- lifecycle

  localSessionCount(): number {
    let n = 0;
    for (const s of this.states.values()) n += s.local.size;
    return n;
  }

  /**
   * Ends every local session: connections are told why, watchers see them go offline and last-seen is
   * written, so a restart starts from the truth. Then the crash checkpoint is cleared: a clean stop
   * leaves nothing for the next start to recover.
   */
  async shutdown(reason = 'shutdown'): Promise<void> {
    this.closing = true;
    if (this.checkpointTimer) clearInterval(this.checkpointTimer);
    this.checkpointTimer = null;
    const sessions: Session[] = [];
    for (const s of this.states.values()) sessions.push(...s.local.values());
    for (const s of sessions) {
      const sink = s.sink;
      s.sink = null;
      sink?.close(reason);
    }
    await Promise.all(sessions.map((s) => this.closeSession(s, 'shutdown')));
    if (this.started) {
      await this.checkpointRun?.catch(() => {});
      await this.store.clearPresenceCheckpoints();
      this.checkpointed.clear();
    }
    if (this.ownPasswords) await this.passwords.close();
  }

  /**
   * Resolves once no session, presence, subscription or roster change that has started is still
   * running here (including its registry and store writes). Test harnesses wait for it on every node
   * before reading, on one node, what a client of another node just did.
   */
  async idle(): Promise<void> {
    await Promise.all([this.sessionLock.idle(), this.rosterLock.idle()]);
  }

  // ---------------------------------------------------------------- crash truth

  private started = false;

  /**
   * Called once by the server before it accepts connections. Rows left in the presence checkpoint mean
   * the last run did not stop cleanly: each account they name was online at the crash, and its last
   * seen becomes its last known activity (the checkpoint's last heard, with its last status), unless it
   * had already gone offline later than that. Then checkpoints start. Resolves with the recovered accounts.
   *
   * Bound: a checkpoint is written every `checkpointMs` for the accounts whose values changed, so a
   * crash loses at most one interval of last-heard precision, and an account that came online less
   * than one interval before the crash may not be recorded at all.
   */
  async start(): Promise<RecoveredAccount[]> {
    if (this.started) return [];
    this.started = true;
    const rows = await this.store.getPresenceCheckpoints();
    const recovered: RecoveredAccount[] = [];
    if (rows.length) {
      const known = await this.store.getLastSeenMany(rows.map((r) => r.jid));
      const updates: Array<{ jid: string; lastSeen: LastSeen }> = [];
      for (const r of rows) {
        const before = known.get(r.jid);
        // An account that went offline after the checkpoint (its row not yet deleted) already has the truth.
        if (before !== undefined && before.at >= r.lastHeard) continue;
        const lastSeen: LastSeen = { at: r.lastHeard, status: r.status };
        updates.push({ jid: r.jid, lastSeen });
        recovered.push({ jid: r.jid, lastSeen, reason: 'crash-recovery' });
      }
      await this.store.setLastSeenMany(updates);
      await this.store.clearPresenceCheckpoints();
      for (const u of updates) {
        const cached = this.states.get(u.jid);
        if (cached && !cached.presence.online) {
          cached.lastSeen = u.lastSeen;
          cached.presence = aggregatePresence(cached.jid, [], u.lastSeen);
        }
      }
    }
    const every = this.opts.checkpointMs ?? 0;
    if (every > 0 && !this.closing) {
      this.checkpointTimer = setInterval(() => void this.checkpointNow(), every);
      this.checkpointTimer.unref();
    }
    return recovered;
  }

  /**
   * Writes what changed since the last checkpoint: one transaction upserting the online accounts whose
   * online-since, last-heard or status moved, and deleting the rows of accounts no longer online.
   * Resolves when written; a run still writing makes the next one wait for it.
   */
  checkpointNow(): Promise<void> {
    if (this.checkpointRun) return this.checkpointRun;
    const run = this.writeCheckpoint().finally(() => {
      if (this.checkpointRun === run) this.checkpointRun = null;
    });
    this.checkpointRun = run;
    return run;
  }

  /** Called after each checkpoint written (upserted and deleted row counts); the server logs or counts it. */
  onCheckpoint: (written: number, deleted: number) => void = () => {};
  onCheckpointError: (err: unknown) => void = () => {};
  /** Called when writing an account's last seen failed (the server logs it). */
  onLastSeenError: (err: unknown, jid: string) => void = () => {};

  private async writeCheckpoint(): Promise<void> {
    const upserts: PresenceCheckpoint[] = [];
    const online = new Set<string>();
    for (const state of this.states.values()) {
      if (state.local.size === 0 || !state.presence.online) continue;
      online.add(state.jid);
      let heard = state.heardWhileOnline;
      for (const s of state.local.values()) {
        if (!s.presence.available) continue;
        const h = s.sink ? s.sink.lastReceived : (s.lastHeard ?? 0);
        if (h > heard) heard = h;
      }
      const row: PresenceCheckpoint = { jid: state.jid, onlineSince: state.onlineSince ?? this.now(), lastHeard: heard, status: state.presence.status };
      const was = this.checkpointed.get(state.jid);
      if (was && was.onlineSince === row.onlineSince && was.lastHeard === row.lastHeard && was.status === row.status) continue;
      upserts.push(row);
    }
    const deletes: string[] = [];
    for (const jid of this.checkpointed.keys()) if (!online.has(jid)) deletes.push(jid);
    if (upserts.length === 0 && deletes.length === 0) return;
    try {
      await this.store.writePresenceCheckpoints(upserts, deletes);
    } catch (err) {
      this.onCheckpointError(err);
      return;
    }
    for (const r of upserts) this.checkpointed.set(r.jid, r);
    for (const jid of deletes) this.checkpointed.delete(jid);
    this.onCheckpoint(upserts.length, deletes.length);
  }
}

const isSubscriber = (s: SubState): boolean => s.from;
const NO_BLOCKS: ReadonlySet<string> = new Set();

function checkPresenceInput(input: PresenceInput): Required<PresenceInput> {
  const show = input.show ?? 'available';
  if (!isShow(show)) throw new PresenceError('bad-request', `show must be one of chat, available, away, xa, dnd`);
  const status = input.status ?? null;
  if (status !== null && typeof status !== 'string') throw new PresenceError('bad-request', 'status must be a string or null');
  if (status !== null && status.length > MAX_STATUS_LENGTH) {
    throw new PresenceError('bad-request', `status longer than ${MAX_STATUS_LENGTH} characters`);
  }
  if (status !== null && !isXmlSafeText(status)) throw new PresenceError('bad-request', 'status contains control characters or unpaired surrogates');
  const priority = input.priority ?? 0;
  if (!validatePriority(priority)) throw new PresenceError('bad-request', 'priority must be an integer from -128 to 127');
  return { show, status, priority };
}

function sameSessionPresence(a: SessionPresence, b: SessionPresence): boolean {
  return a.available === b.available && a.show === b.show && a.status === b.status && a.priority === b.priority;
}

/** A presence delivery with only the fields that apply (every fan-out of one change shares the object). */
function presenceDelivery(
  from: string,
  presence: AccountPresence,
  session: SessionPresence | null,
  resourceOnly: boolean,
  reason: LeaveReason | null,
  version: number,
): Delivery {
  if (version === 0) {
    if (resourceOnly) return { kind: 'presence', from, presence, session, resourceOnly: true };
    return reason === null ? { kind: 'presence', from, presence, session } : { kind: 'presence', from, presence, session, reason };
  }
  if (resourceOnly) return { kind: 'presence', from, presence, session, resourceOnly: true, version };
  return reason === null ? { kind: 'presence', from, presence, session, version } : { kind: 'presence', from, presence, session, reason, version };
}

/** The presence part of a registry entry (what session events carry). */
function presenceOnly(s: LiveSession): SessionPresence {
  return { resource: s.resource, available: s.available, show: s.show, status: s.status, priority: s.priority, lastActive: s.lastActive };
}

function sessionFrom(resource: string, p: Required<PresenceInput>, now: number): SessionPresence {
  return { resource, available: true, show: p.show, status: p.status, priority: p.priority, lastActive: now };
}
