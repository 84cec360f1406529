import type { Kysely } from 'kysely';
import { dialectOf, lockKey, MIGRATION_LOCK_KEY, timeColumn } from '../adapters/sql/dialect.js';
import type { Migration } from '../adapters/sql/migrations.js';

/**
 * Per-feature migrations: each feature ships its own ordered list, and applied versions are recorded
 * per feature in `feature_migrations`, apart from the core's `schema_migrations`, so features are
 * added, removed and upgraded independently of each other and of the core. A feature that is turned
 * off keeps its tables and versions; turning it on again brings it up to date.
 *
 * The same code runs on SQLite and PostgreSQL: each migration's `up(db, dialect)` learns which, and
 * follows the rules of src/adapters/sql/dialect.ts (timeColumn for epoch ms, keyTextColumn, autoId).
 */

async function currentVersion(db: Kysely<any>, feature: string): Promise<number> {
  const row = await db
    .selectFrom('feature_migrations')
    .where('feature', '=', feature)
    .select((eb) => eb.fn.max<number | null>('version').as('v'))
    .executeTakeFirst();
  return row?.v ?? 0;
}

function refuseFuture(feature: string, found: number, known: number): void {
  // Old code on a newer schema could corrupt data it does not understand, as for the core schema.
  if (found > known) {
    throw new Error(
      `feature ${feature}: its database tables are at version ${found} but this version of presenced only knows up to ${known}; ` +
        'run a newer presenced, or restore a backup made before the upgrade',
    );
  }
}

/**
 * Applies the migrations of `feature` that the database has not recorded, each in its own
 * transaction with its record (a crash leaves a clean earlier version). The CLI and the server, or
 * every node of a cluster, may migrate at once: each transaction takes the migration lock first
 * (SQLite's write lock; on PostgreSQL the advisory lock the core migrations take too) and re-reads
 * the version, so none is applied twice.
 */
export async function runFeatureMigrations(db: Kysely<any>, feature: string, migrations: readonly Migration[]): Promise<void> {
  const dialect = dialectOf(db);
  const known = migrations.at(-1)?.version ?? 0;
  await db.transaction().execute(async (trx) => {
    await lockKey(trx, MIGRATION_LOCK_KEY);
    await trx.schema
      .createTable('feature_migrations')
      .ifNotExists()
      .addColumn('feature', 'text', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('applied_at', timeColumn(dialect), (c) => c.notNull())
      .addPrimaryKeyConstraint('feature_migrations_pk', ['feature', 'version'])
      .execute();
  });
  const found = await currentVersion(db, feature);
  refuseFuture(feature, found, known);
  for (const m of migrations) {
    if (m.version <= found) continue;
    await db.transaction().execute(async (trx) => {
      await lockKey(trx, MIGRATION_LOCK_KEY);
      if ((await currentVersion(trx, feature)) >= m.version) return;
      await m.up(trx, dialect);
      await trx.insertInto('feature_migrations').values({ feature, version: m.version, name: m.name, applied_at: Date.now() }).execute();
    });
  }
  if (found < known) refuseFuture(feature, await currentVersion(db, feature), known);
}
