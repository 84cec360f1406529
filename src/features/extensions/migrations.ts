import { sql } from 'kysely';
import type { Migration } from '../../adapters/sqlite/migrations.js';
import { dialectOf, int64 } from '../sql-dialect.js';

/** The extensions feature's tables. Append only, as for the core's migrations. */
export const EXTENSION_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'extension key-value store',
    async up(db) {
      await db.schema
        .createTable('extension_kv')
        // The extension's name: each sees only its own keys.
        .addColumn('extension', 'text', (c) => c.notNull())
        // kv.list reads keys in order from a prefix: byte order, as SQLite compares text, whatever the
        // PostgreSQL database's collation.
        .addColumn('key', 'text', (c) => (dialectOf(db) === 'postgres' ? c.notNull().modifyEnd(sql`COLLATE "C"`) : c.notNull()))
        // JSON text.
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('updated_at', int64(db), (c) => c.notNull())
        .addPrimaryKeyConstraint('extension_kv_pk', ['extension', 'key'])
        .execute();
    },
  },
];
