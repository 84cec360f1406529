import type { Migration } from '../../adapters/sqlite/migrations.js';

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
        .addColumn('key', 'text', (c) => c.notNull())
        // JSON text.
        .addColumn('value', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'integer', (c) => c.notNull())
        .addPrimaryKeyConstraint('extension_kv_pk', ['extension', 'key'])
        .execute();
    },
  },
];
