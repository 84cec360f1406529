import type { Logger } from 'pino';
import { lockKey } from '../adapters/sql/dialect.js';
import type { PeerEvent, PresenceBus } from '../ports/bus.js';
import type { FeatureStorage } from '../ports/store.js';

/** A handler of a peer's message; a returned promise is awaited before the feature's next message. */
export type PeerListener = (payload: unknown, from: string) => void | Promise<void>;

/**
 * A feature's line to itself on the other nodes of a cluster (FeatureContext.cluster). With the
 * in-process bus there are no other nodes: publish does nothing and no handler is ever called, so a
 * feature written for the cluster costs nothing embedded.
 */
export interface FeatureCluster {
  /** Whether other nodes may exist (a clustered bus). */
  readonly clustered: boolean;
  /** This node's id. */
  readonly node: string;
  /**
   * Sends `payload` (JSON) on the feature's `topic` to the feature on every other node. Resolves once
   * the cluster took it: whatever any node publishes afterwards arrives everywhere after it. With
   * `acknowledged`, once the feature on every live node has also handled it (its handler's promise
   * settled), or PEER_ACK_TIMEOUT_MS passed. While Redis is unreachable it is kept and sent when it is
   * back (resolving at once). Never rejects.
   */
  publish(topic: string, payload: unknown, opts?: { readonly acknowledged?: boolean }): Promise<void>;
  /**
   * Receives the other nodes' messages on `topic`. The feature's handlers (every topic, and onResync)
   * run one at a time, in the order the messages arrived: a handler that returns a promise holds the
   * feature's next message until it settles. Returns the unsubscribe function.
   */
  subscribe(topic: string, fn: PeerListener): () => void;
  /** Called (synchronously) when this node may start missing its peers' messages (it lost Redis, or was fenced). */
  onLost(fn: () => void): void;
  /**
   * Called once messages flow again after some may have been missed: what the feature keeps in memory
   * from its peers' messages must be read again (from the database). Queued like a message.
   */
  onResync(fn: () => void | Promise<void>): void;
  /**
   * Runs `fn` while holding a lock that one node of the cluster holds at a time (a PostgreSQL advisory
   * lock named by the feature and `name`); directly on SQLite, whose deployment is one process.
   */
  exclusive<T>(name: string, fn: () => Promise<T>): Promise<T>;
}

interface Channel {
  readonly topics: Map<string, Set<PeerListener>>;
  readonly lost: Array<() => void>;
  readonly resync: Array<() => void | Promise<void>>;
  chain: Promise<void>;
}

/**
 * The features' side of PresenceBus.publishPeer/onPeer: one per server, a channel per feature.
 * Topics travel as `<feature>/<topic>`, so features cannot hear each other.
 */
export class PeerChannels {
  readonly #channels = new Map<string, Channel>();

  constructor(
    private readonly bus: PresenceBus,
    private readonly storage: FeatureStorage,
    private readonly log: Logger,
  ) {
    bus.onPeer((e) => this.#dispatch(e));
  }

  forFeature(feature: string): FeatureCluster {
    const ch: Channel = { topics: new Map(), lost: [], resync: [], chain: Promise.resolve() };
    this.#channels.set(feature, ch);
    const bus = this.bus;
    const storage = this.storage;
    return {
      clustered: bus.node !== 'local',
      node: bus.node,
      publish: (topic, payload, opts) => bus.publishPeer(`${feature}/${topic}`, payload, opts),
      subscribe: (topic, fn) => {
        let set = ch.topics.get(topic);
        if (set === undefined) ch.topics.set(topic, (set = new Set()));
        set.add(fn);
        return () => void set.delete(fn);
      },
      onLost: (fn) => void ch.lost.push(fn),
      onResync: (fn) => void ch.resync.push(fn),
      exclusive: <T>(name: string, fn: () => Promise<T>): Promise<T> => {
        if (storage.dialect !== 'postgres') return fn();
        return storage.db.transaction().execute(async (trx) => {
          await lockKey(trx, `presenced:feature:${feature}:${name}`);
          return fn();
        });
      },
    };
  }

  #dispatch(e: PeerEvent): void {
    if (e.kind === 'lost') {
      for (const [feature, ch] of this.#channels) {
        for (const fn of ch.lost) {
          try {
            fn();
          } catch (err) {
            this.log.error({ err, feature }, 'feature failed to note that its peers may be unheard');
          }
        }
      }
      return;
    }
    if (e.kind === 'resync') {
      for (const [feature, ch] of this.#channels) for (const fn of ch.resync) this.#queue(feature, ch, () => fn());
      return;
    }
    const slash = e.topic.indexOf('/');
    const feature = e.topic.slice(0, slash);
    const ch = slash > 0 ? this.#channels.get(feature) : undefined;
    const listeners = ch?.topics.get(e.topic.slice(slash + 1));
    // Nobody here for it (the feature is off on this node): acknowledged as handled.
    if (ch === undefined || listeners === undefined || listeners.size === 0) return e.done();
    const all = [...listeners];
    this.#queue(feature, ch, async () => {
      try {
        for (const fn of all) {
          try {
            await fn(e.payload, e.from);
          } catch (err) {
            this.log.error({ err, feature }, 'feature failed to handle a message of another node');
          }
        }
      } finally {
        e.done();
      }
    });
  }

  #queue(feature: string, ch: Channel, run: () => void | Promise<void>): void {
    ch.chain = ch.chain.then(async () => {
      try {
        await run();
      } catch (err) {
        this.log.error({ err, feature }, 'feature failed to handle a message of another node');
      }
    });
  }
}
