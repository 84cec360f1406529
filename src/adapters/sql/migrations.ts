import { sql, type Kysely } from 'kysely';
import type { StorageDialect } from '../../ports/store.js';
import { autoId, dialectOf, keyTextColumn, lockKey, MIGRATION_LOCK_KEY, timeColumn, withoutRowid } from './dialect.js';

export interface Migration {
  readonly version: number;
  readonly name: string;
  /** `dialect` says which database `db` is, for the few column types that differ (sql/dialect.ts). */
  up(db: Kysely<any>, dialect: StorageDialect): Promise<void>;
}

/** The node id of the presence checkpoint rows of the embedded deployment (one process on one SQLite file). */
export const EMBEDDED_NODE = 'embedded';

/**
 * Append only: a released migration is never edited or renumbered, because databases in the field
 * have already recorded it as applied and would never see the change. (Versions 1-3 learnt the
 * dialect when PostgreSQL came; what they create on SQLite is byte for byte what they always did.)
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    async up(db, dialect) {
      const time = timeColumn(dialect);
      const key = keyTextColumn(dialect);
      await db.schema
        .createTable('accounts')
        .addColumn('jid', key, (c) => c.primaryKey().notNull())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('scram_sha1', 'text')
        .addColumn('scram_sha256', 'text')
        .addColumn('created_at', time, (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('account_settings')
        .addColumn('jid', key, (c) => c.primaryKey().notNull())
        .addColumn('data', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();

      // Flags are explicit NOT NULL 0/1 columns rather than one JSON blob so that a half-written
      // state can never be read back, and CHECKs catch a caller passing something else.
      const flag = (name: string) => sql`check (${sql.ref(name)} in (0, 1))`;
      await withoutRowid(
        dialect,
        db.schema
          .createTable('roster_items')
          // SQLite lets NULL into PRIMARY KEY columns of rowid tables, hence the explicit NOT NULLs.
          .addColumn('owner', key, (c) => c.notNull())
          .addColumn('contact', key, (c) => c.notNull())
          .addColumn('name', 'text')
          .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
          .addColumn('sub_to', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('sub_to')))
          .addColumn('sub_from', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('sub_from')))
          .addColumn('pending_out', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('pending_out')))
          .addColumn('pending_in', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('pending_in')))
          .addColumn('pre_approved', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('pre_approved')))
          .addColumn('updated_at', time, (c) => c.notNull())
          .addPrimaryKeyConstraint('roster_items_pk', ['owner', 'contact']),
        // Small rows looked up by a composite text key: no point in a hidden rowid and a second b-tree.
      ).execute();
      // Deleting an account must find the items in other rosters that point at it.
      await db.schema.createIndex('roster_items_contact').on('roster_items').column('contact').execute();

      await db.schema
        .createTable('roster_versions')
        .addColumn('owner', key, (c) => c.primaryKey().notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .execute();

      await withoutRowid(
        dialect,
        db.schema
          .createTable('blocks')
          .addColumn('owner', key, (c) => c.notNull())
          .addColumn('blocked', key, (c) => c.notNull())
          .addColumn('created_at', time, (c) => c.notNull())
          .addPrimaryKeyConstraint('blocks_pk', ['owner', 'blocked']),
      ).execute();

      await db.schema
        .createTable('last_seen')
        .addColumn('jid', key, (c) => c.primaryKey().notNull())
        .addColumn('at', time, (c) => c.notNull())
        .addColumn('status', 'text')
        .execute();
    },
  },
  {
    version: 2,
    name: 'offline messages',
    async up(db, dialect) {
      // One row per message, so a message is either fully stored or absent, and delivery deletes by id.
      const id = autoId(dialect);
      await db.schema
        .createTable('offline_messages')
        .addColumn('id', id.type, id.build)
        .addColumn('recipient', keyTextColumn(dialect), (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('xml', 'text', (c) => c.notNull())
        .addColumn('at', timeColumn(dialect), (c) => c.notNull())
        .execute();
      await db.schema.createIndex('offline_messages_recipient').on('offline_messages').columns(['recipient', 'id']).execute();
    },
  },
  {
    version: 3,
    name: 'presence checkpoint',
    async up(db, dialect) {
      // One row per account online on this server, rewritten in batches while it is online and emptied
      // on a clean shutdown: rows found at start mean the last run died, and say what to recover.
      await withoutRowid(
        dialect,
        db.schema
          .createTable('presence_checkpoint')
          .addColumn('jid', keyTextColumn(dialect), (c) => c.primaryKey().notNull())
          .addColumn('online_since', timeColumn(dialect), (c) => c.notNull())
          .addColumn('last_heard', timeColumn(dialect), (c) => c.notNull())
          .addColumn('status', 'text'),
      ).execute();
    },
  },
  {
    version: 4,
    name: 'presence checkpoint per node',
    async up(db, dialect) {
      // In a cluster every node checkpoints its own sessions, and one account may be online on two
      // nodes at once: rows are keyed by (node, jid), and a node recovers only the rows it wrote.
      // Neither database changes a primary key in place, so the table is rebuilt, keeping the rows a
      // crash just before the upgrade left (they were the embedded node's).
      const key = keyTextColumn(dialect);
      await withoutRowid(
        dialect,
        db.schema
          .createTable('presence_checkpoint_by_node')
          .addColumn('node', key, (c) => c.notNull().defaultTo(EMBEDDED_NODE))
          .addColumn('jid', key, (c) => c.notNull())
          .addColumn('online_since', timeColumn(dialect), (c) => c.notNull())
          .addColumn('last_heard', timeColumn(dialect), (c) => c.notNull())
          .addColumn('status', 'text')
          .addPrimaryKeyConstraint('presence_checkpoint_node_pk', ['node', 'jid']),
      ).execute();
      await db
        .insertInto('presence_checkpoint_by_node')
        .columns(['node', 'jid', 'online_since', 'last_heard', 'status'])
        .expression((eb) =>
          eb.selectFrom('presence_checkpoint').select([sql.lit(EMBEDDED_NODE).as('node'), 'jid', 'online_since', 'last_heard', 'status']),
        )
        .execute();
      await db.schema.dropTable('presence_checkpoint').execute();
      await db.schema.alterTable('presence_checkpoint_by_node').renameTo('presence_checkpoint').execute();
    },
  },
  {
    version: 5,
    name: 'offline delivery leases',
    async up(db, dialect) {
      // Who is handing out an account's stored messages right now, and until when (a holder that died
      // loses it when its time runs out): one deliverer per account across the nodes of a cluster.
      await withoutRowid(
        dialect,
        db.schema
          .createTable('offline_delivery')
          .addColumn('recipient', keyTextColumn(dialect), (c) => c.primaryKey().notNull())
          .addColumn('holder', 'text', (c) => c.notNull())
          .addColumn('until', timeColumn(dialect), (c) => c.notNull()),
      ).execute();
    },
  },
];

function checkOrder(migrations: readonly Migration[]): void {
  let prev = 0;
  for (const m of migrations) {
    if (!Number.isInteger(m.version) || m.version <= prev) {
      throw new Error(`migration "${m.name}" has version ${m.version}; versions must be increasing positive integers`);
    }
    prev = m.version;
  }
}

async function currentVersion(db: Kysely<any>): Promise<number> {
  const row = await db
    .selectFrom('schema_migrations')
    .select((eb) => eb.fn.max<number | null>('version').as('v'))
    .executeTakeFirst();
  return row?.v ?? 0;
}

/**
 * Brings the schema up to the newest migration. Each migration runs in its own transaction together
 * with the row recording it, so a crash leaves the database at a clean earlier version. Several
 * processes may migrate the same database at once (the CLI and the server on one SQLite file; every
 * node of a cluster starting together on PostgreSQL): each transaction first takes the write lock
 * (SQLite's BEGIN IMMEDIATE) or the migration advisory lock (PostgreSQL, whose DDL is transactional),
 * then re-reads the version, so the loser skips what the winner already applied.
 */
