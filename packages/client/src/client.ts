import { backoffDelay, RECONNECT_DEFAULTS, type ReconnectOptions } from './backoff.js';
import { PresencedConnection, type CloseInfo, type Push } from './connection.js';
import { Emitter } from './emitter.js';
import { PresencedError } from './errors.js';
import { contactPresence, maskedPresence, ownPresence, rosterItem, samePresence, sameRosterItem, subscriptionState } from './wire.js';
import type {
  ContactPresence,
  OwnPresence,
  PresenceInput,
  RosterChange,
  RosterItem,
  SubscriptionEvent,
  SubscriptionState,
  WebSocketConstructor,
} from './types.js';

export interface HeartbeatOptions {
  /** How often the client pings the server. Default 25 s. */
  readonly intervalMs?: number;
  /** A ping unanswered for this long means the connection is dead: it is dropped and reconnected. Default 10 s. */
  readonly timeoutMs?: number;
}

export interface ClientOptions {
  /** The server's native endpoint, e.g. `ws://127.0.0.1:5280/ws`. */
  readonly url: string;
  /** The account, `local@domain`. Required with `password`; optional with `token`. */
  readonly jid?: string;
  readonly password?: string;
  /** A login token from the admin REST API (`POST /api/v1/accounts/{jid}/tokens`). */
  readonly token?: string;
  /**
   * This device's resource. Omitted: the server picks one at the first login and the client keeps it
   * for reconnects, so the session continues through the server's grace period.
   */
  readonly resource?: string;
  /** Presence at login. Default `{ show: 'available' }`; `false` connects without being available. */
  readonly presence?: PresenceInput | false;
  /** A WebSocket implementation; needed in Node.js 20 (e.g. `WebSocket` from the `ws` package). */
  readonly WebSocket?: WebSocketConstructor;
  /** Reconnect after a lost connection; `false` to never reconnect. */
  readonly reconnect?: ReconnectOptions | false;
  /** Client pings to detect half-open connections; `false` to rely on the server's pings only. */
  readonly heartbeat?: HeartbeatOptions | false;
  /** A request unanswered for this long rejects with `timeout`. Default 15 s. */
  readonly requestTimeoutMs?: number;
  /** Opening the socket may take this long. Default 10 s. */
  readonly connectTimeoutMs?: number;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export interface ConnectedEvent {
  readonly jid: string;
  readonly resource: string;
  /** True after a reconnect (the client re-sent your presence and re-synced contacts and roster). */
  readonly reconnected: boolean;
}

export interface DisconnectedEvent {
  /** The WebSocket close code (1006 when the connection was lost or abandoned). */
  readonly code: number;
  /** The server's `closing` reason (`shutdown`, `replaced`, `account-removed`) or the close reason. */
  readonly reason: string;
  readonly willReconnect: boolean;
}

export interface ReconnectingEvent {
  /** 1 for the first attempt after a loss. */
  readonly attempt: number;
  readonly delayMs: number;
}

export interface ClientEvents {
  connected: ConnectedEvent;
  disconnected: DisconnectedEvent;
  reconnecting: ReconnectingEvent;
  /** A contact's presence changed (also for changes that happened while disconnected, after a reconnect). */
  presence: ContactPresence;
  roster: RosterChange;
  subscription: SubscriptionEvent;
  /** Someone asked to see your presence; answer with approve() or deny(). */
  subscriptionRequest: { readonly from: string };
  /** Errors that reject no promise: a failed re-login (auth-failed ends reconnecting), a frame the server could not read. */
  error: PresencedError;
  /** A notification for you from the server (its notify API), while you are connected. */
  notification: ServerNotification;
}

interface AuthResult {
  jid: string;
  resource: string;
  presence: unknown;
  contacts: unknown[];
}

/** Closing reasons after which reconnecting would be wrong: another login took over, or the account is gone. */
const FINAL_REASONS = new Set(['replaced', 'account-removed']);
/** 1008: the server refused us by policy (flooding, failed logins); retrying would repeat it. */
const POLICY_CLOSE = 1008;

/**
 * A presenced client: logs in, keeps your presence, and keeps a live view of your contacts' presence
 * (`contacts`) and your roster (`roster`) through disconnects, reconnecting with backoff.
 */
export class PresencedClient extends Emitter<ClientEvents> {
  private readonly opts: ClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly requestTimeoutMs: number;
  private readonly contactMap = new Map<string, ContactPresence>();
  private readonly rosterMap = new Map<string, RosterItem>();
  private conn: PresencedConnection | null = null;
  private _state: ClientState = 'idle';
  private _jid: string | null = null;
  private _resource: string | null = null;
  /** The presence to (re-)send at login: the last one the app set and the server did not refuse. */
  private desired: PresenceInput | false;
  private attempt = 0;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  private pinging = false;
  private closingReason: string | null = null;
  private waiters: Array<{ resolve(): void; reject(e: PresencedError): void }> = [];
  private rosterVersion = 0;

