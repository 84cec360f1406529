import Database from 'better-sqlite3';
import {
  CompiledQuery,
  Kysely,
  SqliteDialect,
  SqliteDriver,
  sql,
  type DatabaseConnection,
  type Generated,
  type Driver,
  type SqliteDatabase,
  type SqliteDialectConfig,
  type SqliteStatement,
  type Transaction,
} from 'kysely';
import { PresenceError } from '../../core/errors.js';
import { FifoGate } from './fifo-gate.js';
import type { LastSeen } from '../../core/presence.js';
import type { RosterItem } from '../../core/roster.js';
import type { SubState } from '../../core/subscription-state.js';
import type { AccountPage, AccountRecord, AccountSettings, FeatureStorage, OfflineMessage, PresenceCheckpoint, ScramKeys, Store } from '../../ports/store.js';
import { runMigrations } from './migrations.js';

interface AccountsTable {
  jid: string;
  password_hash: string;
  scram_sha1: string | null;
  scram_sha256: string | null;
  created_at: number;
}

interface AccountSettingsTable {
  jid: string;
  data: string;
}

interface RosterItemsTable {
  owner: string;
  contact: string;
  name: string | null;
  groups: string;
  sub_to: number;
  sub_from: number;
  pending_out: number;
  pending_in: number;
  pre_approved: number;
  updated_at: number;
}

interface RosterVersionsTable {
  owner: string;
  version: number;
}

interface BlocksTable {
  owner: string;
  blocked: string;
  created_at: number;
}

interface LastSeenTable {
  jid: string;
  at: number;
  status: string | null;
}

interface PresenceCheckpointTable {
  jid: string;
  online_since: number;
  last_heard: number;
  status: string | null;
}

interface OfflineMessagesTable {
  id: Generated<number>;
  recipient: string;
  sender: string;
  xml: string;
  at: number;
}

interface Tables {
  accounts: AccountsTable;
  account_settings: AccountSettingsTable;
  roster_items: RosterItemsTable;
  roster_versions: RosterVersionsTable;
  blocks: BlocksTable;
  last_seen: LastSeenTable;
  offline_messages: OfflineMessagesTable;
  presence_checkpoint: PresenceCheckpointTable;
}

type Db = Kysely<Tables>;

/**
 * Well under SQLite's bound-parameter limit (999 in builds older than 3.32), and small enough that
 * the few distinct IN-list shapes stay in the statement cache.
 */
const IN_CHUNK = 500;
/** Rows per multi-row INSERT, at three parameters each, under the same limit. */
const LAST_SEEN_ROWS = 300;
/** Rows per multi-row INSERT of the presence checkpoint, at four parameters each. */
const CHECKPOINT_ROWS = 200;
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
  private readonly gate = new FifoGate();

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

  constructor(config: SqliteDialectConfig) {
    super(config);
    this.#config = config;
  }

  override createDriver(): Driver {
    return new ImmediateSqliteDriver(this.#config);
  }
}

const bit = (b: boolean): number => (b ? 1 : 0);

function toItem(r: RosterItemsTable): RosterItem {
  const state: SubState = {
    to: r.sub_to === 1,
    from: r.sub_from === 1,
    pendingOut: r.pending_out === 1,
    pendingIn: r.pending_in === 1,
    preApproved: r.pre_approved === 1,
  };
  return { owner: r.owner, contact: r.contact, name: r.name, groups: JSON.parse(r.groups) as string[], state };
}

function toAccount(r: AccountsTable): AccountRecord {
  return {
    jid: r.jid,
    passwordHash: r.password_hash,
    scramSha1: r.scram_sha1 === null ? null : (JSON.parse(r.scram_sha1) as ScramKeys),
    scramSha256: r.scram_sha256 === null ? null : (JSON.parse(r.scram_sha256) as ScramKeys),
    createdAt: r.created_at,
  };
}

const scramJson = (k: ScramKeys | null): string | null =>
  k === null
    ? null
    : JSON.stringify({ salt: k.salt, iterations: k.iterations, storedKey: k.storedKey, serverKey: k.serverKey });

