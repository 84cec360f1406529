import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { APPS_SECRET_FILE, deriveKeys, type AppKeys } from '../../src/features/apps/secrets.js';
import type { TestServer } from './server.js';

/**
 * A feature secret (src/features/feature-secrets.ts) of a test server, wherever that server keeps it:
 * the file `data_dir/<name>` of a single node on SQLite, or the row `<name>` of `feature_secrets` in
 * the shared PostgreSQL database of a cluster (TEST_CLUSTER, or a cluster node started on a store).
 * The server must have created it already (the apps feature does at start).
 */
export function featureSecretOf(t: TestServer, name: string): Buffer {
  // In cluster mode the test server's own config has its store blanked (so that a restart gets the
  // same cluster back); its nodes' configs name the database.
  const store = t.nodes[0]?.config.store ?? t.config.store;
  if (store === '') return Buffer.from(readFileSync(join(t.dataDir, name), 'utf8').trim(), 'base64');
  const rows = t.sql('SELECT value FROM feature_secrets WHERE name = ?', name);
  const value = rows[0]?.value;
  if (typeof value !== 'string') throw new Error(`no feature secret ${name} in the cluster's database`);
  return Buffer.from(value, 'base64');
}

/** The apps feature's keys (pairwise ids, client secret hashes) of a test server. */
export function appsKeysOf(t: TestServer): AppKeys {
  return deriveKeys(featureSecretOf(t, APPS_SECRET_FILE));
}