  constructor(options: ClientOptions) {
    super();
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) throw new TypeError('no global WebSocket here (Node.js 20): pass one, e.g. { WebSocket } from the "ws" package');
    if (options.password === undefined && options.token === undefined) throw new TypeError('give a password or a token');
    if (options.password !== undefined && options.jid === undefined) throw new TypeError('a password login needs a jid');
    this.opts = options;
    this.WS = WS;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 15_000;
    this.desired = options.presence ?? {};
  }

  get state(): ClientState {
    return this._state;
  }

  /** Your account's bare JID, once logged in. */
  get jid(): string | null {
    return this._jid;
  }

  /** This session's resource, once logged in. */
  get resource(): string | null {
    return this._resource;
  }

  /** The presence this client holds for you (re-sent after every reconnect); false when unavailable. */
  get presence(): PresenceInput | false {
    return this.desired;
  }

  /**
   * The presence of every contact you may see, by bare JID. Up to date while `state` is `connected`;
   * after a reconnect, `presence` events tell what changed meanwhile.
   */
  get contacts(): ReadonlyMap<string, ContactPresence> {
    return this.contactMap;
  }

  /** Your roster by contact JID (including contacts who asked to see you: `pendingIn`). */
  get roster(): ReadonlyMap<string, RosterItem> {
    return this.rosterMap;
  }

  // ---------------------------------------------------------------- connecting

  /**
   * Logs in. Resolves once the contacts' presence and the roster are loaded. A first login that fails
   * rejects (with `auth-failed`, or `disconnected` when the server cannot be reached) and is not
   * retried; once logged in, lost connections are reconnected automatically.
   */
  async connect(): Promise<ConnectedEvent> {
    if (this._state !== 'idle' && this._state !== 'closed') throw new PresencedError('conflict', `connect() while ${this._state}`);
    this.setState('connecting');
    this.closingReason = null;
    try {
      return await this.login(false);
    } catch (e) {
      this.setState('closed');
      this.failWaiters(toError(e));
      throw e;
    }
  }

  /** Says goodbye (`bye`): the session ends at once for your contacts. No reconnect follows. */
  async close(): Promise<void> {
    const conn = this.conn;
    this.stopTimers();
    if (this._state === 'closed' || this._state === 'idle') return;
    const wasConnected = this._state === 'connected';
    this.setState('closed');
    this.failWaiters(new PresencedError('disconnected', 'client closed'));
    if (conn) {
      if (conn.isOpen) {
        try {
          await conn.request('bye', {}, Math.min(this.requestTimeoutMs, 5_000));
        } catch {
          // gone already, or not answering: close anyway
        }
        conn.close(1000, 'bye');
        await closedWithin(conn, 5_000);
      } else {
        conn.abandon('client closed');
      }
    }
    this.conn = null;
    if (wasConnected) this.emit('disconnected', { code: 1000, reason: 'closed by client', willReconnect: false });
  }