export async function runMigrations(db: Kysely<any>, migrations: readonly Migration[] = MIGRATIONS): Promise<void> {
  checkOrder(migrations);
  const dialect = dialectOf(db);
  const known = migrations.at(-1)?.version ?? 0;

  // Under the lock too: PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against a concurrent one
  // (both may pass the check, and the loser fails on the catalog's unique index).
  await db.transaction().execute(async (trx) => {
    await lockKey(trx, MIGRATION_LOCK_KEY);
    await trx.schema
      .createTable('schema_migrations')
      .ifNotExists()
      .addColumn('version', 'integer', (c) => c.primaryKey().notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('applied_at', timeColumn(dialect), (c) => c.notNull())
      .execute();
  });

  const found = await currentVersion(db);
  refuseFuture(found, known);

  for (const m of migrations) {
    if (m.version <= found) continue;
    await db.transaction().execute(async (trx) => {
      await lockKey(trx, MIGRATION_LOCK_KEY);
      if ((await currentVersion(trx)) >= m.version) return;
      await m.up(trx, dialect);
      await trx
        .insertInto('schema_migrations')
        .values({ version: m.version, name: m.name, applied_at: Date.now() })
        .execute();
    });
  }
  // A newer presenced may have migrated the database concurrently, past what this code understands.
  if (found < known) refuseFuture(await currentVersion(db), known);
}

function refuseFuture(found: number, known: number): void {
  // Running old code on a newer schema could silently corrupt data it does not understand.
  if (found > known) {
    throw new Error(
      `database schema is at version ${found} but this version of presenced only knows up to ${known}; ` +
        'run a newer presenced, or restore a backup made before the upgrade',
    );
  }
}
