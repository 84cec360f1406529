import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openPostgres } from '../../src/adapters/postgres/connection.js';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import type { Migration } from '../../src/adapters/sqlite/migrations.js';
import { runFeatureMigrations } from '../../src/features/migrations.js';
import type { FeatureStorage } from '../../src/ports/store.js';
import { startPostgres, type PrivatePostgres } from './private-services.js';

/**
 * A database for a feature's storage tests, on either dialect: a SQLite file under a temp directory
 * (through the core Store, which turns foreign keys on as in production), or a fresh database of a
 * private PostgreSQL server. `node()` opens another connection pool on the same database, as a second
 * presenced node would.
 */
export interface FeatureDb {
  readonly storage: FeatureStorage;
  /** Another pool on the same PostgreSQL database (another node); SQLite has one connection, itself. */
  node(): FeatureStorage;
  close(): Promise<void>;
}

export type Dialect = FeatureStorage['dialect'];

export async function sqliteFeatureDb(): Promise<FeatureDb> {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-feature-db-'));
  const main = SqliteStore.open({ path: join(dir, 'presenced.sqlite') });
  await main.migrate();
  const storage = main.featureStorage();
  return {
    storage,
    node: () => storage,
    async close() {
      await main.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let dbCount = 0;

export interface PostgresDbOptions {
  /** An ICU locale for the database's default collation (text order), e.g. 'en-US'; byte order (C) otherwise. */
  readonly icuLocale?: string;
}

export async function postgresFeatureDb(pg: PrivatePostgres, opts: PostgresDbOptions = {}): Promise<FeatureDb> {
  const name = `feat_${process.pid}_${++dbCount}_${randomBytes(3).toString('hex')}`;
  let url: string;
  if (opts.icuLocale === undefined) url = pg.createDatabase(name);
  else {
    if (!/^[A-Za-z-]+$/.test(opts.icuLocale)) throw new Error(`not a plain ICU locale: ${opts.icuLocale}`);
    pg.psql('postgres', `CREATE DATABASE ${name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE '${opts.icuLocale}' LOCALE 'C'`);
    url = pg.urlOf(name);
  }
  const pools: Array<{ db: FeatureStorage['db'] }> = [];
  const open = (): FeatureStorage => {
    const { db } = openPostgres(url, { poolSize: 5, applicationName: `presenced-test-${pools.length}` });
    pools.push({ db });
    return { dialect: 'postgres', db };
  };
  const storage = open();
  return {
    storage,
    node: open,
    async close() {
      await Promise.all(pools.map((p) => p.db.destroy()));
    },
  };
}

let server: Promise<PrivatePostgres> | null = null;

/** The file's private PostgreSQL server, started on first use (stopped by stopAllPrivateServices). */
export function sharedPostgres(): Promise<PrivatePostgres> {
  server ??= startPostgres();
  return server;
}

/** Opens a database of `dialect` with the features' migrations applied (PostgreSQL: a new database on sharedPostgres()). */
export async function featureDb(dialect: Dialect, migrations: ReadonlyArray<readonly [string, readonly Migration[]]>, pgOpts: PostgresDbOptions = {}): Promise<FeatureDb> {
  const d = dialect === 'sqlite' ? await sqliteFeatureDb() : await postgresFeatureDb(await sharedPostgres(), pgOpts);
  for (const [feature, list] of migrations) await runFeatureMigrations(d.storage.db, feature, list);
  return d;
}