  private async login(reconnected: boolean): Promise<ConnectedEvent> {
    const conn = await PresencedConnection.open(this.opts.url, this.WS, this.opts.connectTimeoutMs ?? 10_000);
    if (this.isClosed()) {
      conn.abandon('client closed');
      throw new PresencedError('disconnected', 'client closed');
    }
    this.conn = conn;
    this.closingReason = null;
    conn.onPush = (p) => this.onPush(p);
    conn.onStrayError = (e) => this.emit('error', e);
    conn.onClose = (info) => this.onConnectionClosed(conn, info);

    const auth: Record<string, unknown> = { presence: this.desired };
    if (this.opts.token !== undefined) auth.token = this.opts.token;
    else auth.password = this.opts.password;
    if (this.opts.jid !== undefined) auth.jid = this.opts.jid;
    const resource = this._resource ?? this.opts.resource;
    if (resource !== undefined) auth.resource = resource;

    let rosterResult: { version?: unknown; items?: unknown };
    try {
      const r = await conn.request<AuthResult>('auth', auth, this.requestTimeoutMs);
      this._jid = r.jid;
      this._resource = r.resource;
      this.syncContacts(Array.isArray(r.contacts) ? r.contacts : []);
      rosterResult = await conn.request('roster.get', {}, this.requestTimeoutMs);
    } catch (e) {
      conn.abandon('login failed');
      throw e;
    }
    if (this.isClosed() || conn !== this.conn) {
      // close() was called, or the socket dropped, while we were loading
      conn.abandon('client closed');
      throw new PresencedError('disconnected', 'connection ended during login');
    }
    this.syncRoster(rosterResult);
    this.attempt = 0;
    this.setState('connected');
    this.startHeartbeat(conn);
    const ev: ConnectedEvent = { jid: this._jid, resource: this._resource, reconnected };
    this.emit('connected', ev);
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w.resolve();
    return ev;
  }

  private onConnectionClosed(conn: PresencedConnection, info: CloseInfo): void {
    if (conn !== this.conn) return;
    this.conn = null;
    this.stopTimers();
    // Only a live session is reconnected from here; a failed login attempt is retried by its caller.
    if (this._state !== 'connected') return;
    const reason = this.closingReason ?? (info.reason || 'connection lost');
    this.closingReason = null;
    const final = FINAL_REASONS.has(reason) || info.code === POLICY_CLOSE || this.opts.reconnect === false;
    if (final) {
      this.setState('closed');
      this.failWaiters(new PresencedError('disconnected', `disconnected: ${reason}`));
      this.emit('disconnected', { code: info.code, reason, willReconnect: false });
      return;
    }
    this.setState('reconnecting');
    this.emit('disconnected', { code: info.code, reason, willReconnect: true });
    this.scheduleReconnect();
  }

  private scheduleReconnect(immediately = false): void {
    if (this._state !== 'reconnecting') return;
    this.attempt++;
    const opts = this.opts.reconnect === false ? RECONNECT_DEFAULTS : this.opts.reconnect;
    const delayMs = immediately ? 0 : backoffDelay(this.attempt, opts);
    this.emit('reconnecting', { attempt: this.attempt, delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      if (this._state === 'reconnecting') this.login(true).catch((e: unknown) => this.onReconnectFailed(e));
    }, delayMs);
  }

  private onReconnectFailed(e: unknown): void {
    if (this._state !== 'reconnecting') return;
    const err = toError(e);
    if (err.code === 'auth-failed') {
      // The password changed or the token expired: retrying cannot help, the app must log in again.
      this.setState('closed');
      this.failWaiters(err);
      this.emit('error', err);
      return;
    }
    this.scheduleReconnect();
  }

  /**
   * Reconnects now instead of waiting for the backoff delay, e.g. when the device's network came back
   * (`online` event in browsers). On a live connection it does nothing.
   */
  reconnectNow(): void {
    if (this._state !== 'reconnecting' || this.reconnectTimer === null) return;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.attempt = 0;
    this.scheduleReconnect(true);
  }

  private startHeartbeat(conn: PresencedConnection): void {
    const hb = this.opts.heartbeat;
    if (hb === false) return;
    const intervalMs = hb?.intervalMs ?? 25_000;
    const timeoutMs = hb?.timeoutMs ?? 10_000;
    this.heartbeatTimer = setInterval(() => {
      if (this.pinging || conn !== this.conn) return;
      this.pinging = true;
      conn
        .request('ping', {}, timeoutMs)
        .catch((e: unknown) => {
          // No answer: the connection is half-open (a NAT or a sleeping laptop dropped it silently).
          if (toError(e).code === 'timeout' && conn === this.conn) conn.abandon('heartbeat timeout');
        })
        .finally(() => {
          this.pinging = false;
        });
    }, intervalMs);
  }

