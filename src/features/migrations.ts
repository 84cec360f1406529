import { sql, type Kysely } from 'kysely';
import type { Migration } from '../adapters/sqlite/migrations.js';
import { dialectOf, int64 } from './sql-dialect.js';

/**
 * Per-feature migrations: each feature ships its own ordered list, and applied versions are recorded
 * per feature in `feature_migrations`, apart from the core's `schema_migrations`, so features are
 * added, removed and upgraded independently of each other and of the core. A feature that is turned
 * off keeps its tables and versions; turning it on again brings it up to date.
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
 * PostgreSQL: nodes starting at once take turns, each migration's transaction holding this advisory
 * lock (released at its end), so the version re-read inside it sees what another node committed; a
 * SQLite write transaction already excludes the others. The key is arbitrary, fixed for presenced's
 * feature migrations.
 */
const FEATURE_MIGRATION_LOCK = 0x70726573_6665n; // "presfe"
async function takeTurn(trx: Kysely<any>): Promise<void> {
  if (dialectOf(trx) === 'postgres') await sql`SELECT pg_advisory_xact_lock(${FEATURE_MIGRATION_LOCK.toString()}::bigint)`.execute(trx);
}

/**
 * Applies the migrations of `feature` that the database has not recorded, each in its own
 * transaction with its record (a crash leaves a clean earlier version); the version is re-read inside
 * the transaction so that the CLI and the server migrating at once do not apply one twice.
 */
export async function runFeatureMigrations(db: Kysely<any>, feature: string, migrations: readonly Migration[]): Promise<void> {
  const known = migrations.at(-1)?.version ?? 0;
  const createTable = (d: Kysely<any>) =>
    d.schema
      .createTable('feature_migrations')
      .ifNotExists()
      .addColumn('feature', 'text', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('applied_at', int64(d), (c) => c.notNull())
      .addPrimaryKeyConstraint('feature_migrations_pk', ['feature', 'version'])
      .execute();
  // Two PostgreSQL sessions creating the same table at once: one fails, even with IF NOT EXISTS.
  if (dialectOf(db) === 'postgres') {
    await db.transaction().execute(async (trx) => {
      await takeTurn(trx);
      await createTable(trx);
    });
  } else {
    await createTable(db);
  }
  const found = await currentVersion(db, feature);
  refuseFuture(feature, found, known);
  for (const m of migrations) {
    if (m.version <= found) continue;
    await db.transaction().execute(async (trx) => {
      await takeTurn(trx);
      if ((await currentVersion(trx, feature)) >= m.version) return;
      await m.up(trx);
      await trx.insertInto('feature_migrations').values({ feature, version: m.version, name: m.name, applied_at: Date.now() }).execute();
    });
  }
  if (found < known) refuseFuture(feature, await currentVersion(db, feature), known);
}
