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
 * seen if the process dies without a clean shutdown.
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

export interface FeatureStorage {
  readonly dialect: 'sqlite' | 'postgres';
  readonly db: Kysely<any>;
}

/**
 * Durable state. Implementations: SQLite (embedded default), PostgreSQL (cluster, later).
 * All JIDs passed in are already normalised bare JIDs. Methods reject with PresenceError('conflict')
 * or return undefined/false as documented; any other rejection is an infrastructure failure.
 */
export interface Store {
  /** Creates or upgrades the schema to the latest version. Safe to call on every start. */
  migrate(): Promise<void>;
  close(): Promise<void>;
  /**
   * The database handle features build their own repositories on (src/features/feature.ts), with the
   * dialect so a feature picks its implementation per database. Shared with the Store: one connection,
   * one file, and a feature's transaction is serialised with the core's writes.
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

  getRoster(owner: string): Promise<RosterItem[]>;
  getRosterItem(owner: string, contact: string): Promise<RosterItem | undefined>;
  /**
   * Writes several roster items atomically (all or none), bumping the roster version of each owner
   * concerned. A subscription change touches both parties' rosters, which must never disagree.
   */
  putRosterItems(items: readonly RosterItem[]): Promise<void>;
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

  /** Every row of the presence checkpoint (left over only after an unclean stop). */
  getPresenceCheckpoints(): Promise<PresenceCheckpoint[]>;
  /** Upserts `rows` and deletes the rows of `remove`, in one transaction. */
  writePresenceCheckpoints(rows: readonly PresenceCheckpoint[], remove: readonly string[]): Promise<void>;
  /** Deletes every row (clean shutdown, or after recovery). */
  clearPresenceCheckpoints(): Promise<void>;

  /** Stores one message durably; resolves with its id once committed. */
  addOfflineMessage(message: Omit<OfflineMessage, 'id'>): Promise<number>;
  /** Oldest first. */
  getOfflineMessages(to: string, limit: number): Promise<OfflineMessage[]>;
  countOfflineMessages(to: string): Promise<number>;
  deleteOfflineMessages(ids: readonly number[]): Promise<void>;
}
