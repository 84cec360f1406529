import { sql } from 'kysely';
import type { Migration } from '../../../adapters/sqlite/migrations.js';

/** APP_MIGRATIONS version 3: the webhook outbox, its per-user sequence numbers, the delivery log and the endpoints' state. */
export const WEBHOOKS_MIGRATION: Migration = {
  version: 3,
  name: 'webhook outbox',
  async up(db) {
    await db.schema
      .createTable('webhook_outbox')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('app_id', 'text', (c) => c.notNull())
      .addColumn('uid', 'text', (c) => c.notNull())
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('at', 'integer', (c) => c.notNull())
      .addColumn('body_json', 'text', (c) => c.notNull())
      // pending | delivered | superseded (collapsed into a newer update of the same user)
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      // When it became eligible (enqueued, or replayed); it goes webhook_batch_ms later at the latest.
      .addColumn('next_attempt_at', 'integer', (c) => c.notNull())
      // The request it was last sent in (webhook-id), kept across retries.
      .addColumn('batch_id', 'text')
      // A lease, so that with several workers (PostgreSQL: FOR UPDATE SKIP LOCKED) one row is sent by one.
      .addColumn('claimed_by', 'text')
      .addColumn('claimed_until', 'integer')
      .addColumn('created_at', 'integer', (c) => c.notNull())
      .addColumn('delivered_at', 'integer')
      .execute();
    await db.schema.createIndex('webhook_outbox_pending').on('webhook_outbox').columns(['state', 'app_id', 'id']).execute();
    await db.schema.createIndex('webhook_outbox_app_at').on('webhook_outbox').columns(['app_id', 'at']).execute();
    await db.schema.createIndex('webhook_outbox_delivered').on('webhook_outbox').columns(['delivered_at']).execute();
    await db.schema
      .createTable('webhook_seq')
      .addColumn('app_id', 'text', (c) => c.notNull())
      .addColumn('uid', 'text', (c) => c.notNull())
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addPrimaryKeyConstraint('webhook_seq_pk', ['app_id', 'uid'])
      .execute();
    await db.schema
      .createTable('webhook_attempts')
      .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
      .addColumn('app_id', 'text', (c) => c.notNull())
      .addColumn('batch_id', 'text', (c) => c.notNull())
      .addColumn('at', 'integer', (c) => c.notNull())
      .addColumn('updates', 'integer', (c) => c.notNull())
      .addColumn('status', 'integer')
      .addColumn('latency_ms', 'integer', (c) => c.notNull())
      .addColumn('response_excerpt', 'text')
      .addColumn('error', 'text')
      .execute();
    await db.schema.createIndex('webhook_attempts_app_at').on('webhook_attempts').columns(['app_id', 'at']).execute();
    await db.schema
      .createTable('webhook_endpoints')
      .addColumn('app_id', 'text', (c) => c.primaryKey().notNull())
      .addColumn('failing_since', 'integer')
      .addColumn('failures', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('next_attempt_at', 'integer')
      .addColumn('last_error', 'text')
      .addColumn('last_success_at', 'integer')
      .addColumn('disabled_at', 'integer')
      .addColumn('disabled_reason', 'text')
      // One request in flight per app (so per-user order holds): the lease is on the endpoint.
      .addColumn('claimed_by', 'text')
      .addColumn('claimed_until', 'integer')
      .execute();
  },
};

/**
 * APP_MIGRATIONS version 4: each (app, user)'s newest logged update kept beside its sequence number, so
 * that a stream's snapshot and the reconciliation at start read one row per user instead of the log.
 */
export const APP_LOG_MIGRATION: Migration = {
  version: 4,
  name: 'newest update per app user',
  async up(db) {
    await db.schema.alterTable('webhook_seq').addColumn('last_id', 'integer').execute();
    await db.schema.alterTable('webhook_seq').addColumn('last_at', 'integer').execute();
    await db.schema.alterTable('webhook_seq').addColumn('last_body', 'text').execute();
    // Streams read an app's log after a cursor.
    await db.schema.createIndex('webhook_outbox_app_id').on('webhook_outbox').columns(['app_id', 'id']).execute();
  },
};

/**
 * APP_MIGRATIONS version 6: pending updates by app and due time, so that the worker's look at the
 * backlog (every few ms under load) costs a few index probes per app, not a scan of every pending row.
 * Partial: delivered and superseded rows, the bulk of the table, are not in it.
 */
export const WEBHOOK_DUE_MIGRATION: Migration = {
  version: 6,
  name: 'webhook outbox due index',
  async up(db) {
    await sql`CREATE INDEX webhook_outbox_due ON webhook_outbox (app_id, next_attempt_at) WHERE state = 'pending'`.execute(db);
  },
};
