import type { Migration } from '../../adapters/sqlite/migrations.js';
import { int64 } from '../sql-dialect.js';
import { APP_LOG_MIGRATION, WEBHOOK_DUE_MIGRATION, WEBHOOK_LOG_MIGRATION, WEBHOOKS_MIGRATION } from './webhooks/migration.js';

/** The apps feature's tables. Append only, as for the core's migrations. */
export const APP_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'apps',
    async up(db) {
      const ms = int64(db);
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
        .addColumn('verified_at', ms)
        .addColumn('created_at', ms, (c) => c.notNull())
        .addColumn('updated_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('apps_owner').on('apps').columns(['owner', 'created_at']).execute();
    },
  },
  {
    version: 2,
    name: 'grants and oauth tokens',
    async up(db) {
      const ms = int64(db);
      // Rows of a deleted app go with it (the Store turns SQLite's foreign keys on), also when the CLI deletes it.
      await db.schema
        .createTable('grants')
        .addColumn('app_id', 'text', (c) => c.notNull().references('apps.id').onDelete('cascade'))
        .addColumn('account', 'text', (c) => c.notNull())
        // Space-separated, as in OAuth.
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('granted_at', ms, (c) => c.notNull())
        .addColumn('last_delivery_at', ms)
        .addColumn('revoked_at', ms)
        .addPrimaryKeyConstraint('grants_pk', ['app_id', 'account'])
        .execute();
      await db.schema.createIndex('grants_account').on('grants').columns(['account']).execute();
      // Codes and tokens are stored as SHA-256 of their value: a copy of the database grants nothing.
      await db.schema
        .createTable('oauth_codes')
        .addColumn('code_hash', 'text', (c) => c.primaryKey().notNull())
        .addColumn('app_id', 'text', (c) => c.notNull().references('apps.id').onDelete('cascade'))
        .addColumn('account', 'text', (c) => c.notNull())
        .addColumn('scopes', 'text', (c) => c.notNull())
        .addColumn('redirect_uri', 'text', (c) => c.notNull())
        .addColumn('code_challenge', 'text', (c) => c.notNull())
        .addColumn('code_challenge_method', 'text', (c) => c.notNull())
        .addColumn('expires_at', ms, (c) => c.notNull())
        .addColumn('used_at', ms)
        .execute();
      await db.schema
        .createTable('oauth_tokens')
        .addColumn('token_hash', 'text', (c) => c.primaryKey().notNull())
        .addColumn('kind', 'text', (c) => c.notNull())
        .addColumn('app_id', 'text', (c) => c.notNull().references('apps.id').onDelete('cascade'))
        .addColumn('account', 'text', (c) => c.notNull())
        .addColumn('scopes', 'text', (c) => c.notNull())
        // The authorization code every token descends from (through refreshes): a replayed code or
        // refresh token revokes the whole family.
        .addColumn('family', 'text', (c) => c.notNull())
        .addColumn('expires_at', ms, (c) => c.notNull())
        .addColumn('used_at', ms)
        .execute();
      await db.schema.createIndex('oauth_tokens_family').on('oauth_tokens').columns(['family']).execute();
      await db.schema.createIndex('oauth_tokens_grant').on('oauth_tokens').columns(['app_id', 'account']).execute();
    },
  },
  WEBHOOKS_MIGRATION,
  APP_LOG_MIGRATION,
  {
    version: 5,
    name: 'webhook every transition',
    async up(db) {
      // Existing apps keep the collapsing behaviour they were registered with.
      await db.schema.alterTable('apps').addColumn('webhook_every_transition', 'integer', (c) => c.notNull().defaultTo(0)).execute();
    },
  },
  WEBHOOK_DUE_MIGRATION,
  WEBHOOK_LOG_MIGRATION,
  {
    version: 8,
    name: 'revoked token families',
    async up(db) {
      // A replayed code or refresh token revokes its family; this row makes the revocation also refuse
      // the tokens a concurrent request (the one that won the race) is about to save.
      await db.schema
        .createTable('oauth_revoked_families')
        .addColumn('family', 'text', (c) => c.primaryKey().notNull())
        .addColumn('revoked_at', int64(db), (c) => c.notNull())
        .execute();
    },
  },
  {
    version: 9,
    name: 'grant pairwise ids',
    async up(db) {
      // The pairwise id of each grant's user, so that a node finds the grant behind a row of the app's
      // log (which carries only that id) in the database, without having heard of the grant. Filled by
      // GrantService for new grants and at start for older ones (the key is not the migration's to know).
      await db.schema.alterTable('grants').addColumn('uid', 'text').execute();
      await db.schema.createIndex('grants_uid').on('grants').columns(['app_id', 'uid']).execute();
    },
  },
];
