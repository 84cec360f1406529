import { randomBytes } from 'node:crypto';
import { createClient } from 'redis';
import type { Logger } from 'pino';
import { PresenceError } from '../../core/errors.js';
import type {
  AccountSessions,
  BusStats,
  ClusterEvent,
  ClusterHandler,
  ClusterNote,
  Delivery,
  DeliveryHandler,
  LiveSession,
  PeerEvent,
  PeerHandler,
  PresenceBus,
} from '../../ports/bus.js';
import { PEER_ACK_TIMEOUT_MS } from '../../ports/bus.js';
import { BusKeys, incarnation, NODE_ID_PATTERN } from './keys.js';
import { RegistryMirror } from './mirror.js';
import { DeliveryOutbox, type OutgoingBatch } from './outbox.js';
import { SCRIPTS, type Script } from './scripts.js';
import { encodeEntry, isDelivery, liveOf, parseBatch, parseFeed, toSessions, type Entry, type FeedMessage } from './wire.js';

export interface RedisBusOptions {
  /** redis://[user:password@]host:port[/db] (or rediss:// for TLS). */
  readonly url: string;
  /** This node's id (config node_id): stable per node, unique in the cluster. */
  readonly node: string;
  /** How long a node's lease lasts without renewal (config node_lease_ms). */
  readonly leaseMs: number;
  /** Key and channel prefix; several deployments (or tests) can share one Redis under different prefixes. */
  readonly prefix?: string;
  readonly log?: Logger;
  /** Longest a registry write may take before Redis counts as unreachable. Default: a third of the lease, at most 2 s. */
  readonly commandTimeoutMs?: number;
  /** Longest start() waits for Redis. Default 10 s. */
  readonly connectTimeoutMs?: number;
}

type Client = ReturnType<typeof createClient>;
type State = 'starting' | 'ready' | 'degraded' | 'fenced' | 'closing' | 'closed';

/** Deliveries kept for other nodes while Redis is unreachable; beyond this the oldest go and the engine re-announces. */
const BACKLOG_MAX_ITEMS = 100_000;
/** Delivery batches kept per node stream: a node that stops reading (dead, paused) costs at most this. */
const INBOX_MAXLEN = '10000';
/** A node's stream outlives its last batch this long, then Redis drops it (nodes that are gone for good). */
const INBOX_TTL_MS = '600000';
/** The meta hash (version, fences) of an account outlives its last change this long. */
const META_TTL_MS = '86400000';
/** Reaper claims last this long, and are extended while the reaper works. */
const CLAIM_TTL_MS = 30_000;
const REAP_CONCURRENCY = 32;
/** How long a registry change waits to come back through the feed (see waitEcho) before going on without it. */
const ECHO_TIMEOUT_MS = 1_000;
const DEAD_REMEMBERED = 1_000;
/** Cache notes kept while Redis is unreachable; beyond this every node's engine re-reads its cached rosters. */
const NOTES_KEPT = 10_000;
/** Feature messages kept while Redis is unreachable; beyond this every node's features read their state again. */
const PEER_MESSAGES_KEPT = 10_000;

/**
 * The PresenceBus of a cluster, on Redis (docs/cluster.md). In short:
 *
 * - The registry lives in Redis, one hash per account, changed by Lua scripts that check the writer's
 *   epoch against the account's fences and publish the account's new session list on the feed. Every
 *   node keeps a replica of the whole registry (RegistryMirror) from the feed, so routing and presence
 *   queries never wait for Redis.
 * - Deliveries for sessions on other nodes are gathered per destination node for one event-loop tick
 *   and appended to that node's stream (one XADD per destination per tick); local ones are direct calls.
 * - Each node holds a lease with an epoch from a cluster-wide counter. Nodes sweep the leases; a lapsed
 *   one is declared dead atomically, and one node (a claim) declares its sessions offline through the
 *   engine, fencing each account off from the dead epoch first, so a paused node that comes back cannot
 *   write anything back: it finds itself fenced, drops every session and joins again under a new epoch.
 * - When Redis is unreachable, changes of existing sessions are applied here and registered again when
 *   it is back (new logins are refused meanwhile); the replica is rebuilt, and the engine told.
 */
export class RedisBus implements PresenceBus {
  readonly node: string;
  readonly stats: BusStats = {
    batchesSent: 0,
    remoteDeliveries: 0,
    remoteQueued: 0,
    deliveriesReceived: 0,
    leaseRenewFailures: 0,
    fenced: 0,
    writesRefused: 0,
    nodesDeclaredDown: 0,
    sessionsDeclaredOffline: 0,
    resyncs: 0,
    connected: 0,
  };

  private readonly keys: BusKeys;
  private readonly leaseMs: number;
  private readonly commandTimeoutMs: number;
  private readonly log: Logger | undefined;
  private readonly cmd: Client;
  private readonly sub: Client;
  private readonly reader: Client;
  private state: State = 'starting';
  private epoch = '';
  private runId = '';
  /** Local clock time until which the lease is surely ours (sent time of the last successful renewal + lease). */
  private leaseValidUntil = 0;
  /** No sweeping before this: after a reconnect the others need one lease period to renew theirs. */
  private sweepAfter = 0;

  private readonly mirror = new RegistryMirror();
  /** The sessions this node holds, by account and resource: what it registers again after Redis lost them. */
  private readonly own = new Map<string, Map<string, LiveSession>>();
  /** Accounts in this incarnation's index. */
  private readonly indexed = new Set<string>();
  /** Accounts whose sessions here changed while the registry could not be written. */
  private readonly dirty = new Set<string>();
  private readonly outbox: DeliveryOutbox;
  private backlog: OutgoingBatch[] = [];
  private backlogItems = 0;
  private lostDeliveries = false;
  private notesWaiting: ClusterNote[] = [];
  private lostNotes = false;
  private peerWaiting: Array<{ readonly topic: string; readonly payload: unknown }> = [];
  private lostPeerMessages = false;
  /** The feed was interrupted (or this node fenced): the features are told to read again once it is back. */
  private peerMissed = false;
  /** Until the features are there to handle them, other nodes' messages are acknowledged as handled (there is nothing to update). */
  private peer: PeerHandler = (e) => {
    if (e.kind === 'message') e.done();
  };
  /** Feature messages of this node waiting for other nodes' acknowledgements, by id. */
  private readonly acks = new Map<string, { readonly pending: Set<string>; readonly done: () => void }>();
  private flushScheduled = false;
  private readonly echoWaiters = new Map<string, Array<{ v: number; done: () => void }>>();
  /** Feed messages received while a snapshot is read (null otherwise). */
  private feedBuffer: FeedMessage[] | null = null;
  /** Markers of this node on their way through the feed, by key. */
  private readonly markerWaiters = new Map<string, () => void>();
  /** Engine handlers of cluster events still running (a note re-reading the store, a reap). */
  private readonly handling = new Set<Promise<unknown>>();
  /** Incarnations declared dead: their batches still in flight are dropped. */
  private readonly deadIncarnations = new Set<string>();
  private readonly reaping = new Set<string>();
  /** The feed subscription was interrupted since the mirror was last rebuilt (its messages may be lost). */
  private feedLost = false;
  /** The epoch each node's entries last carried: what a node's sessions are fenced under if Redis forgot them. */
  private readonly nodeEpochs = new Map<string, string>();
  /**
   * Sessions of other nodes that a rebuild of the mirror found gone without a word (Redis lost its
   * data): if their node does not come back within a lease, they are declared offline like a dead node's.
   */
  private readonly vanished = new Map<string, { epoch: string; at: number; accounts: Map<string, LiveSession[]> }>();
  private readonly chains = new Map<string, Promise<unknown>>();
  private recovering: Promise<void> | null = null;
  private recoverAgain = false;
  private retryTimer: NodeJS.Timeout | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  private sweepTimer: NodeJS.Timeout | null = null;
  private renewing: Promise<string> | null = null;
  private inboxLastId = '0-0';
  private lastTrim = 0;
  private readerDone: Promise<void> = Promise.resolve();
  private handler: DeliveryHandler = () => {};
  private cluster: ClusterHandler = () => {};
  private loggedDown = false;

