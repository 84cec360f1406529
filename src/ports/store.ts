import type { Kysely } from 'kysely';
import type { LastSeen } from '../core/presence.js';
import type { RosterItem } from '../core/roster.js';

/** SCRAM credentials (RFC 5802) kept instead of anything that could reveal the password. */
export interface ScramKeys {
  readonly salt: string; // base64
  readonly iterations: number;
  readonly storedKey: string; // base64
  readonly serverKey: string; // base64
}

export interface AccountRecord {
  readonly jid: string;
  /** scrypt hash in the self-describing form produced by engine/credentials.ts. */
  readonly passwordHash: string;
  readonly scramSha1: ScramKeys | null;
  readonly scramSha256: ScramKeys | null;
  readonly createdAt: number;
}

export interface AccountSettings {
  /** Anyone, including anonymous HTTP requesters, may see this account's presence. */
  readonly publicPresence?: boolean;
  readonly [key: string]: unknown;
}

/** A message kept for an account that had no resource able to take it (XEP-0160). */
export interface OfflineMessage {
  readonly id: number;
  readonly to: string;
  readonly from: string;
  /** The stanza as serialised XML, exactly as it will be written to the recipient. */
  readonly xml: string;
  readonly at: number;
}

/**
 * One online account as the crash checkpoint last wrote it down: enough to give it a truthful last
 * seen if the process dies without a clean shutdown. Rows belong to the node that wrote them (the
 * Store is opened with its node id), so in a cluster a node recovers only the sessions it held.
 */
export interface PresenceCheckpoint {
  readonly jid: string;
  /** Epoch ms the account came online. */
  readonly onlineSince: number;
  /** Epoch ms the account was last heard (any frame, stanza or pong of an available session). */
  readonly lastHeard: number;
  /** The account's status at that time. */
  readonly status: string | null;
}

export interface AccountPage {
  readonly jids: string[];
  /** Pass as `after` to get the next page; null when this was the last page. */
  readonly next: string | null;
}

/** The SQL databases a Store runs on. */
export type StorageDialect = 'sqlite' | 'postgres';

export interface FeatureStorage {
  readonly dialect: StorageDialect;
  readonly db: Kysely<any>;
}

/**
 * Durable state. Implementations: SQLite (embedded default), PostgreSQL (cluster), one kysely
 * implementation (src/adapters/sql/sql-store.ts) with the dialect differences isolated.
 * All JIDs passed in are already normalised bare JIDs. Methods reject with PresenceError('conflict')
 * or return undefined/false as documented; PresenceError('unavailable') when the database cannot be
 * reached (PostgreSQL down or restarting: the same call succeeds again once it is back); any other
 * rejection is an infrastructure failure. Safe with several Stores (nodes) writing one database at once.
 */
export interface Store {
  /** Creates or upgrades the schema to the latest version. Safe to call on every start. */
  migrate(): Promise<void>;
  close(): Promise<void>;
  /**
   * The database handle features build their own repositories on (src/features/feature.ts), with the
   * dialect so a feature picks its implementation per database. Shared with the Store: on SQLite one
   * connection and one file, so a feature's transaction is serialised with the core's writes; on
   * PostgreSQL the same pool, where transactions run concurrently (other nodes write too).
   */
  featureStorage(): FeatureStorage;

  /** Rejects with PresenceError code 'conflict' if the account exists. */
  createAccount(account: AccountRecord): Promise<void>;
  getAccount(jid: string): Promise<AccountRecord | undefined>;
  /** Removes the account with its roster, blocks, settings, last-seen and checkpoint row. false if it did not exist. */
  deleteAccount(jid: string): Promise<boolean>;
  /** Sorted by JID. `after` is exclusive. */
  listAccounts(opts: { domain?: string; after?: string; limit: number }): Promise<AccountPage>;
  countAccounts(): Promise<number>;
  /** false if the account does not exist. */
  setCredentials(
    jid: string,
    creds: Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>,
  ): Promise<boolean>;

  getSettings(jid: string): Promise<AccountSettings>;
  /** Merges `patch` into the settings; a key set to null is removed. */
  updateSettings(jid: string, patch: Record<string, unknown>): Promise<AccountSettings>;
  /** Every account whose settings choose `publicPresence` (true or false), read once at start. */
  listPublicPresenceChoices(): Promise<Map<string, boolean>>;

