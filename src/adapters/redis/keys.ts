/**
 * Where the Redis bus keeps things (docs/cluster.md, "Key layout"). Every key a Lua script touches
 * shares one hash slot with the script's other keys, so the layout works unchanged on Redis Cluster:
 *
 * - the control plane (`{<prefix>:ctl}`): the fencing counter, the node table, the leases, the dead
 *   incarnations awaiting their reaper, the reaper claims, and each incarnation's index of the accounts
 *   it holds sessions of. Small and written a few times per second per node, plus once per account a
 *   node starts or stops holding sessions of.
 * - the data plane (`{<jid>}`): one account's sessions and its meta hash (registry version, fences).
 *   Every session change is one script on one account's slot, so the registry spreads over a cluster.
 * - one delivery stream per node (`{<node>}`), which only that node reads.
 * - one pub/sub channel, the feed, which every node subscribes to.
 */
export class BusKeys {
  readonly feed: string;
  private readonly ctl: string;

  constructor(readonly prefix: string) {
    this.feed = `${prefix}:feed`;
    this.ctl = `${prefix}:{${prefix}:ctl}`;
  }

  /** The fencing counter: every node incarnation's epoch is taken from it, so epochs never repeat. */
  get epoch(): string {
    return `${this.ctl}:epoch`;
  }
  /** Hash node id → "<epoch>:<last renewal, Redis ms>" of every live (or not yet declared dead) node. */
  get nodes(): string {
    return `${this.ctl}:nodes`;
  }
  /** Hash "<node>|<epoch>" → last renewal: incarnations declared dead whose sessions are being (or wait to be) declared offline. */
  get dead(): string {
    return `${this.ctl}:dead`;
  }
  /** Sorted set "<node>|<epoch>" → when reaped: incarnations already declared offline (a day's worth). */
  get reaped(): string {
    return `${this.ctl}:reaped`;
  }
  /** A random id written once per Redis dataset: a node that finds another one knows Redis lost its data. */
  get run(): string {
    return `${this.ctl}:run`;
  }
  /** The node's lease: its epoch, expiring after node_lease_ms unless renewed. */
  lease(node: string): string {
    return `${this.ctl}:lease:${node}`;
  }
  /** Set NX by the one node that declares the incarnation's sessions offline. */
  claim(incarnation: string): string {
    return `${this.ctl}:claim:${incarnation}`;
  }
  /** The accounts an incarnation ("<node>|<epoch>") holds or held sessions of. */
  index(incarnation: string): string {
    return `${this.ctl}:idx:${incarnation}`;
  }

  /** Hash resource → session (JSON, with its node and epoch). */
  sessions(jid: string): string {
    return `${this.prefix}:a:{${jid}}:s`;
  }
  /** Hash: `v` the account's registry version, `f:<node>` the highest epoch of that node fenced off here. */
  meta(jid: string): string {
    return `${this.prefix}:a:{${jid}}:m`;
  }

  /** The stream of delivery batches for one node. */
  inbox(node: string): string {
    return `${this.prefix}:n:{${node}}:in`;
  }
}

export const incarnation = (node: string, epoch: string): string => `${node}|${epoch}`;

/** Node ids appear in keys and channel names: no hash-tag braces, no separator, nothing invisible. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9._:-]{1,100}$/;
