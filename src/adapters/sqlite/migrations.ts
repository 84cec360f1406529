import { sql, type Kysely } from 'kysely';

export interface Migration {
  readonly version: number;
  readonly name: string;
  up(db: Kysely<any>): Promise<void>;
}

/**
 * Append only: a released migration is never edited or renumbered, because databases in the field
 * have already recorded it as applied and would never see the change.
 */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial schema',
    async up(db) {
      await db.schema
        .createTable('accounts')
        .addColumn('jid', 'text', (c) => c.primaryKey().notNull())
        .addColumn('password_hash', 'text', (c) => c.notNull())
        .addColumn('scram_sha1', 'text')
        .addColumn('scram_sha256', 'text')
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('account_settings')
        .addColumn('jid', 'text', (c) => c.primaryKey().notNull())
        .addColumn('data', 'text', (c) => c.notNull().defaultTo('{}'))
        .execute();

      // Flags are explicit NOT NULL 0/1 columns rather than one JSON blob so that a half-written
      // state can never be read back, and CHECKs catch a caller passing something else.
      const flag = (name: string) => sql`check (${sql.ref(name)} in (0, 1))`;
      await db.schema
        .createTable('roster_items')
        // SQLite lets NULL into PRIMARY KEY columns of rowid tables, hence the explicit NOT NULLs.
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('contact', 'text', (c) => c.notNull())
        .addColumn('name', 'text')
        .addColumn('groups', 'text', (c) => c.notNull().defaultTo('[]'))
        .addColumn('sub_to', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('sub_to')))
        .addColumn('sub_from', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('sub_from')))
        .addColumn('pending_out', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('pending_out')))
        .addColumn('pending_in', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('pending_in')))
        .addColumn('pre_approved', 'integer', (c) => c.notNull().defaultTo(0).modifyEnd(flag('pre_approved')))
        .addColumn('updated_at', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('roster_items_pk', ['owner', 'contact'])
        // Small rows looked up by a composite text key: no point in a hidden rowid and a second b-tree.
        .modifyEnd(sql`without rowid`)
        .execute();
      // Deleting an account must find the items in other rosters that point at it.
      await db.schema.createIndex('roster_items_contact').on('roster_items').column('contact').execute();

      await db.schema
        .createTable('roster_versions')
        .addColumn('owner', 'text', (c) => c.primaryKey().notNull())
        .addColumn('version', 'integer', (c) => c.notNull())
        .execute();

      await db.schema
        .createTable('blocks')
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('blocked', 'text', (c) => c.notNull())
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('blocks_pk', ['owner', 'blocked'])
        .modifyEnd(sql`without rowid`)
        .execute();

      await db.schema
        .createTable('last_seen')
        .addColumn('jid', 'text', (c) => c.primaryKey().notNull())
        .addColumn('at', 'integer', (c) => c.notNull())
        .addColumn('status', 'text')
        .execute();
    },
  },
  {
    version: 2,
    name: 'offline messages',
    async up(db) {
      // One row per message, so a message is either fully stored or absent, and delivery deletes by id.
      await db.schema
        .createTable('offline_messages')
        .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
        .addColumn('recipient', 'text', (c) => c.notNull())
        .addColumn('sender', 'text', (c) => c.notNull())
        .addColumn('xml', 'text', (c) => c.notNull())
        .addColumn('at', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('offline_messages_recipient').on('offline_messages').columns(['recipient', 'id']).execute();
    },
  },
  {
    version: 3,
    name: 'presence checkpoint',
    async up(db) {
      // One row per account online on this server, rewritten in batches while it is online and emptied
      // on a clean shutdown: rows found at start mean the last run died, and say what to recover.
      await db.schema
        .createTable('presence_checkpoint')
        .addColumn('jid', 'text', (c) => c.primaryKey().notNull())
        .addColumn('online_since', 'integer', (c) => c.notNull())
        .addColumn('last_heard', 'integer', (c) => c.notNull())
        .addColumn('status', 'text')
        .modifyEnd(sql`without rowid`)
        .execute();
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
 * with the row recording it, so a crash leaves the database at a clean earlier version. The CLI and the
 * server may both migrate the same file at once: the version is re-read inside the (write-locking)
 * transaction so the loser skips what the winner already applied.
 */
export async function runMigrations(db: Kysely<any>, migrations: readonly Migration[] = MIGRATIONS): Promise<void> {
  checkOrder(migrations);
  const known = migrations.at(-1)?.version ?? 0;

  await db.schema
    .createTable('schema_migrations')
    .ifNotExists()
    .addColumn('version', 'integer', (c) => c.primaryKey().notNull())
    .addColumn('name', 'text', (c) => c.notNull())
    .addColumn('applied_at', 'integer', (c) => c.notNull())
    .execute();

  const found = await currentVersion(db);
  refuseFuture(found, known);

  for (const m of migrations) {
    if (m.version <= found) continue;
    await db.transaction().execute(async (trx) => {
      if ((await currentVersion(trx)) >= m.version) return;
      await m.up(trx);
      await trx
        .insertInto('schema_migrations')
        .values({ version: m.version, name: m.name, applied_at: Date.now() })
        .execute();
    });
  }
  // A newer presenced may have migrated the file concurrently, past what this code understands.
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
