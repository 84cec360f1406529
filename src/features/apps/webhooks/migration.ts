import { sql } from 'kysely';
import { createHash } from 'node:crypto';
import type { Migration } from '../../../adapters/sqlite/migrations.js';
import { dialectOf, int64, withSerialId } from '../../sql-dialect.js';

/** APP_MIGRATIONS version 3: the webhook outbox, its per-user sequence numbers, the delivery log and the endpoints' state. */
export const WEBHOOKS_MIGRATION: Migration = {
  version: 3,
  name: 'webhook outbox',
  async up(db) {
    const ms = int64(db);
    await withSerialId(db, db.schema.createTable('webhook_outbox'))
      .addColumn('app_id', 'text', (c) => c.notNull())
      .addColumn('uid', 'text', (c) => c.notNull())
      .addColumn('seq', 'integer', (c) => c.notNull())
      .addColumn('at', ms, (c) => c.notNull())
      .addColumn('body_json', 'text', (c) => c.notNull())
      // pending | delivered | superseded (collapsed into a newer update of the same user)
      .addColumn('state', 'text', (c) => c.notNull())
      .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
      // When it became eligible (enqueued, or replayed); it goes webhook_batch_ms later at the latest.
      .addColumn('next_attempt_at', ms, (c) => c.notNull())
      // The request it was last sent in (webhook-id), kept across retries.
      .addColumn('batch_id', 'text')
      // A lease, so that with several workers (PostgreSQL: FOR UPDATE SKIP LOCKED) one row is sent by one.
      .addColumn('claimed_by', 'text')
      .addColumn('claimed_until', ms)
      .addColumn('created_at', ms, (c) => c.notNull())
      .addColumn('delivered_at', ms)
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
    await withSerialId(db, db.schema.createTable('webhook_attempts'))
      .addColumn('app_id', 'text', (c) => c.notNull())
      .addColumn('batch_id', 'text', (c) => c.notNull())
      .addColumn('at', ms, (c) => c.notNull())
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
      .addColumn('failing_since', ms)
      .addColumn('failures', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('next_attempt_at', ms)
      .addColumn('last_error', 'text')
      .addColumn('last_success_at', ms)
      .addColumn('disabled_at', ms)
      .addColumn('disabled_reason', 'text')
      // One request in flight per app (so per-user order holds): the lease is on the endpoint.
      .addColumn('claimed_by', 'text')
      .addColumn('claimed_until', ms)
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
    await db.schema.alterTable('webhook_seq').addColumn('last_id', int64(db)).execute();
    await db.schema.alterTable('webhook_seq').addColumn('last_at', int64(db)).execute();
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

/** The key of a batch: which log rows it carried (a retry of exactly these keeps its webhook-id). */
export function batchKeyOf(ids: readonly number[]): string {
  return createHash('sha256').update(ids.join(',')).digest('base64url');
}

/**
 * APP_MIGRATIONS version 7: the log written once, delivery kept as a position per app.
 *
 * `webhook_outbox` rewrote every update twice after inserting it (its batch at claim, its state at
 * delivery), each time moving it in several indexes. Now:
 * - `webhook_log` holds each update once, clustered by (app, id) (WITHOUT ROWID: the table is its only
 *   index); ids come from `webhook_log_head`, never reused, so stream cursors stay valid;
 * - an app's rows with id <= `webhook_endpoints.delivered_through` are done (delivered, or superseded),
 *   the others are pending: delivering a batch moves that position, one write whatever the batch size;
 * - `superseded` marks the rare rows that were not sent (collapsed while the endpoint was failing,
 *   dropped for a revoked grant or an app without a URL), so that a replay leaves them out;
 * - the claimed batch is recorded on the endpoint (`batch_id` and `batch_key`, a digest of its row
 *   ids), so a retry of exactly the same rows keeps its webhook-id;
 * - `webhook_replay` lists delivered rows to send again (a replay), sent before the live ones;
 * - `head` is the app's newest row id, so the apps with something pending are found in a partial index.
 * - `webhook_seq` (each app user's sequence number and newest update) is brought up to date from the
 *   log now and then (a checkpoint, `webhook_log_head.seq_through`), not at every write: rewriting a
 *   row per user per write touched pages all over the table; the rows after the checkpoint are read
 *   back at start.
 * Existing rows keep their ids and state: the position is put after the app's last row that is not
 * pending, and pending rows before it (a replay, or a row left for a revoked user) go to webhook_replay.
 */
export const WEBHOOK_LOG_MIGRATION: Migration = {
  version: 7,
  name: 'webhook log with a delivery position per app',
  async up(db) {
    const pg = dialectOf(db) === 'postgres';
    if (pg) {
      // PostgreSQL: the table is clustered by its primary key's index anyway; ids come from a sequence,
      // never reused, and are taken under a lock per app (PostgresWebhookStore.append) so that each
      // app's ids become visible in increasing order; webhook_seq is written with each append (several
      // nodes append), so there is no checkpoint and no webhook_log_head.
      await sql`
        CREATE TABLE webhook_log (
          app_id TEXT NOT NULL, id BIGINT NOT NULL, uid TEXT NOT NULL, seq INTEGER NOT NULL, at BIGINT NOT NULL,
          body_json TEXT NOT NULL, due_at BIGINT NOT NULL, created_at BIGINT NOT NULL, superseded INTEGER,
          PRIMARY KEY (app_id, id))`.execute(db);
      await sql`CREATE SEQUENCE webhook_log_id_seq`.execute(db);
      await sql`CREATE TABLE webhook_replay (app_id TEXT NOT NULL, id BIGINT NOT NULL, due_at BIGINT NOT NULL, PRIMARY KEY (app_id, id))`.execute(db);
    } else {
      // The text as released (SQLite keeps it in sqlite_master), indentation included.
      await sql`
      CREATE TABLE webhook_log (
        app_id TEXT NOT NULL, id INTEGER NOT NULL, uid TEXT NOT NULL, seq INTEGER NOT NULL, at INTEGER NOT NULL,
        body_json TEXT NOT NULL, due_at INTEGER NOT NULL, created_at INTEGER NOT NULL, superseded INTEGER,
        PRIMARY KEY (app_id, id)) WITHOUT ROWID`.execute(db);
      await sql`CREATE TABLE webhook_log_head (one INTEGER PRIMARY KEY CHECK (one = 1), last_id INTEGER NOT NULL, seq_through INTEGER NOT NULL)`.execute(db);
      await sql`CREATE TABLE webhook_replay (app_id TEXT NOT NULL, id INTEGER NOT NULL, due_at INTEGER NOT NULL, PRIMARY KEY (app_id, id)) WITHOUT ROWID`.execute(db);
    }
    const id = sql.raw(pg ? 'BIGINT' : 'INTEGER');
    await sql`ALTER TABLE webhook_endpoints ADD COLUMN head ${id} NOT NULL DEFAULT 0`.execute(db);
    await sql`ALTER TABLE webhook_endpoints ADD COLUMN delivered_through ${id} NOT NULL DEFAULT 0`.execute(db);
    await sql`ALTER TABLE webhook_endpoints ADD COLUMN replaying INTEGER NOT NULL DEFAULT 0`.execute(db);
    await sql`ALTER TABLE webhook_endpoints ADD COLUMN batch_id TEXT`.execute(db);
    await sql`ALTER TABLE webhook_endpoints ADD COLUMN batch_key TEXT`.execute(db);
    await sql`
      INSERT INTO webhook_log (app_id, id, uid, seq, at, body_json, due_at, created_at, superseded)
      SELECT app_id, id, uid, seq, at, body_json, next_attempt_at, created_at, CASE state WHEN 'superseded' THEN 1 END FROM webhook_outbox`.execute(db);
    // Ids continue after every id ever given, also purged ones (AUTOINCREMENT's record, or the serial's sequence), as stream cursors may hold them.
    const { rows: seqRow } = pg
      ? await sql<{ seq: number }>`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS seq FROM webhook_outbox_id_seq`.execute(db)
      : await sql<{ seq: number }>`SELECT seq FROM sqlite_sequence WHERE name = 'webhook_outbox'`.execute(db);
    const { rows: maxRow } = await sql<{ m: number | null }>`SELECT max(id) AS m FROM webhook_outbox`.execute(db);
    const lastId = Math.max(seqRow[0]?.seq ?? 0, maxRow[0]?.m ?? 0);
    if (pg) {
      if (lastId > 0) await sql`SELECT setval('webhook_log_id_seq', ${lastId}::bigint)`.execute(db);
    } else {
      // webhook_seq is current: it covers the whole log.
      await sql`INSERT INTO webhook_log_head (one, last_id, seq_through) VALUES (1, ${lastId}, ${lastId})`.execute(db);
    }
    await sql`INSERT INTO webhook_endpoints (app_id, failures) SELECT DISTINCT app_id, 0 FROM webhook_outbox WHERE true ON CONFLICT (app_id) DO NOTHING`.execute(db);
    await sql`
      UPDATE webhook_endpoints SET
        head = coalesce((SELECT max(id) FROM webhook_outbox o WHERE o.app_id = webhook_endpoints.app_id), 0),
        delivered_through = coalesce((SELECT max(id) FROM webhook_outbox o WHERE o.app_id = webhook_endpoints.app_id AND o.state <> 'pending'), 0)`.execute(db);
    await sql`
      INSERT INTO webhook_replay (app_id, id, due_at)
      SELECT o.app_id, o.id, o.next_attempt_at FROM webhook_outbox o JOIN webhook_endpoints e ON e.app_id = o.app_id
      WHERE o.state = 'pending' AND o.id <= e.delivered_through`.execute(db);
    await sql`UPDATE webhook_endpoints SET replaying = 1 WHERE app_id IN (SELECT app_id FROM webhook_replay)`.execute(db);
    // A batch that was claimed and not delivered (the oldest pending one with an id) keeps its webhook-id
    // when exactly its rows are sent again.
    const { rows: claimed } = await sql<{ app_id: string; batch_id: string; id: number }>`
      SELECT o.app_id, o.batch_id, o.id FROM webhook_outbox o
      WHERE o.state = 'pending' AND o.batch_id = (SELECT f.batch_id FROM webhook_outbox f WHERE f.app_id = o.app_id AND f.state = 'pending' AND f.batch_id IS NOT NULL ORDER BY f.id LIMIT 1)
      ORDER BY o.app_id, o.id`.execute(db);
    const batches = new Map<string, { batchId: string; ids: number[] }>();
    for (const r of claimed) {
      const b = batches.get(r.app_id) ?? { batchId: r.batch_id, ids: [] };
      b.ids.push(r.id);
      batches.set(r.app_id, b);
    }
    for (const [appId, b] of batches) {
      await sql`UPDATE webhook_endpoints SET batch_id = ${b.batchId}, batch_key = ${batchKeyOf(b.ids)} WHERE app_id = ${appId}`.execute(db);
    }
    await sql`DROP TABLE webhook_outbox`.execute(db);
    // The worker's look at the backlog: only the apps with something pending.
    await sql`CREATE INDEX webhook_endpoints_busy ON webhook_endpoints (app_id) WHERE head > delivered_through OR replaying = 1`.execute(db);
  },
};