  private constructor(opts: RedisBusOptions) {
    if (!NODE_ID_PATTERN.test(opts.node)) throw new Error(`node_id "${opts.node}" must be 1-100 characters of A-Z a-z 0-9 . _ : -`);
    this.node = opts.node;
    this.keys = new BusKeys(opts.prefix ?? 'pd');
    this.leaseMs = opts.leaseMs;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? Math.min(2_000, Math.max(200, Math.floor(opts.leaseMs / 3)));
    this.log = opts.log;
    this.outbox = new DeliveryOutbox(this.node, () => this.epoch);
    const base = {
      url: opts.url,
      // A command while Redis is unreachable fails at once (we decide what to do), instead of queueing.
      disableOfflineQueue: true,
      socket: { connectTimeout: 2_000, reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, 1_000) },
    };
    this.cmd = createClient(base);
    this.sub = createClient(base);
    this.reader = createClient(base);
    for (const [name, c] of [['commands', this.cmd], ['feed', this.sub], ['inbox', this.reader]] as const) {
      c.on('error', (err: Error) => this.connectionError(name, err));
    }
    this.cmd.on('ready', () => this.connectionBack());
    this.sub.on('ready', () => this.connectionBack());
    this.cmd.on('reconnecting', () => this.connectionLost());
    this.sub.on('reconnecting', () => {
      this.feedLost = true;
      this.peerLost();
      this.connectionLost();
    });
  }

  /** Connects, joins the cluster under a fresh epoch and reads the registry. Rejects if Redis stays unreachable. */
  static async start(opts: RedisBusOptions): Promise<RedisBus> {
    const bus = new RedisBus(opts);
    const deadline = Date.now() + (opts.connectTimeoutMs ?? 10_000);
    try {
      await withTimeout(Promise.all([bus.cmd.connect(), bus.sub.connect(), bus.reader.connect()]), deadline - Date.now(), `could not reach Redis at ${redactUrl(opts.url)}`);
      await bus.sub.subscribe(bus.keys.feed, (m) => bus.onFeed(m));
      const t = (await bus.cmd.sendCommand(['TIME'])) as [string, string];
      bus.inboxLastId = `${t[0]}${t[1].padStart(6, '0').slice(0, 3)}-0`;
      await bus.join(Math.min(deadline, Date.now() + 2 * opts.leaseMs + 1_000));
      // The lease is held from now on, however long reading the registry takes.
      bus.startTimers();
      await bus.resyncMirror();
    } catch (e) {
      bus.stopTimers();
      await bus.disconnect();
      throw e;
    }
    bus.state = 'ready';
    bus.stats.connected = 1;
    bus.sweepAfter = Date.now();
    bus.readerDone = bus.readInbox();
    bus.log?.info({ node: bus.node, epoch: bus.epoch }, 'joined the cluster');
    return bus;
  }

  // ---------------------------------------------------------------- PresenceBus

  putSession(jid: string, session: LiveSession): Promise<AccountSessions> {
    return this.serial(jid, async () => {
      const isNew = !(this.own.get(jid)?.has(session.resource) ?? false);
      if (this.state !== 'ready') {
        if (isNew || this.state === 'fenced') throw unavailable();
        return this.putLocally(jid, session);
      }
      try {
        if (!this.indexed.has(jid)) {
          if (!(await this.index('add', jid))) {
            this.refused();
            throw unavailable();
          }
          this.indexed.add(jid);
        }
        const entry = encodeEntry(session, this.epoch);
        const k = this.keys;
        const r = (await this.run(
          SCRIPTS.put,
          [k.sessions(jid), k.meta(jid)],
          [this.node, this.epoch, session.resource, entry, jid, k.feed, META_TTL_MS, isNew ? 'open' : 'update'],
        )) as [number, string[]?, number?, string[]?];
        if (r[0] === -1) {
          this.refused();
          throw unavailable();
        }
        if (r[0] === -2) {
          // Another node took the resource over while we were changing it: the session here is over.
          this.ownDelete(jid, session.resource);
          throw new PresenceError('not-found', 'session has ended');
        }
        this.ownSet(jid, session);
        await this.waitEcho(jid, r[0]);
        return { sessions: toSessions(r[1] ?? []).map(liveOf), version: r[0], before: toSessions(r[3] ?? []).map(liveOf) };
      } catch (e) {
        if (e instanceof PresenceError) throw e;
        this.commandFailed(e);
        if (isNew) {
          // The write may still land: the re-registration after the reconnect removes it again.
          this.dirty.add(jid);
          throw unavailable();
        }
        return this.putLocally(jid, session);
      }
    });
  }

  removeSession(jid: string, resource: string): Promise<AccountSessions> {
    return this.serial(jid, async () => {
      this.ownDelete(jid, resource);
      // Fenced: the declaring node already removed it; nothing of this incarnation is written any more.
      if (this.state === 'fenced') return { sessions: [...(this.mirror.get(jid) ?? [])], version: 0 };
      if (this.state !== 'ready') return this.removeLocally(jid, resource);
      try {
        const k = this.keys;
        const r = (await this.run(SCRIPTS.remove, [k.sessions(jid), k.meta(jid)], [this.node, this.epoch, resource, jid, k.feed, META_TTL_MS])) as [
          number,
          string[]?,
          number?,
          string[]?,
        ];
        if (r[0] === -1) {
          this.refused();
          return this.removeLocally(jid, resource);
        }
        if (!this.own.has(jid) && this.indexed.has(jid)) {
          await this.index('rem', jid);
          this.indexed.delete(jid);
        }
        if (r[2] === 1) await this.waitEcho(jid, r[0]);
        return { sessions: toSessions(r[1] ?? []).map(liveOf), version: r[0], before: toSessions(r[3] ?? []).map(liveOf) };
      } catch (e) {
        this.commandFailed(e);
        return this.removeLocally(jid, resource);
      }
    });
  }

  async sessionsOf(jid: string): Promise<LiveSession[]> {
    return [...(this.mirror.get(jid) ?? [])];
  }

  async accountSessions(jid: string): Promise<AccountSessions> {
    return { sessions: [...(this.mirror.get(jid) ?? [])], version: this.mirror.version(jid) };
  }

  async sessionsOfMany(jids: readonly string[]): Promise<Map<string, LiveSession[]>> {
    const out = new Map<string, LiveSession[]>();
    for (const j of jids) {
      const l = this.mirror.get(j);
      if (l !== undefined) out.set(j, [...l]);
    }
    return out;
  }

  async counts(): Promise<{ sessions: number; accounts: number }> {
    return this.mirror.counts();
  }

  deliver(to: string, delivery: Delivery, resource: string | null = null): void {
    // Local sessions first, directly, as the in-process bus does (the engine ignores accounts it holds no session of).
    this.handler(to, delivery, resource);
    const list = this.mirror.get(to);
    if (list === undefined) return;
    let first: string | null = null;
    let seen: Set<string> | null = null;
    for (const s of list) {
      if (s.node === this.node || (resource !== null && s.resource !== resource)) continue;
      if (s.node === first || seen?.has(s.node)) continue;
      if (first === null) first = s.node;
      else (seen ??= new Set([first])).add(s.node);
      this.outbox.add(s.node, to, delivery, resource);
      this.stats.remoteQueued++;
    }
    if (first !== null) this.scheduleFlush();
  }

  onDelivery(handler: DeliveryHandler): void {
    this.handler = handler;
  }

  health(): string | null {
    switch (this.state) {
      case 'ready':
        // Ready, but the last renewal is older than the lease allows (a renewal failing, or this process
        // starved): others may be about to declare this node dead.
        return Date.now() > this.leaseValidUntil ? 'the node lease was not renewed in time (Redis slow or unreachable)' : null;
      case 'degraded':
        return 'Redis is unreachable (or the live state is being rebuilt after it came back): new logins are refused';
      case 'fenced':
        return 'this node was declared down by the cluster (its lease lapsed) and is joining again';
      case 'starting':
        return 'joining the cluster';
      case 'closing':
      case 'closed':
        return 'shutting down';
    }
  }

  publishNote(note: ClusterNote): void {
    if (this.state !== 'ready' || this.notesWaiting.length > 0) {
      this.keepNote(note);
      return;
    }
    const msg = JSON.stringify({ t: 'n', o: this.node, e: this.epoch, n: note });
    this.cmd.publish(this.keys.feed, msg).catch(() => this.keepNote(note));
  }

  /** Notes are about durable changes (a roster in the store): kept while Redis is unreachable, sent when it is back. */
  private keepNote(note: ClusterNote): void {
    if (this.notesWaiting.length >= NOTES_KEPT) {
      this.notesWaiting.shift();
      this.lostNotes = true;
    }
    this.notesWaiting.push(note);
  }

  private async flushNotes(): Promise<void> {
    const notes = this.notesWaiting;
    this.notesWaiting = [];
    for (const n of notes) await this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'n', o: this.node, e: this.epoch, n }));
  }

  onCluster(handler: ClusterHandler): void {
    this.cluster = handler;
  }

  async publishPeer(topic: string, payload: unknown, opts: { readonly acknowledged?: boolean } = {}): Promise<void> {
    if (this.state !== 'ready' || this.peerWaiting.length > 0) {
      this.keepPeer(topic, payload);
      return;
    }
    if (opts.acknowledged !== true) {
      await this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'p', o: this.node, e: this.epoch, k: topic, p: payload })).catch(() => this.keepPeer(topic, payload));
      return;
    }
    const id = randomBytes(8).toString('hex');
    let settle!: () => void;
    const acknowledged = new Promise<void>((resolve) => (settle = resolve));
    const timer = setTimeout(() => {
      const late = [...(this.acks.get(id)?.pending ?? [])];
      this.log?.warn({ topic, nodes: late }, 'nodes did not acknowledge a feature message in time (slow, or cut off from Redis: they read again when back)');
      done();
    }, PEER_ACK_TIMEOUT_MS);
    const done = (): void => {
      clearTimeout(timer);
      this.acks.delete(id);
      settle();
    };
    try {
      // The nodes not declared dead: each acknowledges once its features handled the message.
      const nodes = Object.keys(await this.cmd.hGetAll(this.keys.nodes)).filter((n) => n !== this.node);
      if (nodes.length === 0) {
        done();
        return;
      }
      this.acks.set(id, { pending: new Set(nodes), done });
      await this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'p', o: this.node, e: this.epoch, k: topic, p: payload, a: id }));
    } catch {
      done();
      this.keepPeer(topic, payload);
      return;
    }
    await acknowledged;
  }

  onPeer(handler: PeerHandler): void {
    this.peer = handler;
  }

  private keepPeer(topic: string, payload: unknown): void {
    if (this.peerWaiting.length >= PEER_MESSAGES_KEPT) {
      this.peerWaiting.shift();
      this.lostPeerMessages = true;
    }
    this.peerWaiting.push({ topic, payload });
  }

  private async flushPeers(): Promise<void> {
    const waiting = this.peerWaiting;
    this.peerWaiting = [];
    for (const m of waiting) await this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'p', o: this.node, e: this.epoch, k: m.topic, p: m.payload }));
    if (this.lostPeerMessages) {
      this.lostPeerMessages = false;
      await this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'r', o: this.node, e: this.epoch }));
    }
  }

  private emitPeer(event: PeerEvent): void {
    try {
      this.peer(event);
    } catch (err) {
      this.log?.error({ err, event: event.kind }, 'feature message handler failed');
    }
  }

  private peerLost(): void {
    if (this.peerMissed || this.state === 'closing' || this.state === 'closed') return;
    this.peerMissed = true;
    this.emitPeer({ kind: 'lost' });
  }

  /** After a rebuild: if the feed was interrupted, the features read again what their peers told them. */
  private peerResync(): void {
    if (!this.peerMissed) return;
    this.peerMissed = false;
    this.emitPeer({ kind: 'resync' });
  }

  /**
   * Graceful stop (after the engine ended its sessions): what is still registered is removed, the
   * lease and node entry go at once, so nobody has to wait for the lease to lapse.
   */
  async close(): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return;
    const wasReady = this.state === 'ready';
    this.state = 'closing';
    this.stopTimers();
    if (wasReady) {
      try {
        await withTimeout(this.flushNow(), 2_000, 'flush');
        for (const jid of [...this.own.keys(), ...this.indexed]) await this.syncAccount(jid, []);
        const inc = incarnation(this.node, this.epoch);
        const k = this.keys;
        const r = await this.run(SCRIPTS.leave, [k.lease(this.node), k.nodes, k.index(inc), k.dead], [this.node, this.epoch]);
        this.log?.info({ node: this.node, epoch: this.epoch, outcome: r }, 'left the cluster');
      } catch (err) {
        this.log?.warn({ err }, 'could not leave the cluster cleanly: the other nodes will declare this node down when its lease lapses');
      }
    }
    this.state = 'closed';
    await this.disconnect();
    await this.readerDone;
  }

  // ---------------------------------------------------------------- registry helpers

  private ownSet(jid: string, s: LiveSession): void {
    let m = this.own.get(jid);
    if (m === undefined) {
      m = new Map();
      this.own.set(jid, m);
    }
    m.set(s.resource, s);
  }

  private ownDelete(jid: string, resource: string): void {
    const m = this.own.get(jid);
    if (m === undefined) return;
    m.delete(resource);
    if (m.size === 0) this.own.delete(jid);
  }

  private putLocally(jid: string, s: LiveSession): AccountSessions {
    this.ownSet(jid, s);
    const rest = (this.mirror.get(jid) ?? []).filter((x) => x.resource !== s.resource);
    this.mirror.patch(jid, [...rest, s]);
    this.dirty.add(jid);
    return { sessions: [...rest, s], version: 0 };
  }

  private removeLocally(jid: string, resource: string): AccountSessions {
    const rest = (this.mirror.get(jid) ?? []).filter((x) => !(x.resource === resource && x.node === this.node));
    this.mirror.patch(jid, rest);
    this.dirty.add(jid);
    return { sessions: rest, version: 0 };
  }

  private async index(op: 'add' | 'rem', jid: string): Promise<boolean> {
    const inc = incarnation(this.node, this.epoch);
    return (await this.run(SCRIPTS.index, [this.keys.lease(this.node), this.keys.index(inc)], [this.epoch, jid, op])) === 1;
  }

  /** Registers exactly `sessions` as this node's sessions of the account (re-registration, graceful stop). */
  private async syncAccount(jid: string, sessions: readonly LiveSession[]): Promise<void> {
    const k = this.keys;
    if (sessions.length > 0 && !this.indexed.has(jid)) {
      if (!(await this.index('add', jid))) throw new FencedError();
      this.indexed.add(jid);
    }
    const pairs: string[] = [];
    for (const s of sessions) pairs.push(s.resource, encodeEntry(s, this.epoch));
    const r = (await this.run(SCRIPTS.sync, [k.sessions(jid), k.meta(jid)], [this.node, this.epoch, jid, k.feed, META_TTL_MS, ...pairs])) as [
      number,
      string[]?,
      string[]?,
    ];
    if (r[0] === -1) throw new FencedError();
    for (const resource of r[2] ?? []) {
      this.ownDelete(jid, resource);
      this.emit({ kind: 'taken-over', jid, resource });
    }
    if (sessions.length === 0 && this.indexed.has(jid)) {
      await this.index('rem', jid);
      this.indexed.delete(jid);
    }
  }

  /** Serialises this node's registry work per account (the engine's locks do, but re-registration runs beside them). */
  private serial<T>(jid: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(jid);
    const next = prev ? prev.then(fn, fn) : fn();
    const tail = next.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(jid, tail);
    void tail.then(() => {
      if (this.chains.get(jid) === tail) this.chains.delete(jid);
    });
    return next;
  }

  /**
   * A registry change is complete here once it came back through the feed: every change published
   * before it (any account) has then been applied to the mirror too, so whoever this node fans out to
   * next includes every session registered before this change, and a session that opens elsewhere
   * after it sees the change in its own node's mirror. Without the feed (reconnecting) it goes on after a bound.
   */
  private waitEcho(jid: string, v: number): Promise<void> {
    if (this.mirror.version(jid) >= v) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(done, ECHO_TIMEOUT_MS);
      timer.unref();
      let list = this.echoWaiters.get(jid);
      if (list === undefined) {
        list = [];
        this.echoWaiters.set(jid, list);
      }
      const entry = { v, done };
      list.push(entry);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  private releaseEchoes(jid: string, v: number): void {
    const list = this.echoWaiters.get(jid);
    if (list === undefined) return;
    const rest = list.filter((w) => {
      if (w.v > v) return true;
      w.done();
      return false;
    });
    if (rest.length) this.echoWaiters.set(jid, rest);
    else this.echoWaiters.delete(jid);
  }

  // ---------------------------------------------------------------- feed

  private onFeed(text: string): void {
    const m = parseFeed(text);
    if (m === null) {
      this.log?.warn({ message: text.slice(0, 200) }, 'malformed message on the cluster feed ignored');
      return;
    }
    if (m.t === 'm') {
      if (m.o === this.node) this.markerWaiters.get(m.k)?.();
      return;
    }
    if (this.feedBuffer !== null) {
      this.feedBuffer.push(m);
      return;
    }
    this.applyFeed(m);
  }

  private applyFeed(m: FeedMessage): void {
    switch (m.t) {
      case 's': {
        for (const e of m.s) if (e.node !== this.node) this.nodeEpochs.set(e.node, String(e.epoch));
        const sessions = m.s.map(liveOf);
        if (this.mirror.apply(m.j, m.v, sessions)) {
          this.checkTakenOver(m.j, m.s);
          if (m.o !== this.node) this.emit({ kind: 'sessions', jid: m.j, sessions, version: m.v });
        }
        this.releaseEchoes(m.j, m.v);
        return;
      }
      case 'n':
        if (m.o !== this.node && !this.deadIncarnations.has(incarnation(m.o, m.e))) this.emit({ kind: 'note', note: m.n });
        return;
      case 'd':
        this.rememberDead(incarnation(m.n, m.e));
        // A node declared dead acknowledges nothing more.
        for (const w of [...this.acks.values()]) {
          w.pending.delete(m.n);
          if (w.pending.size === 0) w.done();
        }
        return;
      case 'p': {
        if (m.o === this.node || this.deadIncarnations.has(incarnation(m.o, m.e))) return;
        const ackId = m.a;
        let acked = false;
        const done = (): void => {
          if (acked || ackId === undefined) return;
          acked = true;
          this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'k', o: this.node, i: ackId, to: m.o })).catch(() => {});
        };
        this.emitPeer({ kind: 'message', topic: m.k, payload: m.p, from: m.o, done });
        return;
      }
      case 'k': {
        if (m.to !== this.node) return;
        const w = this.acks.get(m.i);
        if (w === undefined) return;
        w.pending.delete(m.o);
        if (w.pending.size === 0) w.done();
        return;
      }
      case 'r':
        if (m.o !== this.node) this.emitPeer({ kind: 'resync' });
        return;
      case 'm':
        return;
    }
  }

  /** A resource this node holds that the registry now gives another node: it logged in there. */
  private checkTakenOver(jid: string, entries: readonly Entry[]): void {
    const mine = this.own.get(jid);
    if (mine === undefined) return;
    for (const e of entries) {
      if (e.node !== this.node && mine.has(e.resource)) {
        this.ownDelete(jid, e.resource);
        this.emit({ kind: 'taken-over', jid, resource: e.resource });
      }
    }
  }

  private rememberDead(inc: string): void {
    this.deadIncarnations.add(inc);
    if (this.deadIncarnations.size > DEAD_REMEMBERED) {
      const oldest = this.deadIncarnations.values().next().value;
      if (oldest !== undefined) this.deadIncarnations.delete(oldest);
    }
  }

  /**
   * Rebuilds the mirror: feed messages are buffered from now on, a marker proves the subscription
   * carries them, then every account of every incarnation's index is read; buffered messages newer than
   * what was read are applied on top, in order.
   */
  private async resyncMirror(): Promise<Set<string>> {
    this.feedBuffer = [];
    try {
      await this.confirmSubscription();
      const k = this.keys;
      const [nodes, dead] = await Promise.all([this.cmd.hGetAll(k.nodes), this.cmd.hGetAll(k.dead)]);
      const incarnations = new Set<string>(Object.keys(dead));
      for (const [node, rec] of Object.entries(nodes)) incarnations.add(incarnation(node, rec.split(':')[0] ?? ''));
      const accounts = new Set<string>();
      for (const inc of incarnations) for (const jid of await this.cmd.sMembers(k.index(inc))) accounts.add(jid);
      const snapshot = new Map<string, { v: number; sessions: LiveSession[] }>();
      const list = [...accounts];
      for (let i = 0; i < list.length; i += 500) {
        const chunk = list.slice(i, i + 500);
        const reads = await Promise.all(chunk.map((jid) => this.run(SCRIPTS.read, [k.sessions(jid), k.meta(jid)], []) as Promise<[number, string[]]>));
        chunk.forEach((jid, n) => {
          const [v, raw] = reads[n] as [number, string[]];
          const entries = toSessions(raw);
          for (const e of entries) if (e.node !== this.node) this.nodeEpochs.set(e.node, String(e.epoch));
          snapshot.set(jid, { v, sessions: entries.map(liveOf) });
        });
      }
      const others: Array<[string, LiveSession]> = [];
      this.mirror.forEach((jid, sessions) => {
        for (const s of sessions) if (s.node !== this.node) others.push([jid, s]);
      });
      const changed = this.mirror.replaceAll(snapshot);
      const buffered = this.feedBuffer;
      this.feedBuffer = null;
      for (const m of buffered) {
        if (m.t === 's' && m.v > (snapshot.get(m.j)?.v ?? 0)) changed.add(m.j);
        this.applyFeed(m);
      }
      this.noteVanished(others);
      for (const [jid, mine] of [...this.own]) {
        const entries = this.mirror.get(jid) ?? [];
        for (const e of entries) {
          if (e.node !== this.node && mine.has(e.resource)) {
            this.ownDelete(jid, e.resource);
            this.emit({ kind: 'taken-over', jid, resource: e.resource });
          }
        }
      }
      for (const [jid] of this.echoWaiters) this.releaseEchoes(jid, this.mirror.version(jid));
      this.stats.resyncs++;
      return changed;
    } finally {
      this.feedBuffer = null;
    }
  }

  /** Sessions the mirror held before a rebuild that the registry no longer has (see `vanished`). */
  private noteVanished(before: ReadonlyArray<[string, LiveSession]>): void {
    const now = Date.now();
    for (const [jid, s] of before) {
      if ((this.mirror.get(jid) ?? []).some((x) => x.node === s.node && x.resource === s.resource)) continue;
      const epoch = this.nodeEpochs.get(s.node);
      if (epoch === undefined) continue;
      let v = this.vanished.get(s.node);
      if (v === undefined || v.epoch !== epoch) {
        v = { epoch, at: now, accounts: new Map() };
        this.vanished.set(s.node, v);
      }
      v.at = now;
      const list = v.accounts.get(jid);
      if (list === undefined) v.accounts.set(jid, [s]);
      else if (!list.some((x) => x.resource === s.resource)) list.push(s);
    }
  }

  /**
   * Past a lease after the rebuild, a node whose sessions vanished and that did not come back (under
   * the same epoch) is listed dead, to be reaped like any other; otherwise the memory goes.
   */
  private async adoptVanished(nodes: Record<string, string>, dead: ReadonlySet<string>): Promise<void> {
    const k = this.keys;
    for (const [node, v] of [...this.vanished]) {
      if (Date.now() < v.at + this.leaseMs) continue;
      const inc = incarnation(node, v.epoch);
      if (dead.has(inc)) continue;
      if ((nodes[node] ?? '').split(':')[0] === v.epoch) {
        this.vanished.delete(node);
        continue;
      }
      const adopted = await this.run(SCRIPTS.adopt, [k.nodes, k.dead, k.reaped], [node, v.epoch, String(v.at)]);
      if (adopted !== 1) this.vanished.delete(node);
      else this.log?.warn({ deadNode: node, epoch: v.epoch, accounts: v.accounts.size }, 'sessions of a node vanished with Redis data and the node did not come back: declaring it dead');
    }
  }

  private async confirmSubscription(): Promise<void> {
    const key = randomBytes(8).toString('hex');
    const seen = new Promise<void>((resolve) => this.markerWaiters.set(key, resolve));
    try {
      await this.cmd.publish(this.keys.feed, JSON.stringify({ t: 'm', o: this.node, k: key }));
      await withTimeout(seen, 5_000, 'the feed subscription did not deliver our marker');
    } finally {
      this.markerWaiters.delete(key);
    }
  }

  /**
   * Resolves once this node has received every message published on the feed before the call (by any
   * node: registry changes, cache notes), and its engine has finished handling them: a marker of its
   * own comes back behind them. Called on every node, a barrier across the cluster for what the feed
   * carries (test harnesses use it to read after a write made on another node). Rejects when Redis is
   * unreachable.
   */
  async feedBarrier(): Promise<void> {
    await this.confirmSubscription();
    await Promise.allSettled([...this.handling]);
  }

  // ---------------------------------------------------------------- deliveries

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => void this.flushNow());
  }

  private async flushNow(): Promise<void> {
    this.flushScheduled = false;
    if (this.outbox.size === 0) return;
    const batches = this.outbox.take();
    if (this.state === 'fenced') return;
    // Behind whatever waits already, so per-recipient order holds across an outage.
    this.keep(batches);
    if (this.state !== 'ready') return;
    // Nothing leaves while the lease may have lapsed (a node running again after a pause checks first;
    // a successful renewal sends what waits).
    if (Date.now() > this.leaseValidUntil) {
      void this.renewNow();
      return;
    }
    await this.flushBacklog();
  }

  private async send(batches: OutgoingBatch[]): Promise<void> {
    const sends = batches.map((b) => {
      const key = this.keys.inbox(b.node);
      const added = this.cmd.sendCommand(['XADD', key, 'MAXLEN', '~', INBOX_MAXLEN, '*', 'b', b.payload]);
      const ttl = this.cmd.sendCommand(['PEXPIRE', key, INBOX_TTL_MS]);
      return Promise.all([added, ttl]).then(
        () => {
          this.stats.batchesSent++;
          this.stats.remoteDeliveries += b.items;
          return null;
        },
        (err: unknown) => ({ b, err }),
      );
    });
    const failed = (await Promise.all(sends)).filter((f) => f !== null);
    if (failed.length) {
      this.commandFailed(failed[0]!.err);
      this.keep(failed.map((f) => f.b));
    }
  }

  private keep(batches: OutgoingBatch[]): void {
    for (const b of batches) {
      this.backlog.push(b);
      this.backlogItems += b.items;
    }
    while (this.backlogItems > BACKLOG_MAX_ITEMS && this.backlog.length > 1) {
      const dropped = this.backlog.shift()!;
      this.backlogItems -= dropped.items;
      this.lostDeliveries = true;
    }
  }

  private async flushBacklog(): Promise<void> {
    const batches = this.backlog;
    this.backlog = [];
    this.backlogItems = 0;
    if (batches.length) await this.send(batches);
  }

  private async readInbox(): Promise<void> {
    const key = this.keys.inbox(this.node);
    while (!this.stopped) {
      let reply: unknown;
      try {
        reply = await this.reader.sendCommand(['XREAD', 'BLOCK', '2000', 'COUNT', '200', 'STREAMS', key, this.inboxLastId]);
      } catch {
        if (this.stopped) return;
        await sleep(200);
        continue;
      }
      for (const [id, fields] of streamEntries(reply)) {
        this.inboxLastId = id;
        const i = fields.indexOf('b');
        if (i >= 0 && i + 1 < fields.length) this.receive(fields[i + 1] as string);
      }
      if (Date.now() - this.lastTrim > 1_000 && this.inboxLastId !== '0-0') {
        this.lastTrim = Date.now();
        // What was read is not needed any more: the stream holds only what this node has not read.
        this.cmd.sendCommand(['XTRIM', key, 'MINID', this.inboxLastId]).catch(() => {});
      }
    }
  }

  private receive(payload: string): void {
    const b = parseBatch(payload);
    if (b === null) {
      this.log?.warn('malformed delivery batch ignored');
      return;
    }
    if (this.deadIncarnations.has(incarnation(b.o, b.e))) return;
    for (const item of b.i) {
      if (!Array.isArray(item) || typeof item[0] !== 'string' || typeof item[1] !== 'number') continue;
      const d = b.d[item[1]];
      if (!isDelivery(d)) continue;
      this.stats.deliveriesReceived++;
      try {
        this.handler(item[0], d, typeof item[2] === 'string' ? item[2] : null);
      } catch (err) {
        this.log?.error({ err }, 'delivery from another node failed');
      }
    }
  }

  // ---------------------------------------------------------------- lease

  private async join(deadline = Date.now() + 2 * this.leaseMs + 1_000): Promise<void> {
    const k = this.keys;
    for (;;) {
      const r = (await this.run(SCRIPTS.join, [k.epoch, k.nodes, k.lease(this.node), k.dead, k.run], [this.node, String(this.leaseMs), freshRun()])) as string[];
      if (r[0] === 'ok') {
        this.epoch = r[1] as string;
        this.runId = r[2] as string;
        this.leaseValidUntil = Date.now() + this.leaseMs - this.safetyMs();
        return;
      }
      // A lease of this node id is live: a previous process of this node not yet expired, or another
      // process configured with the same node_id.
      if (Date.now() > deadline) {
        throw new Error(`node_id "${this.node}" is held by a live node (its lease keeps being renewed): give every node its own node_id`);
      }
      await sleep(Math.min(250, this.leaseMs / 4));
    }
  }

  private safetyMs(): number {
    return Math.min(500, Math.floor(this.leaseMs / 10));
  }

  private renewNow(): Promise<string> {
    this.renewing ??= this.renew().finally(() => (this.renewing = null));
    return this.renewing;
  }

  private async renew(): Promise<string> {
    if (this.epoch === '') return 'error';
    const k = this.keys;
    const sent = Date.now();
    let r: string[];
    try {
      r = (await this.run(
        SCRIPTS.renew,
        [k.lease(this.node), k.nodes, k.run, k.epoch, k.dead, k.reaped],
        [this.node, this.epoch, String(this.leaseMs), this.runId, freshRun()],
      )) as string[];
    } catch (err) {
      this.stats.leaseRenewFailures++;
      this.commandFailed(err);
      return 'error';
    }
    const outcome = r[0] as string;
    if (outcome === 'fenced') {
      this.stats.leaseRenewFailures++;
      return outcome;
    }
    this.runId = r[1] ?? this.runId;
    this.leaseValidUntil = sent + this.leaseMs - this.safetyMs();
    if (outcome === 'resumed') this.log?.warn({ node: this.node, epoch: this.epoch }, 'lease had lapsed but nobody had declared this node down: resumed');
    if (outcome === 'restored') this.log?.warn({ node: this.node, epoch: this.epoch }, 'Redis lost the live state (restarted empty): registering this node again');
    if (this.state === 'ready' && this.backlog.length > 0 && Date.now() < this.leaseValidUntil) void this.flushBacklog();
    return outcome;
  }

  private startTimers(): void {
    this.renewTimer = setInterval(() => void this.periodicRenew(), Math.max(50, Math.floor(this.leaseMs / 3)));
    this.renewTimer.unref();
    this.sweepTimer = setInterval(() => void this.sweep(), Math.max(50, Math.min(1_000, Math.floor(this.leaseMs / 5))));
    this.sweepTimer.unref();
  }

  private stopTimers(): void {
    if (this.renewTimer) clearInterval(this.renewTimer);
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.renewTimer = this.sweepTimer = this.retryTimer = null;
  }

  private async periodicRenew(): Promise<void> {
    if (this.state !== 'ready' && this.state !== 'degraded' && this.state !== 'starting') return;
    const outcome = await this.renewNow();
    if (outcome === 'fenced') await this.onFenced();
    else if (outcome === 'restored') this.scheduleRecover(true);
  }

  /** A registry write was refused: check the lease now rather than at the next renewal. */
  private refused(): void {
    this.stats.writesRefused++;
    void this.renewNow().then((o) => (o === 'fenced' ? this.onFenced() : undefined));
  }

  private async onFenced(): Promise<void> {
    if (this.state === 'fenced' || this.state === 'closing' || this.state === 'closed') return;
    this.state = 'fenced';
    this.stats.fenced++;
    this.stats.connected = 0;
    this.log?.warn(
      { node: this.node, epoch: this.epoch },
      'this node was declared down (its lease lapsed: paused, or cut off from Redis): closing every connection and joining again under a new epoch',
    );
    this.outbox.clear();
    this.backlog = [];
    this.backlogItems = 0;
    this.lostDeliveries = false;
    this.own.clear();
    this.indexed.clear();
    this.dirty.clear();
    this.peerLost();
    try {
      await this.cluster({ kind: 'fenced' });
    } catch (err) {
      this.log?.error({ err }, 'engine failed to drop its sessions after fencing');
    }
    await this.rejoin();
  }

  private async rejoin(): Promise<void> {
    for (;;) {
      if (this.stopped) return;
      try {
        await this.join();
        await this.resyncMirror();
        this.state = 'ready';
        this.stats.connected = 1;
        this.sweepAfter = Date.now() + this.leaseMs;
        this.log?.info({ node: this.node, epoch: this.epoch }, 'joined the cluster again');
        // Whatever this node missed while it was cut off: every cached state was dropped with the sessions.
        await this.flushNotes().catch(() => {});
        await this.flushPeers().catch(() => {});
        this.emit({ kind: 'resynced', refresh: [], allLocal: false, reloadCaches: false });
        this.peerResync();
        return;
      } catch (err) {
        this.log?.warn({ err }, 'joining the cluster again failed; retrying');
        await sleep(1_000);
      }
    }
  }

  // ---------------------------------------------------------------- death of other nodes

  private async sweep(): Promise<void> {
    if (this.state !== 'ready' || Date.now() < this.sweepAfter) return;
    const k = this.keys;
    let dead: string[];
    try {
      const table = await this.cmd.hGetAll(k.nodes);
      const nodes = Object.keys(table);
      dead = (await this.run(SCRIPTS.sweep, [k.nodes, k.dead, ...nodes.map((n) => k.lease(n))], nodes)) as string[];
      if (this.vanished.size > 0) {
        const listed = new Set(dead.filter((_, i) => i % 2 === 0));
        await this.adoptVanished(table, listed);
        dead = Object.entries(await this.cmd.hGetAll(k.dead)).flat();
      }
    } catch (err) {
      this.commandFailed(err);
      return;
    }
    for (let i = 0; i + 1 < dead.length; i += 2) {
      const inc = dead[i] as string;
      const heardAt = Number(dead[i + 1]);
      if (this.reaping.has(inc)) continue;
      let claimed: unknown;
      try {
        claimed = await this.run(SCRIPTS.claim, [k.dead, k.claim(inc)], [inc, this.node, String(CLAIM_TTL_MS)]);
      } catch {
        return;
      }
      if (claimed !== 1) continue;
      this.reaping.add(inc);
      void this.reap(inc, heardAt).finally(() => this.reaping.delete(inc));
    }
  }

  /** This node won the claim: every session of the dead incarnation is declared offline, account by account. */
  private async reap(inc: string, heardAt: number): Promise<void> {
    const sep = inc.lastIndexOf('|');
    const node = inc.slice(0, sep);
    const epoch = inc.slice(sep + 1);
    const k = this.keys;
    this.stats.nodesDeclaredDown++;
    this.rememberDead(inc);
    this.log?.warn({ deadNode: node, epoch, lastHeard: new Date(heardAt).toISOString() }, 'node lease lapsed: declaring its sessions offline');
    try {
      await this.cmd.publish(k.feed, JSON.stringify({ t: 'd', o: this.node, n: node, e: epoch }));
      const remembered = this.vanished.get(node)?.epoch === epoch ? this.vanished.get(node)!.accounts : new Map<string, LiveSession[]>();
      const accounts = [...new Set([...(await this.cmd.sMembers(k.index(inc))), ...remembered.keys()])];
      let declared = 0;
      for (let i = 0; i < accounts.length; i += REAP_CONCURRENCY) {
        await Promise.all(
          accounts.slice(i, i + REAP_CONCURRENCY).map(async (jid) => (declared += await this.reapAccount(jid, node, epoch, heardAt, inc, remembered.get(jid) ?? []))),
        );
        await this.cmd.pExpire(k.claim(inc), CLAIM_TTL_MS);
      }
      await this.run(SCRIPTS.reaped, [k.dead, k.index(inc), k.claim(inc), k.reaped], [inc, this.node]);
      if (this.vanished.get(node)?.epoch === epoch) this.vanished.delete(node);
      this.log?.info({ deadNode: node, epoch, accounts: accounts.length, sessions: declared }, 'dead node handled');
    } catch (err) {
      // The claim lapses and a node (this one or another) takes the work up where it stopped.
      this.commandFailed(err);
      this.log?.warn({ err, deadNode: node, epoch }, 'declaring a dead node offline was interrupted; it will be resumed');
    }
  }

  /**
   * One account of a dead incarnation: its entries removed (and the incarnation fenced off the account),
   * then the engine told. `remembered`: sessions of it this node's mirror held before Redis lost them
   * (the registry has nothing left to remove, but watchers were shown them).
   */
  private async reapAccount(jid: string, node: string, epoch: string, heardAt: number, inc: string, remembered: readonly LiveSession[]): Promise<number> {
    const k = this.keys;
    const r = (await this.run(SCRIPTS.clean, [k.sessions(jid), k.meta(jid)], [node, epoch, jid, k.feed, META_TTL_MS, this.node])) as [number, string[], string[]];
    let removed = toSessions(r[1]).map(liveOf);
    if (removed.length === 0) removed = remembered.filter((s) => !(this.mirror.get(jid) ?? []).some((x) => x.node === s.node && x.resource === s.resource));
    if (removed.length > 0) {
      await this.waitEcho(jid, r[0]);
      this.stats.sessionsDeclaredOffline += removed.length;
      try {
        await this.cluster({ kind: 'node-down', jid, removed, remaining: toSessions(r[2]).map(liveOf), version: r[0], heardAt });
      } catch (err) {
        this.log?.error({ err, jid }, 'engine failed to end sessions of a dead node');
      }
    }
    await this.cmd.sRem(k.index(inc), jid);
    return removed.length;
  }

  // ---------------------------------------------------------------- connection loss and recovery

  private connectionError(which: string, err: Error): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    if (!this.loggedDown) this.log?.warn({ connection: which, err: err.message }, 'Redis connection error');
  }

  private connectionLost(): void {
    if (this.state !== 'ready') return;
    this.state = 'degraded';
    this.stats.connected = 0;
    if (!this.loggedDown) {
      this.loggedDown = true;
      this.log?.warn('Redis unreachable: new logins are refused, connected clients stay; live state is re-registered when it is back');
    }
  }

  private connectionBack(): void {
    if (this.state === 'starting' || this.state === 'closing' || this.state === 'closed' || this.state === 'fenced') return;
    this.scheduleRecover(false);
  }

  /** A command failed or timed out: Redis counts as unreachable until a connection says otherwise. */
  private commandFailed(err: unknown): void {
    if (err instanceof FencedError || this.state !== 'ready') return;
    this.log?.debug({ err }, 'Redis command failed');
    this.connectionLost();
    this.scheduleRecover(false);
  }

  private scheduleRecover(restored: boolean): void {
    if (restored) this.restoredPending = true;
    if (this.recovering) {
      this.recoverAgain = true;
      return;
    }
    this.recovering = (async () => {
      do {
        this.recoverAgain = false;
        await this.recover();
      } while (this.recoverAgain);
    })().finally(() => (this.recovering = null));
  }

  private restoredPending = false;

  private async recover(): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed' || this.state === 'fenced') return;
    if (!this.cmd.isReady || !this.sub.isReady) return;
    if (this.state === 'ready') this.state = 'degraded';
    try {
      const outcome = await this.renewNow();
      if (outcome === 'fenced') {
        await this.onFenced();
        return;
      }
      if (outcome === 'error') throw new Error('lease renewal failed');
      const restored = outcome === 'restored' || this.restoredPending;
      this.restoredPending = false;
      if (restored) this.indexed.clear();
      const refresh = new Set(this.dirty);
      const toSync = restored ? new Set([...this.own.keys(), ...this.dirty]) : new Set(this.dirty);
      for (const jid of toSync) {
        await this.serial(jid, async () => {
          await this.syncAccount(jid, [...(this.own.get(jid)?.values() ?? [])]);
          this.dirty.delete(jid);
        });
      }
      // A command that only timed out leaves the feed intact: the mirror is rebuilt only if it may have missed something.
      if (this.feedLost || restored) {
        this.feedLost = false;
        await this.resyncMirror();
      }
      this.state = 'ready';
      this.stats.connected = 1;
      this.loggedDown = false;
      this.sweepAfter = Date.now() + this.leaseMs;
      await this.flushBacklog();
      await this.flushNotes();
      await this.flushPeers();
      const allLocal = this.lostDeliveries;
      const reloadCaches = this.lostNotes;
      this.lostDeliveries = false;
      this.lostNotes = false;
      this.log?.info({ reregistered: toSync.size, refreshed: refresh.size, lostDeliveries: allLocal, lostNotes: reloadCaches }, 'Redis reachable again: live state rebuilt');
      this.emit({ kind: 'resynced', refresh: [...refresh], allLocal, reloadCaches });
      this.peerResync();
    } catch (err) {
      if (err instanceof FencedError) {
        await this.onFenced();
        return;
      }
      if (this.state === 'ready') this.state = 'degraded';
      this.log?.debug({ err }, 'recovery failed; retrying');
      if (this.retryTimer === null) {
        this.retryTimer = setTimeout(() => {
          this.retryTimer = null;
          this.scheduleRecover(false);
        }, 500);
        this.retryTimer.unref();
      }
    }
  }

  // ---------------------------------------------------------------- plumbing

  private get stopped(): boolean {
    return this.state === 'closing' || this.state === 'closed';
  }

  private emit(event: ClusterEvent): void {
    try {
      const r = this.cluster(event);
      if (r instanceof Promise) {
        const p: Promise<unknown> = r
          .catch((err: unknown) => this.log?.error({ err, event: event.kind }, 'cluster event handler failed'))
          .finally(() => this.handling.delete(p));
        this.handling.add(p);
      }
    } catch (err) {
      this.log?.error({ err, event: event.kind }, 'cluster event handler failed');
    }
  }

  /** EVALSHA, loading the script on NOSCRIPT (Redis restarted or failed over), within the command timeout. */
  private async run(s: Script, keys: string[], args: string[]): Promise<unknown> {
    const call = async (): Promise<unknown> => {
      try {
        return await this.cmd.sendCommand(['EVALSHA', s.sha, String(keys.length), ...keys, ...args]);
      } catch (e) {
        if (e instanceof Error && e.message.startsWith('NOSCRIPT')) return this.cmd.sendCommand(['EVAL', s.source, String(keys.length), ...keys, ...args]);
        throw e;
      }
    };
    return withTimeout(call(), this.commandTimeoutMs, 'Redis did not answer in time');
  }

  private async disconnect(): Promise<void> {
    for (const c of [this.cmd, this.sub, this.reader]) {
      try {
        if (c.isOpen) c.destroy();
      } catch {
        // already gone
      }
    }
  }
}

class FencedError extends Error {
  constructor() {
    super('this node is fenced off');
  }
}

function unavailable(): PresenceError {
  return new PresenceError('unavailable', 'the live presence service (Redis) is unreachable right now; try again shortly');
}

function freshRun(): string {
  return randomBytes(8).toString('hex');
}

function redactUrl(url: string): string {
  return url.replace(/\/\/[^@/]*@/, '//***@');
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(what)), Math.max(1, ms));
    }),
  ]);
}

/** Entries of an XREAD reply, RESP3 (a map of stream → entries) or RESP2 (a list of [stream, entries]). */
function streamEntries(reply: unknown): Array<[string, unknown[]]> {
  if (reply === null || reply === undefined) return [];
  const streams: unknown[] = Array.isArray(reply) ? reply.map((s) => (s as unknown[])[1]) : reply instanceof Map ? [...reply.values()] : Object.values(reply as object);
  const out: Array<[string, unknown[]]> = [];
  for (const entries of streams) {
    if (!Array.isArray(entries)) continue;
    for (const e of entries) {
      if (Array.isArray(e) && typeof e[0] === 'string' && Array.isArray(e[1])) out.push([e[0], e[1] as unknown[]]);
    }
  }
  return out;
}
