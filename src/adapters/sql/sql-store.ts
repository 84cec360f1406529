import { Kysely, sql, type Generated, type RawBuilder, type Transaction } from 'kysely';
import { PresenceError } from '../../core/errors.js';
import type { LastSeen } from '../../core/presence.js';
import type { RosterItem } from '../../core/roster.js';
import type { SubState } from '../../core/subscription-state.js';
import type {
  AccountPage,
  AccountRecord,
  AccountSettings,
  FeatureStorage,
  OfflineMessage,
  PresenceCheckpoint,
  ScramKeys,
  StorageDialect,
  Store,
} from '../../ports/store.js';
import { lockKey } from './dialect.js';
import { EMBEDDED_NODE, runMigrations } from './migrations.js';

export interface AccountsTable {
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

export interface RosterItemsTable {
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
  node: string;
  jid: string;
  online_since: number;
  last_heard: number;
  status: string | null;
}

interface OfflineDeliveryTable {
  recipient: string;
  holder: string;
  until: number;
}

interface OfflineMessagesTable {
  id: Generated<number>;
  recipient: string;
  sender: string;
  xml: string;
  at: number;
}

export interface Tables {
  accounts: AccountsTable;
  account_settings: AccountSettingsTable;
  roster_items: RosterItemsTable;
  roster_versions: RosterVersionsTable;
  blocks: BlocksTable;
  last_seen: LastSeenTable;
  offline_messages: OfflineMessagesTable;
  offline_delivery: OfflineDeliveryTable;
  presence_checkpoint: PresenceCheckpointTable;
}

/** The few things the two databases need done differently; everything else below is shared. */
export interface DialectOps {
  readonly dialect: StorageDialect;
  /**
   * Runs `fn` in a write transaction. SQLite: BEGIN IMMEDIATE, one writer at a time. PostgreSQL: READ
   * COMMITTED, retried when the server aborts it to break a deadlock or a serialization conflict
   * (`fn` only touches the database, so running it again is safe).
   */
  transaction<T>(db: Kysely<Tables>, fn: (trx: Transaction<Tables>) => Promise<T>): Promise<T>;
  /** `jid` ends with `suffix`, exactly (no LIKE wildcards, no case folding). */
  jidEndsWith(suffix: string): RawBuilder<boolean>;
  /**
   * A multi-row upsert may name each key once only (PostgreSQL: "ON CONFLICT DO UPDATE command cannot
   * affect row a second time"), so batches are reduced to the last entry per key first. SQLite
   * applies the rows in order, the later winning, at no cost.
   */
  readonly upsertOncePerKey: boolean;
}

/**
 * Well under SQLite's bound-parameter limit (999 in builds older than 3.32), and small enough that
 * the few distinct IN-list shapes stay in the statement cache. PostgreSQL's limit (65535) is far.
 */
const IN_CHUNK = 500;
/** Rows per multi-row INSERT, at three parameters each, under the same limit. */
const LAST_SEEN_ROWS = 300;
/** Rows per multi-row INSERT of the presence checkpoint, at five parameters each. */
const CHECKPOINT_ROWS = 160;

const bit = (b: boolean): number => (b ? 1 : 0);

export function toItem(r: RosterItemsTable): RosterItem {
  const state: SubState = {
    to: r.sub_to === 1,
    from: r.sub_from === 1,
    pendingOut: r.pending_out === 1,
    pendingIn: r.pending_in === 1,
    preApproved: r.pre_approved === 1,
  };
  return { owner: r.owner, contact: r.contact, name: r.name, groups: JSON.parse(r.groups) as string[], state };
}

export function toAccount(r: AccountsTable): AccountRecord {
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

export function parseSettings(data: string | undefined): Record<string, unknown> {
  if (data === undefined) return {};
  const v: unknown = JSON.parse(data);
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

/** The last entry for each key, as applying the rows in order would leave (see DialectOps.upsertOncePerKey). */
function lastPerKey<T>(rows: readonly T[], key: (r: T) => string): T[] {
  const by = new Map<string, T>();
  for (const r of rows) by.set(key(r), r);
  return by.size === rows.length ? (rows as T[]) : [...by.values()];
}

const byOwnerContact = (a: { owner: string; contact: string }, b: { owner: string; contact: string }): number =>
  a.owner < b.owner ? -1 : a.owner > b.owner ? 1 : a.contact < b.contact ? -1 : a.contact > b.contact ? 1 : 0;

/**
 * Upserts roster items inside `trx` and bumps their owners' roster versions. Sorted (stable, so of one
 * key given twice the later still wins): every writer then locks rows in the same order, and a
 * subscription written from both ends at once cannot deadlock.
 */
async function writeRosterItems(trx: Transaction<Tables>, items: readonly RosterItem[]): Promise<void> {
  const now = Date.now();
  const sorted = items.length > 1 ? [...items].sort(byOwnerContact) : items;
  const owners = new Set<string>();
  for (const item of sorted) {
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
}

async function bumpRosterVersions(trx: Transaction<Tables>, owners: Iterable<string>): Promise<void> {
  // One atomic upsert per owner: concurrent writers (other nodes) each add one, none is lost.
  for (const owner of owners) {
    await trx
      .insertInto('roster_versions')
      .values({ owner, version: 1 })
      .onConflict((oc) => oc.column('owner').doUpdateSet((eb) => ({ version: eb('roster_versions.version', '+', 1) })))
      .execute();
  }
}

/**
 * The Store in portable kysely, for SQLite and PostgreSQL alike (sqlite/sqlite-store.ts and
 * postgres/postgres-store.ts build the connection and give the DialectOps).
 *
 * Writers at once: the embedded SQLite store has one writer at a time, but on PostgreSQL every node
 * writes, so each method is correct against concurrent callers on its own: single-statement upserts
 * where one suffices (roster versions, blocks, last seen), transactions for multi-row changes, rows
 * always locked in (owner, contact) order so that two transactions cannot deadlock, and an advisory
 * lock (sql/dialect.ts lockKey) where a read decides a write (settings merge, the offline-message cap).
 */
export class SqlStore implements Store {
  protected readonly db: Kysely<Tables>;
  readonly #ops: DialectOps;
  /** The node whose presence checkpoint rows this store reads and writes. */
  readonly node: string;

  protected constructor(db: Kysely<Tables>, ops: DialectOps, node: string = EMBEDDED_NODE) {
    this.db = db;
    this.#ops = ops;
    this.node = node;
  }

  async migrate(): Promise<void> {
    await runMigrations(this.db as unknown as Kysely<any>);
  }

  featureStorage(): FeatureStorage {
    return { dialect: this.#ops.dialect, db: this.db as unknown as Kysely<any> };
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }

  async ping(): Promise<void> {
    await sql`select 1`.execute(this.db);
  }

  #tx<T>(fn: (trx: Transaction<Tables>) => Promise<T>): Promise<T> {
    return this.#ops.transaction(this.db, fn);
  }

  // ------------------------------------------------------------------------------------- accounts

  async createAccount(account: AccountRecord): Promise<void> {
    // DO NOTHING on a duplicate: of two nodes creating the same account at once, the second waits for
    // the first to commit, then inserts nothing, and is told so.
    const res = await this.db
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
    const row = await this.db.selectFrom('accounts').selectAll().where('jid', '=', jid).executeTakeFirst();
    return row && toAccount(row);
  }

  async deleteAccount(jid: string): Promise<boolean> {
    return this.#tx(async (trx) => {
      const res = await trx.deleteFrom('accounts').where('jid', '=', jid).executeTakeFirst();
      // Cleared even when the account row is gone, so leftovers of an interrupted removal disappear.
      await trx.deleteFrom('roster_items').where('owner', '=', jid).execute();
      await trx.deleteFrom('roster_versions').where('owner', '=', jid).execute();
      await trx.deleteFrom('blocks').where('owner', '=', jid).execute();
      await trx.deleteFrom('account_settings').where('jid', '=', jid).execute();
      await trx.deleteFrom('last_seen').where('jid', '=', jid).execute();
      await trx.deleteFrom('offline_messages').where('recipient', '=', jid).execute();
      await trx.deleteFrom('offline_delivery').where('recipient', '=', jid).execute();
      // Else a crash recovery could give a re-created account the deleted one's last seen (any node's rows).
      await trx.deleteFrom('presence_checkpoint').where('jid', '=', jid).execute();
      return res.numDeletedRows > 0n;
    });
  }

  async listAccounts(opts: { domain?: string; after?: string; limit: number }): Promise<AccountPage> {
    const { limit } = opts;
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`listAccounts: limit must be a positive integer, got ${limit}`);
    let q = this.db
      .selectFrom('accounts')
      .select('jid')
      .orderBy('jid')
      .limit(limit + 1);
    if (opts.after !== undefined) q = q.where('jid', '>', opts.after);
    // An exact suffix test: LIKE would need escaping of '_' and '%' and ignores ASCII case.
    if (opts.domain !== undefined) q = q.where(this.#ops.jidEndsWith('@' + opts.domain));
    const jids = (await q.execute()).map((r) => r.jid);
    if (jids.length <= limit) return { jids, next: null };
    jids.length = limit;
    return { jids, next: jids[limit - 1] ?? null };
  }

  async countAccounts(): Promise<number> {
    const row = await this.db
      .selectFrom('accounts')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .executeTakeFirstOrThrow();
    return Number(row.n);
  }

  async setCredentials(
    jid: string,
    creds: Pick<AccountRecord, 'passwordHash' | 'scramSha1' | 'scramSha256'>,
  ): Promise<boolean> {
    const res = await this.db
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
    const row = await this.db.selectFrom('account_settings').select('data').where('jid', '=', jid).executeTakeFirst();
    return parseSettings(row?.data);
  }

  async updateSettings(jid: string, patch: Record<string, unknown>): Promise<AccountSettings> {
    // Read-modify-write: the CLI, or another node, may patch the same row concurrently. The lock (no
    // row may exist yet to lock) makes the second patch read what the first wrote.
    return this.#tx(async (trx) => {
      await lockKey(trx, `settings:${jid}`);
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
    const rows = await this.db.selectFrom('account_settings').select(['jid', 'data']).where('data', 'like', '%"publicPresence"%').execute();
    const out = new Map<string, boolean>();
    for (const r of rows) {
      const v = parseSettings(r.data).publicPresence;
      if (typeof v === 'boolean') out.set(r.jid, v);
    }
    return out;
  }

  // --------------------------------------------------------------------------------------- roster

  async getRoster(owner: string): Promise<RosterItem[]> {
    const rows = await this.db
      .selectFrom('roster_items')
      .selectAll()
      .where('owner', '=', owner)
      .orderBy('contact')
      .execute();
    return rows.map(toItem);
  }

  async getRosterItem(owner: string, contact: string): Promise<RosterItem | undefined> {
    const row = await this.db
      .selectFrom('roster_items')
      .selectAll()
      .where('owner', '=', owner)
      .where('contact', '=', contact)
      .executeTakeFirst();
    return row && toItem(row);
  }

  async putRosterItems(items: readonly RosterItem[]): Promise<void> {
    if (items.length === 0) return;
    await this.#tx((trx) => writeRosterItems(trx, items));
  }

  async updateRosterPair<T>(
    owner: string,
    contact: string,
    decide: (ownerItem: RosterItem | undefined, contactItem: RosterItem | undefined) => { readonly put: readonly RosterItem[]; readonly result: T },
  ): Promise<T> {
    const [x, y] = owner < contact ? [owner, contact] : [contact, owner];
    return this.#tx(async (trx) => {
      await lockKey(trx, `roster-pair:${x}:${y}`);
      const rows = await trx
        .selectFrom('roster_items')
        .selectAll()
        .where((eb) => eb.or([eb.and([eb('owner', '=', owner), eb('contact', '=', contact)]), eb.and([eb('owner', '=', contact), eb('contact', '=', owner)])]))
        .execute();
      const items = rows.map(toItem);
      const { put, result } = decide(
        items.find((i) => i.owner === owner),
        items.find((i) => i.owner === contact),
      );
      if (put.length > 0) await writeRosterItems(trx, put);
      return result;
    });
  }

