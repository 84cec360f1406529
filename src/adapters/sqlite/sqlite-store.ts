import Database from 'better-sqlite3';
import {
  CompiledQuery,
  Kysely,
  SqliteDialect,
  SqliteDriver,
  sql,
  type DatabaseConnection,
  type Driver,
  type SqliteDatabase,
  type SqliteDialectConfig,
  type SqliteStatement,
} from 'kysely';
import type { LastSeen } from '../../core/presence.js';
import type { RosterItem } from '../../core/roster.js';
import type { AccountRecord, AccountSettings, OfflineMessage } from '../../ports/store.js';
import { parseSettings, SqlStore, toAccount, toItem, type AccountsTable, type DialectOps, type RosterItemsTable, type Tables } from '../sql/sql-store.js';
import { FifoGate } from './fifo-gate.js';
import { SAFETY_NET_PAGES, WalCheckpointer } from './wal-checkpointer.js';

const STATEMENT_CACHE_SIZE = 256;

/**
 * Kysely's SQLite driver prepares every statement anew; the engine runs the same few dozen shapes all
 * the time, so keeping the prepared statements saves the parse and plan on each call. Safe because
 * better-sqlite3 runs a statement to completion synchronously and Kysely never streams here.
 */
class StatementCache implements SqliteDatabase {
  readonly #db: Database.Database;
  readonly #cache = new Map<string, SqliteStatement>();

  constructor(db: Database.Database) {
    this.#db = db;
  }

  prepare(text: string): SqliteStatement {
    const hit = this.#cache.get(text);
    if (hit) {
      // Re-insert so the Map's insertion order doubles as least-recently-used order.
      this.#cache.delete(text);
      this.#cache.set(text, hit);
      return hit;
    }
    const stmt = this.#db.prepare(text) as unknown as SqliteStatement;
    this.#cache.set(text, stmt);
    if (this.#cache.size > STATEMENT_CACHE_SIZE) {
      const oldest = this.#cache.keys().next();
      if (!oldest.done) this.#cache.delete(oldest.value);
    }
    return stmt;
  }

  close(): void {
    this.#cache.clear();
    if (this.#db.open) this.#db.close();
  }
}

/**
 * Every transaction here writes. A deferred BEGIN takes the write lock only at the first write, and in
 * WAL mode a reader that then tries to write after another process (the CLI) committed fails at once
 * with SQLITE_BUSY_SNAPSHOT, ignoring busy_timeout. BEGIN IMMEDIATE queues for the lock up front.
 */
class ImmediateSqliteDriver extends SqliteDriver {
  constructor(
    config: SqliteDialectConfig,
    private readonly gate: FifoGate,
  ) {
    super(config);
  }

  override async beginTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw('begin immediate'));
  }

  /**
   * Kysely's own mutex for SQLite's one connection wakes every waiter at each release and lets them
   * race for it again, so n queued queries cost O(n²) wake-ups, all of them microtasks that starve
   * the event loop (an anonymous batch of 1,000 lookups took 1.4 s). Callers queue here first, in
   * order, so Kysely's mutex never has more than one waiter.
   */
  override async acquireConnection(): Promise<DatabaseConnection> {
    await this.gate.enter();
    try {
      return await super.acquireConnection();
    } catch (e) {
      this.gate.leave();
      throw e;
    }
  }

  override async releaseConnection(): Promise<void> {
    try {
      await super.releaseConnection();
    } finally {
      this.gate.leave();
    }
  }
}

class ImmediateSqliteDialect extends SqliteDialect {
  readonly #config: SqliteDialectConfig;
  readonly #gate: FifoGate;

  constructor(config: SqliteDialectConfig, gate: FifoGate) {
    super(config);
    this.#config = config;
    this.#gate = gate;
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config, this.#gate);
  }
}

/**
 * The reads every login makes (account, roster, blocks, settings, last seen, roster version, offline
 * messages), as statements prepared once and run directly. Through Kysely each costs 25-75 µs of
 * building and compiling the query for a few µs of SQLite; a storm of 10,000 logins makes 80,000.
 */
class HotReads {
  readonly account: Database.Statement<[string], AccountsTable>;
  readonly roster: Database.Statement<[string], RosterItemsTable>;
  readonly blocks: Database.Statement<[string], { blocked: string }>;
  readonly settings: Database.Statement<[string], { data: string }>;
  readonly lastSeen: Database.Statement<[string], { at: number; status: string | null }>;
  readonly rosterVersion: Database.Statement<[string], { version: number }>;
  readonly offline: Database.Statement<[string, number], { id: number; recipient: string; sender: string; xml: string; at: number }>;

  constructor(db: Database.Database) {
    // The same statements (columns, order) as SqlStore's Kysely queries, so both paths answer alike.
    this.account = db.prepare('select * from "accounts" where "jid" = ?');
    this.roster = db.prepare('select * from "roster_items" where "owner" = ? order by "contact"');
    this.blocks = db.prepare('select "blocked" from "blocks" where "owner" = ? order by "blocked"');
    this.settings = db.prepare('select "data" from "account_settings" where "jid" = ?');
    this.lastSeen = db.prepare('select "at", "status" from "last_seen" where "jid" = ?');
    this.rosterVersion = db.prepare('select "version" from "roster_versions" where "owner" = ?');
    this.offline = db.prepare('select * from "offline_messages" where "recipient" = ? order by "id" limit ?');
  }
}


