import type { Migration } from '../../adapters/sqlite/migrations.js';
import { WEBHOOKS_MIGRATION } from './webhooks/migration.js';

/** The apps feature's tables. Append only, as for the core's migrations. */
export const APP_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'apps',
    async up(db) {
      await db.schema
        .createTable('apps')
        .addColumn('id', 'text', (c) => c.primaryKey().notNull())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull())
        .addColumn('homepage', 'text', (c) => c.notNull())
        .addColumn('icon_url', 'text')
        // A JSON array: always read and written whole, never queried by element.
        .addColumn('redirect_uris', 'text', (c) => c.notNull())
        .addColumn('webhook_url', 'text')
        .addColumn('webhook_format', 'text', (c) => c.notNull())
        .addColumn('client_secret_hash', 'text', (c) => c.notNull())
        .addColumn('webhook_secret', 'text', (c) => c.notNull())
        .addColumn('domain_key', 'text', (c) => c.notNull())
        .addColumn('verified_domain', 'text')
        .addColumn('verified_at', 'integer')
        .addColumn('created_at', 'integer', (c) => c.notNull())
        .addColumn('updated_at', 'integer', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('apps_owner').on('apps').columns(['owner', 'created_at']).execute();
    },
  },
  WEBHOOKS_MIGRATION,
];