  /** One round trip to the database (health checks): rejects, with `unavailable` when it cannot be reached. */
  ping(): Promise<void>;

  getRoster(owner: string): Promise<RosterItem[]>;
  getRosterItem(owner: string, contact: string): Promise<RosterItem | undefined>;
  /**
   * Writes several roster items atomically (all or none), bumping the roster version of each owner
   * concerned. A subscription change touches both parties' rosters, which must never disagree.
   */
  putRosterItems(items: readonly RosterItem[]): Promise<void>;
  /**
   * Changes the items between two accounts from what is stored, not from a cache: in one write
   * transaction, taken in turn with every other call for the same two accounts (in a cluster, on any
   * node), reads owner→contact and contact→owner, hands them to `decide`, and writes the items it
   * returns (bumping their owners' roster versions). Two nodes answering both ends of a subscription at
   * once would otherwise each write flags computed from a cache the other's change had not reached,
   * and one would undo the other. `decide` may run more than once (a retried transaction): it only computes.
   */
  updateRosterPair<T>(
    owner: string,
    contact: string,
    decide: (ownerItem: RosterItem | undefined, contactItem: RosterItem | undefined) => { readonly put: readonly RosterItem[]; readonly result: T },
  ): Promise<T>;
  /** Removes items atomically; absent items are ignored. Bumps each owner's roster version. */
  removeRosterItems(keys: ReadonlyArray<{ owner: string; contact: string }>): Promise<void>;
  /** Monotonic counter, incremented on every change of the owner's roster (XEP-0237). 0 if never changed. */
  getRosterVersion(owner: string): Promise<number>;
  /** Every roster item, in any account, whose contact is `contact` (used when an account is deleted). */
  getItemsPointingAt(contact: string): Promise<RosterItem[]>;

  getBlocks(owner: string): Promise<string[]>;
  /** true if newly added. */
  addBlock(owner: string, blocked: string): Promise<boolean>;
  /** true if it was there. */
  removeBlock(owner: string, blocked: string): Promise<boolean>;

  getLastSeen(jid: string): Promise<LastSeen | null>;
  getLastSeenMany(jids: readonly string[]): Promise<Map<string, LastSeen>>;
  setLastSeen(jid: string, lastSeen: LastSeen): Promise<void>;
  setLastSeenMany(entries: ReadonlyArray<{ jid: string; lastSeen: LastSeen }>): Promise<void>;

  /**
   * Every row of the presence checkpoint written by this Store's node (left over only after an unclean
   * stop), sorted by JID; or by node `node`, for a node that takes over a dead one's recovery.
   */
  getPresenceCheckpoints(node?: string): Promise<PresenceCheckpoint[]>;
  /** Upserts this node's `rows` and deletes its rows of `remove`, in one transaction. */
  writePresenceCheckpoints(rows: readonly PresenceCheckpoint[], remove: readonly string[]): Promise<void>;
  /** Deletes every row of this node, or of node `node` (clean shutdown, or after recovery). */
  clearPresenceCheckpoints(node?: string): Promise<void>;

  /** Stores one message durably; resolves with its id once committed. */
  addOfflineMessage(message: Omit<OfflineMessage, 'id'>): Promise<number>;
  /**
   * Stores one message unless its recipient already has `max` waiting: resolves with its id once
   * committed, or null when full. The count and the insert are atomic, also between nodes, so the
   * limit holds however many senders race.
   */
  addOfflineMessageIfRoom(message: Omit<OfflineMessage, 'id'>, max: number): Promise<number | null>;
  /** Oldest first. */
  getOfflineMessages(to: string, limit: number): Promise<OfflineMessage[]>;
  countOfflineMessages(to: string): Promise<number>;
  deleteOfflineMessages(ids: readonly number[]): Promise<void>;
  /**
   * Takes, until `now + ms`, the right to hand out `to`'s stored messages, unless another holder has it
   * and its time has not run out: false then. One deliverer per account at a time across a cluster, so
   * that two resources announcing themselves on two nodes at the same moment are not both handed the
   * same messages.
   */
  claimOfflineDelivery(to: string, holder: string, now: number, ms: number): Promise<boolean>;
  /** Gives the right back (only if `holder` still has it). */
  releaseOfflineDelivery(to: string, holder: string): Promise<void>;
}