/** SQLite's side of the shared store: one writer at a time, so a plain BEGIN IMMEDIATE transaction is all it takes. */
const SQLITE_OPS: DialectOps = {
  dialect: 'sqlite',
  transaction: (db, fn) => db.transaction().execute(fn),
  // substr with a negative start counts from the end.
  jidEndsWith: (suffix) => sql<boolean>`substr(jid, -length(${suffix})) = ${suffix}`,
  upsertOncePerKey: false,
};

export class SqliteStore extends SqlStore {
  readonly #raw: Database.Database;
  readonly #checkpointer: WalCheckpointer | null;
  readonly #gate: FifoGate;
  #closed = false;
  /** Prepared after the migrations (the tables must exist); null before. */
  #hot: HotReads | null = null;

  private constructor(raw: Database.Database, node: string | undefined, checkpointer: WalCheckpointer | null) {
    const gate = new FifoGate();
    super(new Kysely<Tables>({ dialect: new ImmediateSqliteDialect({ database: new StatementCache(raw) }, gate) }), SQLITE_OPS, node);
    this.#raw = raw;
    this.#gate = gate;
    this.#checkpointer = checkpointer;
  }

  override async migrate(): Promise<void> {
    await super.migrate();
    this.#hot = new HotReads(this.#raw);
  }

  /**
   * The hot reads, when one may run at once instead of queueing for the connection: nothing holds it
   * or waits for it (a Kysely query takes the gate synchronously when it is issued, so a write issued
   * before this read is either done or holding it) and no transaction is open on it (whose uncommitted
   * rows this read would see). Otherwise the read queues behind them as before.
   */
  #direct(): HotReads | null {
    return this.#hot !== null && !this.#closed && !this.#gate.busy && !this.#raw.inTransaction ? this.#hot : null;
  }

  override async getAccount(jid: string): Promise<AccountRecord | undefined> {
    const hot = this.#direct();
    if (!hot) return super.getAccount(jid);
    const row = hot.account.get(jid);
    return row && toAccount(row);
  }

  override async getRoster(owner: string): Promise<RosterItem[]> {
    const hot = this.#direct();
    return hot ? hot.roster.all(owner).map(toItem) : super.getRoster(owner);
  }

  override async getBlocks(owner: string): Promise<string[]> {
    const hot = this.#direct();
    return hot ? hot.blocks.all(owner).map((r) => r.blocked) : super.getBlocks(owner);
  }

  override async getSettings(jid: string): Promise<AccountSettings> {
    const hot = this.#direct();
    return hot ? parseSettings(hot.settings.get(jid)?.data) : super.getSettings(jid);
  }

  override async getLastSeen(jid: string): Promise<LastSeen | null> {
    const hot = this.#direct();
    if (!hot) return super.getLastSeen(jid);
    const row = hot.lastSeen.get(jid);
    return row ? { at: row.at, status: row.status } : null;
  }

  override async getRosterVersion(owner: string): Promise<number> {
    const hot = this.#direct();
    return hot ? (hot.rosterVersion.get(owner)?.version ?? 0) : super.getRosterVersion(owner);
  }

  override async getOfflineMessages(to: string, limit: number): Promise<OfflineMessage[]> {
    const hot = this.#direct();
    if (!hot) return super.getOfflineMessages(to, limit);
    return hot.offline.all(to, limit).map((r) => ({ id: r.id, to: r.recipient, from: r.sender, xml: r.xml, at: r.at }));
  }

  /**
   * Opens (creating if needed) the database file; its directory must exist. `:memory:` works too.
   * `node` names the presence checkpoint rows (default: the embedded deployment's). With
   * `checkpointThread` (a long-running server) WAL checkpoints run on a thread of their own
   * (wal-checkpointer.ts); its failures are handed to the function given.
   */
  static open(opts: { path: string; node?: string; checkpointThread?: (error: string) => void }): SqliteStore {
    const raw = new Database(opts.path);
    try {
      // First, so that switching to WAL waits for a CLI or server that holds the file instead of failing.
      raw.pragma('busy_timeout = 5000');
      raw.pragma('journal_mode = WAL');
      // With WAL, NORMAL only risks the last commits on power loss, never corruption; FULL costs an
      // fsync per commit, and every presence change writes last-seen.
      raw.pragma('synchronous = NORMAL');
      raw.pragma('foreign_keys = ON');
    } catch (e) {
      raw.close();
      throw e;
    }
    let checkpointer: WalCheckpointer | null = null;
    if (opts.checkpointThread && raw.memory === false) {
      raw.pragma(`wal_autocheckpoint = ${SAFETY_NET_PAGES}`);
      checkpointer = new WalCheckpointer(opts.path, { onError: opts.checkpointThread });
    }
    return new SqliteStore(raw, opts.node, checkpointer);
  }

  override async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#checkpointer?.close();
    await super.close();
    // Kysely only closes the database if it ever ran a query.
    if (this.#raw.open) this.#raw.close();
  }
}