  private stopTimers(): void {
    if (this.heartbeatTimer !== null) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.pinging = false;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** A method, not a comparison: TypeScript would keep a narrowing of `_state` across an await. */
  private isClosed(): boolean {
    return this._state === 'closed';
  }

  private setState(s: ClientState): void {
    this._state = s;
  }

  private failWaiters(e: PresencedError): void {
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w.reject(e);
  }

  // ---------------------------------------------------------------- keeping the view

  private onPush(p: Push): void {
    switch (p.type) {
      case 'presence': {
        const c = contactPresence(p);
        if (!c) return;
        if (c.jid !== this._jid) this.contactMap.set(c.jid, c);
        this.emit('presence', c);
        return;
      }
      case 'roster': {
        if (typeof p.removed === 'string') {
          this.removeRosterItemLocally(p.removed);
          return;
        }
        const item = rosterItem(p.item);
        if (item) {
          this.rosterMap.set(item.jid, item);
          this.emit('roster', { kind: 'changed', item });
        }
        return;
      }
      case 'subscription': {
        if (typeof p.from !== 'string' || typeof p.kind !== 'string') return;
        const ev = { from: p.from, kind: p.kind } as SubscriptionEvent;
        this.emit('subscription', ev);
        if (ev.kind === 'subscribe') this.emit('subscriptionRequest', { from: ev.from });
        return;
      }
      case 'closing':
        if (typeof p.reason === 'string') this.closingReason = p.reason;
        return;
      case 'notification': {
        if (typeof p.id !== 'string' || typeof p.body !== 'string') return;
        const data = typeof p.data === 'object' && p.data !== null && !Array.isArray(p.data) ? (p.data as Record<string, string>) : undefined;
        this.emit('notification', { id: p.id, body: p.body, ...(typeof p.title === 'string' ? { title: p.title } : {}), ...(data !== undefined ? { data } : {}) });
        return;
      }
    }
  }

  /** Applies a full snapshot of the contacts' presence, emitting an event for each difference. */
  private syncContacts(raw: readonly unknown[]): void {
    const seen = new Set<string>();
    for (const r of raw) {
      const c = contactPresence(r);
      if (!c) continue;
      seen.add(c.jid);
      const before = this.contactMap.get(c.jid);
      this.contactMap.set(c.jid, c);
      if (!before || !samePresence(before, c)) this.emit('presence', c);
    }
    // Contacts missing from the snapshot are ones we may no longer see: shown as the server shows them.
    for (const [jid, before] of this.contactMap) {
      if (seen.has(jid)) continue;
      const masked = maskedPresence(jid);
      this.contactMap.set(jid, masked);
      if (!samePresence(before, masked)) this.emit('presence', masked);
    }
  }

  /** Applies a full roster, emitting a `roster` event for every item added, changed or removed. */
  private syncRoster(r: { version?: unknown; items?: unknown }): RosterItem[] {
    if (typeof r.version === 'number') this.rosterVersion = r.version;
    const items = (Array.isArray(r.items) ? r.items : []).map(rosterItem).filter((i): i is RosterItem => i !== null);
    const seen = new Set<string>();
    for (const item of items) {
      seen.add(item.jid);
      const before = this.rosterMap.get(item.jid);
      this.rosterMap.set(item.jid, item);
      if (!before || !sameRosterItem(before, item)) this.emit('roster', { kind: 'changed', item });
    }
    for (const jid of [...this.rosterMap.keys()]) if (!seen.has(jid)) this.removeRosterItemLocally(jid);
    return items;
  }

  private removeRosterItemLocally(jid: string): void {
    const had = this.rosterMap.delete(jid);
    // Without a roster item there is no subscription, so no presence to keep.
    this.contactMap.delete(jid);
    if (had) this.emit('roster', { kind: 'removed', jid });
  }

  // ---------------------------------------------------------------- requests

  /**
   * Sends any request of the protocol and resolves with its `result`. While reconnecting it waits for
   * the connection (up to the request timeout); when closed it rejects with `disconnected`.
   */
  async request<T = unknown>(type: string, body: Record<string, unknown> = {}): Promise<T> {
    if (this._state === 'idle' || this._state === 'closed') throw new PresencedError('disconnected', `not connected (${type})`, type);
    if (this._state !== 'connected') await this.whenConnected(type);
    const conn = this.conn;
    if (!conn) throw new PresencedError('disconnected', `not connected (${type})`, type);
    return conn.request<T>(type, body, this.requestTimeoutMs);
  }

  private whenConnected(type: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(new PresencedError('timeout', `not reconnected within ${this.requestTimeoutMs} ms (${type})`, type));
      }, this.requestTimeoutMs);
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (e: PresencedError) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.waiters.push(waiter);
    });
  }

  /**
   * Sets this session's presence; it is remembered and re-sent after every reconnect. Each call
   * replaces the whole presence: omitted fields take their defaults.
   */
  async setPresence(presence: PresenceInput = {}): Promise<OwnPresence> {
    const previous = this.desired;
    this.desired = { ...presence };
    try {
      return ownPresence(await this.request('presence', { ...presence }));
    } catch (e) {
      // A presence the server refused must not be re-sent at the next login, where it would fail it.
      if (toError(e).fromServer && this.desired !== previous) this.desired = previous;
      throw e;
    }
  }

  /** Loads the roster from the server (it is also kept up to date in `roster`). */
  async getRoster(): Promise<RosterItem[]> {
    return this.syncRoster(await this.request('roster.get'));
  }

  /** The roster version the server reported last; it grows with every change. */
  get rosterVersionSeen(): number {
    return this.rosterVersion;
  }

  /** Adds or renames a contact without changing the subscription. */
  async setRosterItem(jid: string, fields: { name?: string | null; groups?: readonly string[] } = {}): Promise<RosterItem> {
    const r = await this.request<{ item: unknown }>('roster.set', { jid, name: fields.name ?? null, groups: fields.groups ?? [] });
    const item = rosterItem(r.item);
    if (!item) throw new PresencedError('internal', 'malformed roster item in answer', 'roster.set');
    return item;
  }

  /** Removes a contact, cancelling the subscription both ways. Resolves false if it was not there. */
  async removeRosterItem(jid: string): Promise<boolean> {
    return (await this.request<{ removed: boolean }>('roster.remove', { jid })).removed === true;
  }

  /** Asks to see a contact's presence (adding it to the roster, with a name and groups if given). */
  subscribe(jid: string, fields: { name?: string | null; groups?: readonly string[] } = {}): Promise<SubscriptionState> {
    const body: Record<string, unknown> = { jid };
    if (fields.name !== undefined) body.name = fields.name;
    if (fields.groups !== undefined) body.groups = fields.groups;
    return this.subscriptionRequest('subscribe', body);
  }

  /** Lets a contact see your presence (answers their request, or pre-approves one). */
  approve(jid: string): Promise<SubscriptionState> {
    return this.subscriptionRequest('approve', { jid });
  }

  /** Refuses a request, or stops a contact seeing your presence. */
  deny(jid: string): Promise<SubscriptionState> {
    return this.subscriptionRequest('deny', { jid });
  }

  /** Stops seeing a contact's presence. */
  unsubscribe(jid: string): Promise<SubscriptionState> {
    return this.subscriptionRequest('unsubscribe', { jid });
  }

  private async subscriptionRequest(type: string, body: Record<string, unknown>): Promise<SubscriptionState> {
    return subscriptionState(await this.request(type, body));
  }

  /** Blocks a contact: they see you offline and you see nothing of them. Resolves whether anything changed. */
  async block(jid: string): Promise<boolean> {
    return (await this.request<{ changed: boolean }>('block', { jid })).changed === true;
  }

  async unblock(jid: string): Promise<boolean> {
    return (await this.request<{ changed: boolean }>('unblock', { jid })).changed === true;
  }

  async getBlocks(): Promise<string[]> {
    const r = await this.request<{ jids: unknown }>('blocks.get');
    return Array.isArray(r.jids) ? r.jids.filter((j): j is string => typeof j === 'string') : [];
  }

  /** The third-party apps you let see your presence (servers with the apps feature; others reject with `unknown-type`). */
  async listApps(): Promise<ConnectedApp[]> {
    const r = await this.request<{ apps: unknown }>('apps.list');
    return Array.isArray(r.apps) ? (r.apps as ConnectedApp[]) : [];
  }

  /** Revokes an app's access: when this resolves, the app gets nothing more about you and its tokens are dead. */
  async revokeApp(app: string): Promise<void> {
    await this.request('apps.revoke', { app });
  }

  /** The current presence of the contacts you may see (all, or those listed), straight from the server. */
  async getPresence(jids?: readonly string[]): Promise<ContactPresence[]> {
    const r = await this.request<{ contacts: unknown }>('presence.get', jids === undefined ? {} : { jids: [...jids] });
    return (Array.isArray(r.contacts) ? r.contacts : []).map(contactPresence).filter((c): c is ContactPresence => c !== null);
  }

  /**
   * Registers this device for push notifications (the server wakes it through `provider` while this
   * session is offline or away). Web Push: pass the browser's PushSubscription (its toJSON()) as
   * `subscription`. Registering the same token again, or a new token from the same resource, replaces
   * the old registration. Servers without push configured reject with `unsupported`.
   */
  async registerPush(reg: PushRegistrationInput): Promise<PushRegistration> {
    const body: Record<string, unknown> = { provider: reg.provider };
    if (reg.token !== undefined) body.token = reg.token;
    if (reg.secondToken !== undefined) body.secondToken = reg.secondToken;
    if (reg.subscription !== undefined) body.subscription = { endpoint: reg.subscription.endpoint, keys: { p256dh: reg.subscription.keys.p256dh, auth: reg.subscription.keys.auth } };
    const r = await this.request<{ registration: PushRegistration }>('push.register', body);
    return r.registration;
  }

  /** Removes a push registration of your account, by its id (from listPush) or its token; resolves with how many were removed. */
  async unregisterPush(which: { readonly registration: string } | { readonly token: string }): Promise<number> {
    const r = await this.request<{ removed?: unknown }>('push.unregister', 'registration' in which ? { registration: which.registration } : { token: which.token });
    return typeof r.removed === 'number' ? r.removed : 0;
  }

  /** Your account's push registrations (every device), with their health: failures, last success, disabled and why. */
  async listPush(): Promise<PushRegistration[]> {
    const r = await this.request<{ registrations: unknown }>('push.list');
    return Array.isArray(r.registrations) ? (r.registrations as PushRegistration[]) : [];
  }

  /**
   * MigratoryData's name for registering this device's push token (`provider` is the name the server
   * configured, e.g. `fcm`, `apns`): registerPush({provider, token}). Servers without push configured
   * reject with `unsupported`.
   */
  async setExternalToken(provider: string, token: string): Promise<void> {
    await this.registerPush({ provider, token });
  }

  /** A round trip to the server; resolves with the server's clock. */
  async ping(): Promise<Date> {
    const r = await this.request<{ time?: unknown }>('ping');
    return typeof r.time === 'string' ? new Date(r.time) : new Date();
  }
}

