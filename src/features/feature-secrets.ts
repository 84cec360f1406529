import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sql } from 'kysely';
import type { Logger } from 'pino';
import { lockKey, MIGRATION_LOCK_KEY, timeColumn } from '../adapters/sql/dialect.js';
import type { FeatureStorage } from '../ports/store.js';

/**
 * The features' secrets (FeatureContext.secret): 32 random bytes generated once. Every node of a
 * deployment must use the same ones (an app's client secret is checked, and its users' pairwise ids
 * computed, under a key derived from one), so where they live follows the store:
 *
 * - SQLite (one process): a file in data_dir, mode 0600, as always;
 * - PostgreSQL (a cluster): the table `feature_secrets` of the shared database, written once by
 *   whichever node needs a secret first. A node that has the file in its data_dir (a deployment that
 *   ran on one node before) offers the file's secret, so that ids and secrets issued then stay valid.
 */
export async function featureSecret(storage: FeatureStorage, dataDir: string, file: string, log?: Logger): Promise<Buffer> {
  checkName(file);
  if (storage.dialect === 'sqlite') return persistentSecret(dataDir, file);
  const path = join(dataDir, file);
  const local = existsSync(path) ? readFileSync(path, 'utf8').trim() : null;
  const offered = local ?? randomBytes(32).toString('base64');
  const db = storage.db;
  await db.transaction().execute(async (trx) => {
    // Created like feature_migrations: once, under the lock every schema change takes.
    await lockKey(trx, MIGRATION_LOCK_KEY);
    await trx.schema
      .createTable('feature_secrets')
      .ifNotExists()
      .addColumn('name', 'text', (c) => c.primaryKey().notNull())
      .addColumn('value', 'text', (c) => c.notNull())
      .addColumn('created_at', timeColumn(storage.dialect), (c) => c.notNull())
      .execute();
  });
  await sql`INSERT INTO feature_secrets (name, value, created_at) VALUES (${file}, ${offered}, ${Date.now()}) ON CONFLICT (name) DO NOTHING`.execute(db);
  const { rows } = await sql<{ value: string }>`SELECT value FROM feature_secrets WHERE name = ${file}`.execute(db);
  const value = rows[0]?.value;
  if (value === undefined) throw new Error(`feature secret ${file} could not be stored in the database`);
  if (local !== null && local !== value) {
    log?.warn({ secret: file, file: path }, 'this node\'s data_dir holds another secret than the cluster\'s database: the database\'s is used (the file is ignored)');
  }
  return Buffer.from(value, 'base64');
}

/** A secret of 32 random bytes kept base64 in `dir/file`, generated once. */
export function persistentSecret(dir: string, file: string): Buffer {
  checkName(file);
  const path = join(dir, file);
  if (existsSync(path)) return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
  const secret = randomBytes(32);
  // 'wx': two processes racing to create it must not end with two different secrets in use.
  try {
    writeFileSync(path, secret.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return Buffer.from(readFileSync(path, 'utf8').trim(), 'base64');
    throw e;
  }
  return secret;
}

function checkName(file: string): void {
  if (!/^[a-z0-9][a-z0-9._-]*$/i.test(file)) throw new Error(`secret file name "${file}" must be a plain file name`);
}