function parseSettings(data: string | undefined): Record<string, unknown> {
  if (data === undefined) return {};
  const v: unknown = JSON.parse(data);
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

async function bumpRosterVersions(trx: Transaction<Tables>, owners: Iterable<string>): Promise<void> {
  for (const owner of owners) {
    await trx
      .insertInto('roster_versions')
      .values({ owner, version: 1 })
      .onConflict((oc) => oc.column('owner').doUpdateSet((eb) => ({ version: eb('roster_versions.version', '+', 1) })))
      .execute();
  }
}

export class SqliteStore implements Store {
  readonly #raw: Database.Database;
  readonly #db: Db;
  #closed = false;

  private constructor(raw: Database.Database) {
    this.#raw = raw;
    this.#db = new Kysely<Tables>({ dialect: new ImmediateSqliteDialect({ database: new StatementCache(raw) }) });
  }

  /** Opens (creating if needed) the database file; its directory must exist. `:memory:` works too. */
  static open(opts: { path: string }): SqliteStore {
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
    return new SqliteStore(raw);
  }

  async migrate(): Promise<void> {
    await runMigrations(this.#db);
  }

  featureStorage(): FeatureStorage {
    return { dialect: 'sqlite', db: this.#db as unknown as Kysely<any> };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#db.destroy();
    // Kysely only closes the database if it ever ran a query.
    if (this.#raw.open) this.#raw.close();
  }

  // ------------------------------------------------------------------------------------- accounts

  async createAccount(account: AccountRecord): Promise<void> {
    const res = await this.#db
      .insertInto('accounts')
      .values({
        jid: account.jid,
        password_hash: account.passwordHash,
        scram_sha1: scramJson(account.scramSha1),
        scram_sha256: scramJson(account.scramSha256),
        created_at: account.createdAt,
      })
      .onConflict((oc) => oc.column('jid').doNothing())
      .executeTakeFirst();
    if (!res.numInsertedOrUpdatedRows) throw new PresenceError('conflict', `account ${account.jid} already exists`);
  }

  async getAccount(jid: string): Promise<AccountRecord | undefined> {
    const row = await this.#db.selectFrom('accounts').selectAll().where('jid', '=', jid).executeTakeFirst();
    return row && toAccount(row);
  }

  async deleteAccount(jid: string): Promise<boolean> {
    return this.#db.transaction().execute(async (trx) => {
      const res = await trx.deleteFrom('accounts').where('jid', '=', jid).executeTakeFirst();
      // Cleared even when the account row is gone, so leftovers of an interrupted removal disappear.
      await trx.deleteFrom('roster_items').where('owner', '=', jid).execute();
      await trx.deleteFrom('roster_versions').where('owner', '=', jid).execute();
      await trx.deleteFrom('blocks').where('owner', '=', jid).execute();
      await trx.deleteFrom('account_settings').where('jid', '=', jid).execute();
      await trx.deleteFrom('last_seen').where('jid', '=', jid).execute();
      await trx.deleteFrom('offline_messages').where('recipient', '=', jid).execute();
      // Else a crash recovery could give a re-created account the deleted one's last seen.
      await trx.deleteFrom('presence_checkpoint').where('jid', '=', jid).execute();
      return res.numDeletedRows > 0n;
    });
  }

  async listAccounts(opts: { domain?: string; after?: string; limit: number }): Promise<AccountPage> {
    const { limit } = opts;
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`listAccounts: limit must be a positive integer, got ${limit}`);
    let q = this.#db
      .selectFrom('accounts')
      .select('jid')
      .orderBy('jid')
      .limit(limit + 1);
    if (opts.after !== undefined) q = q.where('jid', '>', opts.after);
    if (opts.domain !== undefined) {
      // An exact suffix test: LIKE would need escaping of '_' and '%' and ignores ASCII case.
      const suffix = '@' + opts.domain;
      q = q.where(sql<boolean>`substr(jid, -length(${suffix})) = ${suffix}`);
    }
    const jids = (await q.execute()).map((r) => r.jid);
    if (jids.length <= limit) return { jids, next: null };
    jids.length = limit;
    return { jids, next: jids[limit - 1] ?? null };
  }

  async countAccounts(): Promise<number> {
    const row = await this.#db
      .selectFrom('accounts')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async setCredentials(
    jid: string,
    creds: Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>,
  ): Promise<boolean> {
    const res = await this.#db
      .updateTable('accounts')
      .set({
        password_hash: creds.passwordHash,
        scram_sha1: scramJson(creds.scramSha1),
        scram_sha256: scramJson(creds.scramSha256),
      })
      .where('jid', '=', jid)
      .executeTakeFirst();
    return res.numUpdatedRows > 0n;
  }

  // ------------------------------------------------------------------------------------- settings

  async getSettings(jid: string): Promise<AccountSettings> {
    const row = await this.#db.selectFrom('account_settings').select('data').where('jid', '=', jid).executeTakeFirst();
    return parseSettings(row?.data);
  }

  async updateSettings(jid: string, patch: Record<string, unknown>): Promise<AccountSettings> {
    // Read-modify-write inside one write-locked transaction: the CLI may patch the same row concurrently.
    return this.#db.transaction().execute(async (trx) => {
      const row = await trx.selectFrom('account_settings').select('data').where('jid', '=', jid).executeTakeFirst();
      // A Map, then fromEntries: plain assignment of a "__proto__" key would change the prototype.
      const merged = new Map(Object.entries(parseSettings(row?.data)));
      for (const [k, v] of Object.entries(patch)) {
        if (v === null) merged.delete(k);
        else if (v !== undefined) merged.set(k, v);
      }
      const settings = Object.fromEntries(merged) as AccountSettings;
      const data = JSON.stringify(settings);
      await trx
        .insertInto('account_settings')
        .values({ jid, data })
        .onConflict((oc) => oc.column('jid').doUpdateSet({ data }))
        .execute();
      // Re-parsed so the caller sees exactly what a later getSettings will return.
      return parseSettings(data);
    });
  }

  async listPublicPresenceChoices(): Promise<Map<string, boolean>> {
    // Only rows that mention the key: most accounts never choose, and the rest are parsed here once.
    const rows = await this.#db.selectFrom('account_settings').select(['jid', 'data']).where('data', 'like', '%"publicPresence"%').execute();
    const out = new Map<string, boolean>();
    for (const r of rows) {
      const v = parseSettings(r.data).publicPresence;
      if (typeof v === 'boolean') out.set(r.jid, v);
    }
    return out;
  }

  // --------------------------------------------------------------------------------------- roster

  async getRoster(owner: string): Promise<RosterItem[]> {
    const rows = await this.#db
      .selectFrom('roster_items')
      .selectAll()
      .where('owner', '=', owner)
      .orderBy('contact')
      .execute();
    return rows.map(toItem);
  }

  async getRosterItem(owner: string, contact: string): Promise<RosterItem | undefined> {
    const row = await this.#db
      .selectFrom('roster_items')
      .selectAll()
      .where('owner', '=', owner)
      .where('contact', '=', contact)
      .executeTakeFirst();
    return row && toItem(row);
  }

  async putRosterItems(items: readonly RosterItem[]): Promise<void> {
    if (items.length === 0) return;
    const now = Date.now();
    await this.#db.transaction().execute(async (trx) => {
      const owners = new Set<string>();
      for (const item of items) {
        const s = item.state;
        const fields = {
          name: item.name,
          groups: JSON.stringify(item.groups),
          sub_to: bit(s.to),
          sub_from: bit(s.from),
          pending_out: bit(s.pendingOut),
          pending_in: bit(s.pendingIn),
          pre_approved: bit(s.preApproved),
          updated_at: now,
        };
        await trx
          .insertInto('roster_items')
          .values({ owner: item.owner, contact: item.contact, ...fields })
          .onConflict((oc) => oc.columns(['owner', 'contact']).doUpdateSet(fields))
          .execute();
        owners.add(item.owner);
      }
      await bumpRosterVersions(trx, owners);
    });
  }

  async removeRosterItems(keys: ReadonlyArray<{ owner: string; contact: string }>): Promise<void> {
    if (keys.length === 0) return;
    await this.#db.transaction().execute(async (trx) => {
      // Only rosters that actually changed get a new version, so clients holding it skip a needless push.
      const changed = new Set<string>();
      for (const { owner, contact } of keys) {
        const res = await trx
          .deleteFrom('roster_items')
          .where('owner', '=', owner)
          .where('contact', '=', contact)
          .executeTakeFirst();
        if (res.numDeletedRows > 0n) changed.add(owner);
      }
      await bumpRosterVersions(trx, changed);
    });
  }

  async getRosterVersion(owner: string): Promise<number> {
    const row = await this.#db
      .selectFrom('roster_versions')
      .select('version')
      .where('owner', '=', owner)
      .executeTakeFirst();
    return row?.version ?? 0;
  }

  async getItemsPointingAt(contact: string): Promise<RosterItem[]> {
    const rows = await this.#db
      .selectFrom('roster_items')
      .selectAll()
      .where('contact', '=', contact)
      .orderBy('owner')
      .execute();
    return rows.map(toItem);
  }

  // --------------------------------------------------------------------------------------- blocks

  async getBlocks(owner: string): Promise<string[]> {
    const rows = await this.#db
      .selectFrom('blocks')
      .select('blocked')
      .where('owner', '=', owner)
      .orderBy('blocked')
      .execute();
    return rows.map((r) => r.blocked);
  }

  async addBlock(owner: string, blocked: string): Promise<boolean> {
    const res = await this.#db
      .insertInto('blocks')
      .values({ owner, blocked, created_at: Date.now() })
      .onConflict((oc) => oc.columns(['owner', 'blocked']).doNothing())
      .executeTakeFirst();
    return (res.numInsertedOrUpdatedRows ?? 0n) > 0n;
  }

  async removeBlock(owner: string, blocked: string): Promise<boolean> {
    const res = await this.#db
      .deleteFrom('blocks')
      .where('owner', '=', owner)
      .where('blocked', '=', blocked)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }

  // ------------------------------------------------------------------------------------ last seen

  async getLastSeen(jid: string): Promise<LastSeen | null> {
    const row = await this.#db.selectFrom('last_seen').select(['at', 'status']).where('jid', '=', jid).executeTakeFirst();
    return row ? { at: row.at, status: row.status } : null;
  }

  async getLastSeenMany(jids: readonly string[]): Promise<Map<string, LastSeen>> {
    const out = new Map<string, LastSeen>();
    const unique = [...new Set(jids)];
    for (let i = 0; i < unique.length; i += IN_CHUNK) {
      const rows = await this.#db
        .selectFrom('last_seen')
        .selectAll()
        .where('jid', 'in', unique.slice(i, i + IN_CHUNK))
        .execute();
      for (const r of rows) out.set(r.jid, { at: r.at, status: r.status });
    }
    return out;
  }

  async setLastSeen(jid: string, lastSeen: LastSeen): Promise<void> {
    await this.#upsertLastSeen(this.#db, [{ jid, lastSeen }]);
  }

  async setLastSeenMany(entries: ReadonlyArray<{ jid: string; lastSeen: LastSeen }>): Promise<void> {
    if (entries.length === 0) return;
    // One transaction, multi-row statements: one commit for the whole batch and a few statements
    // instead of one per account.
    await this.#db.transaction().execute(async (trx) => {
      for (let i = 0; i < entries.length; i += LAST_SEEN_ROWS) {
        await this.#upsertLastSeen(trx, entries.slice(i, i + LAST_SEEN_ROWS));
      }
    });
  }

  async #upsertLastSeen(db: Kysely<Tables>, entries: ReadonlyArray<{ jid: string; lastSeen: LastSeen }>): Promise<void> {
    await db
      .insertInto('last_seen')
      .values(entries.map(({ jid, lastSeen }) => ({ jid, at: lastSeen.at, status: lastSeen.status })))
      .onConflict((oc) =>
        oc.column('jid').doUpdateSet((eb) => ({ at: eb.ref('excluded.at'), status: eb.ref('excluded.status') })),
      )
      .execute();
  }

  // --------------------------------------------------------------------------- presence checkpoint

  async getPresenceCheckpoints(): Promise<PresenceCheckpoint[]> {
    const rows = await this.#db.selectFrom('presence_checkpoint').selectAll().orderBy('jid').execute();
    return rows.map((r) => ({ jid: r.jid, onlineSince: r.online_since, lastHeard: r.last_heard, status: r.status }));
  }

  async writePresenceCheckpoints(rows: readonly PresenceCheckpoint[], remove: readonly string[]): Promise<void> {
    if (rows.length === 0 && remove.length === 0) return;
    // One commit per checkpoint, however many accounts changed.
    await this.#db.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += CHECKPOINT_ROWS) {
        await trx
          .insertInto('presence_checkpoint')
          .values(rows.slice(i, i + CHECKPOINT_ROWS).map((r) => ({ jid: r.jid, online_since: r.onlineSince, last_heard: r.lastHeard, status: r.status })))
          .onConflict((oc) =>
            oc.column('jid').doUpdateSet((eb) => ({
              online_since: eb.ref('excluded.online_since'),
              last_heard: eb.ref('excluded.last_heard'),
              status: eb.ref('excluded.status'),
            })),
          )
          .execute();
      }
      for (let i = 0; i < remove.length; i += IN_CHUNK) {
        await trx.deleteFrom('presence_checkpoint').where('jid', 'in', remove.slice(i, i + IN_CHUNK)).execute();
      }
    });
  }

  async clearPresenceCheckpoints(): Promise<void> {
    await this.#db.deleteFrom('presence_checkpoint').execute();
  }

  // ----------------------------------------------------------------------------- offline messages

  async addOfflineMessage(m: Omit<OfflineMessage, 'id'>): Promise<number> {
    const row = await this.#db
      .insertInto('offline_messages')
      .values({ recipient: m.to, sender: m.from, xml: m.xml, at: m.at })
      .returning('id')
      .executeTakeFirstOrThrow();
    return row.id;
  }

  async getOfflineMessages(to: string, limit: number): Promise<OfflineMessage[]> {
    const rows = await this.#db
      .selectFrom('offline_messages')
      .selectAll()
      .where('recipient', '=', to)
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ id: r.id, to: r.recipient, from: r.sender, xml: r.xml, at: r.at }));
  }

  async countOfflineMessages(to: string): Promise<number> {
    const row = await this.#db
      .selectFrom('offline_messages')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('recipient', '=', to)
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async deleteOfflineMessages(ids: readonly number[]): Promise<void> {
    for (let i = 0; i < ids.length; i += IN_CHUNK) {
      await this.#db.deleteFrom('offline_messages').where('id', 'in', ids.slice(i, i + IN_CHUNK)).execute();
    }
  }
}