  async removeRosterItems(keys: ReadonlyArray<{ owner: string; contact: string }>): Promise<void> {
    if (keys.length === 0) return;
    const sorted = keys.length > 1 ? [...keys].sort(byOwnerContact) : keys;
    await this.#tx(async (trx) => {
      // Only rosters that actually changed get a new version, so clients holding it skip a needless push.
      const changed = new Set<string>();
      for (const { owner, contact } of sorted) {
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
    const row = await this.db
      .selectFrom('roster_versions')
      .select('version')
      .where('owner', '=', owner)
      .executeTakeFirst();
    return row?.version ?? 0;
  }

  async getItemsPointingAt(contact: string): Promise<RosterItem[]> {
    const rows = await this.db
      .selectFrom('roster_items')
      .selectAll()
      .where('contact', '=', contact)
      .orderBy('owner')
      .execute();
    return rows.map(toItem);
  }

  // --------------------------------------------------------------------------------------- blocks

  async getBlocks(owner: string): Promise<string[]> {
    const rows = await this.db
      .selectFrom('blocks')
      .select('blocked')
      .where('owner', '=', owner)
      .orderBy('blocked')
      .execute();
    return rows.map((r) => r.blocked);
  }

  async addBlock(owner: string, blocked: string): Promise<boolean> {
    const res = await this.db
      .insertInto('blocks')
      .values({ owner, blocked, created_at: Date.now() })
      .onConflict((oc) => oc.columns(['owner', 'blocked']).doNothing())
      .executeTakeFirst();
    return (res.numInsertedOrUpdatedRows ?? 0n) > 0n;
  }

  async removeBlock(owner: string, blocked: string): Promise<boolean> {
    const res = await this.db
      .deleteFrom('blocks')
      .where('owner', '=', owner)
      .where('blocked', '=', blocked)
      .executeTakeFirst();
    return res.numDeletedRows > 0n;
  }

  // ------------------------------------------------------------------------------------ last seen

  async getLastSeen(jid: string): Promise<LastSeen | null> {
    const row = await this.db.selectFrom('last_seen').select(['at', 'status']).where('jid', '=', jid).executeTakeFirst();
    return row ? { at: row.at, status: row.status } : null;
  }

  async getLastSeenMany(jids: readonly string[]): Promise<Map<string, LastSeen>> {
    const out = new Map<string, LastSeen>();
    const unique = [...new Set(jids)];
    for (let i = 0; i < unique.length; i += IN_CHUNK) {
      const rows = await this.db
        .selectFrom('last_seen')
        .selectAll()
        .where('jid', 'in', unique.slice(i, i + IN_CHUNK))
        .execute();
      for (const r of rows) out.set(r.jid, { at: r.at, status: r.status });
    }
    return out;
  }

  async setLastSeen(jid: string, lastSeen: LastSeen): Promise<void> {
    await this.#upsertLastSeen(this.db, [{ jid, lastSeen }]);
  }

  async setLastSeenMany(entries: ReadonlyArray<{ jid: string; lastSeen: LastSeen }>): Promise<void> {
    if (entries.length === 0) return;
    const unique = this.#ops.upsertOncePerKey ? lastPerKey(entries, (e) => e.jid) : entries;
    // One transaction, multi-row statements: one commit for the whole batch and a few statements
    // instead of one per account.
    await this.#tx(async (trx) => {
      for (let i = 0; i < unique.length; i += LAST_SEEN_ROWS) {
        await this.#upsertLastSeen(trx, unique.slice(i, i + LAST_SEEN_ROWS));
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

  async getPresenceCheckpoints(node: string = this.node): Promise<PresenceCheckpoint[]> {
    const rows = await this.db.selectFrom('presence_checkpoint').selectAll().where('node', '=', node).orderBy('jid').execute();
    return rows.map((r) => ({ jid: r.jid, onlineSince: r.online_since, lastHeard: r.last_heard, status: r.status }));
  }

  async writePresenceCheckpoints(rows: readonly PresenceCheckpoint[], remove: readonly string[]): Promise<void> {
    if (rows.length === 0 && remove.length === 0) return;
    const node = this.node;
    const unique = this.#ops.upsertOncePerKey ? lastPerKey(rows, (r) => r.jid) : rows;
    // One commit per checkpoint, however many accounts changed.
    await this.#tx(async (trx) => {
      for (let i = 0; i < unique.length; i += CHECKPOINT_ROWS) {
        await trx
          .insertInto('presence_checkpoint')
          .values(unique.slice(i, i + CHECKPOINT_ROWS).map((r) => ({ node, jid: r.jid, online_since: r.onlineSince, last_heard: r.lastHeard, status: r.status })))
          .onConflict((oc) =>
            oc.columns(['node', 'jid']).doUpdateSet((eb) => ({
              online_since: eb.ref('excluded.online_since'),
              last_heard: eb.ref('excluded.last_heard'),
              status: eb.ref('excluded.status'),
            })),
          )
          .execute();
      }
      for (let i = 0; i < remove.length; i += IN_CHUNK) {
        await trx.deleteFrom('presence_checkpoint').where('node', '=', node).where('jid', 'in', remove.slice(i, i + IN_CHUNK)).execute();
      }
    });
  }

  async clearPresenceCheckpoints(node: string = this.node): Promise<void> {
    await this.db.deleteFrom('presence_checkpoint').where('node', '=', node).execute();
  }

  // ----------------------------------------------------------------------------- offline messages

  async addOfflineMessage(m: Omit<OfflineMessage, 'id'>): Promise<number> {
    const row = await this.db
      .insertInto('offline_messages')
      .values({ recipient: m.to, sender: m.from, xml: m.xml, at: m.at })
      .returning('id')
      .executeTakeFirstOrThrow();
    return row.id;
  }

  async addOfflineMessageIfRoom(m: Omit<OfflineMessage, 'id'>, max: number): Promise<number | null> {
    return this.#tx(async (trx) => {
      // Without the lock two nodes could both count max - 1 and both insert.
      await lockKey(trx, `offline:${m.to}`);
      const row = await trx
        .selectFrom('offline_messages')
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where('recipient', '=', m.to)
        .executeTakeFirst();
      if (Number(row?.n ?? 0) >= max) return null;
      const added = await trx
        .insertInto('offline_messages')
        .values({ recipient: m.to, sender: m.from, xml: m.xml, at: m.at })
        .returning('id')
        .executeTakeFirstOrThrow();
      return added.id;
    });
  }

  async getOfflineMessages(to: string, limit: number): Promise<OfflineMessage[]> {
    const rows = await this.db
      .selectFrom('offline_messages')
      .selectAll()
      .where('recipient', '=', to)
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map((r) => ({ id: r.id, to: r.recipient, from: r.sender, xml: r.xml, at: r.at }));
  }

  async countOfflineMessages(to: string): Promise<number> {
    const row = await this.db
      .selectFrom('offline_messages')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('recipient', '=', to)
      .executeTakeFirst();
    return Number(row?.n ?? 0);
  }

  async claimOfflineDelivery(to: string, holder: string, now: number, ms: number): Promise<boolean> {
    const row = await this.db
      .insertInto('offline_delivery')
      .values({ recipient: to, holder, until: now + ms })
      .onConflict((oc) =>
        oc
          .column('recipient')
          .doUpdateSet({ holder, until: now + ms })
          .where((eb) => eb.or([eb('offline_delivery.until', '<=', now), eb('offline_delivery.holder', '=', holder)])),
      )
      .returning('holder')
      .executeTakeFirst();
    return row !== undefined;
  }

  async releaseOfflineDelivery(to: string, holder: string): Promise<void> {
    await this.db.deleteFrom('offline_delivery').where('recipient', '=', to).where('holder', '=', holder).execute();
  }

  async deleteOfflineMessages(ids: readonly number[]): Promise<void> {
    for (let i = 0; i < ids.length; i += IN_CHUNK) {
      await this.db.deleteFrom('offline_messages').where('id', 'in', ids.slice(i, i + IN_CHUNK)).execute();
    }
  }
}