function toError(e: unknown): PresencedError {
  return e instanceof PresencedError ? e : new PresencedError('disconnected', e instanceof Error ? e.message : String(e));
}

/** Waits for the closing handshake, abandoning the socket if the server never completes it. */
function closedWithin(conn: PresencedConnection, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      conn.abandon('close timed out');
      resolve();
    }, ms);
    void conn.whenClosed.then(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** A notification the server sent you (its notify API). */
export interface ServerNotification {
  readonly id: string;
  readonly title?: string;
  readonly body: string;
  readonly data?: Readonly<Record<string, string>>;
}

/** What registerPush takes: a token, or for Web Push the browser's subscription. */
export interface PushRegistrationInput {
  /** The provider's name as the server configured it. */
  readonly provider: string;
  readonly token?: string;
  /** APNs: a VoIP token or another second token. */
  readonly secondToken?: string;
  readonly subscription?: { readonly endpoint: string; readonly keys: { readonly p256dh: string; readonly auth: string } };
}

/** A push registration as `push.list` shows it. */
export interface PushRegistration {
  readonly id: string;
  readonly provider: string;
  /** The last characters of the token, to tell devices apart. */
  readonly tokenHint: string;
  /** The resource it was registered from. */
  readonly resource: string | null;
  /** Registered from this connection's resource. */
  readonly current: boolean;
  readonly source: 'native' | 'xmpp';
  /** ISO 8601. */
  readonly createdAt: string;
  readonly updatedAt: string;
  readonly lastSuccessAt: string | null;
  /** Consecutive failed pushes. */
  readonly failures: number;
  readonly lastError: string | null;
  /** Set when the server stopped pushing to it after too many failures; register the token again to resume. */
  readonly disabled: { readonly at: string; readonly reason: string | null } | null;
}

/** An app with access to your presence, as `apps.list` gives it. */
export interface ConnectedApp {
  readonly app: string;
  readonly name: string;
  /** The app's proven domain, or null: unverified. */
  readonly verifiedDomain: string | null;
  readonly scopes: readonly string[];
  /** ISO 8601. */
  readonly grantedAt: string;
  readonly lastDeliveryAt: string | null;
}
