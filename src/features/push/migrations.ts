import type { Migration } from '../../adapters/sqlite/migrations.js';
import { int64, withSerialId } from '../sql-dialect.js';

/** The push feature's tables. Append only, as for the core's migrations. */
export const PUSH_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'push registrations and queue',
    async up(db) {
      const ms = int64(db);
      await db.schema
        .createTable('push_registrations')
        .addColumn('id', 'text', (c) => c.primaryKey().notNull())
        .addColumn('account', 'text', (c) => c.notNull())
        // The name of a configured provider (a key of push_providers).
        .addColumn('provider', 'text', (c) => c.notNull())
        .addColumn('token', 'text', (c) => c.notNull())
        .addColumn('second_token', 'text')
        // Web Push: {"p256dh", "auth"} as JSON.
        .addColumn('keys_json', 'text')
        // The resource (native) or full JID resource (XMPP) the registration was made from: how the
        // policy tells this device's own session among the account's sessions.
        .addColumn('resource', 'text')
        // native (push.register) | xmpp (XEP-0357 enable, or a push component's register-device)
        .addColumn('source', 'text', (c) => c.notNull())
        // XEP-0357: the node clients enable (random, unique), the push service's JID, Tigase's away flag
        // and the publish-options form (JSON), so the XMPP side uses this table as is.
        .addColumn('node', 'text', (c) => c.notNull())
        .addColumn('xmpp_jid', 'text')
        .addColumn('away', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('options_json', 'text')
        .addColumn('created_at', ms, (c) => c.notNull())
        .addColumn('updated_at', ms, (c) => c.notNull())
        .addColumn('failures', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('last_error', 'text')
        .addColumn('last_success_at', ms)
        .addColumn('disabled_at', ms)
        .addColumn('disabled_reason', 'text')
        .execute();
      // One registration per device token: registering it again (for any account) replaces it.
      await db.schema.createIndex('push_registrations_token').unique().on('push_registrations').columns(['provider', 'token']).execute();
      await db.schema.createIndex('push_registrations_node').unique().on('push_registrations').columns(['node']).execute();
      await db.schema.createIndex('push_registrations_account').on('push_registrations').columns(['account', 'created_at']).execute();
      await withSerialId(db, db.schema.createTable('push_outbox'))
        .addColumn('registration_id', 'text', (c) => c.notNull())
        .addColumn('account', 'text', (c) => c.notNull())
        // What triggered it (message, clear, notify, or a caller's finer word such as offline-message), for the log.
        .addColumn('trigger', 'text', (c) => c.notNull())
        .addColumn('collapse_key', 'text', (c) => c.notNull())
        // The PushMessage as the provider will get it: already stripped of what the privacy settings forbid.
        .addColumn('message_json', 'text', (c) => c.notNull())
        // Stable across retries and coalescing, so receivers can deduplicate.
        .addColumn('push_id', 'text', (c) => c.notNull())
        .addColumn('attempts', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('due_at', ms, (c) => c.notNull())
        // A lease, so that a row is sent by one worker at a time and a crashed worker's rows come back.
        .addColumn('claimed_by', 'text')
        .addColumn('claimed_until', ms)
        .addColumn('last_error', 'text')
        .addColumn('created_at', ms, (c) => c.notNull())
        .addColumn('updated_at', ms, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('push_outbox_registration').on('push_outbox').columns(['registration_id', 'collapse_key']).execute();
      await db.schema.createIndex('push_outbox_due').on('push_outbox').columns(['due_at']).execute();
    },
  },
  {
    version: 2,
    name: 'push queue: a registration\'s pushes in queue order',
    async up(db) {
      // The worker takes a row only if no older row of its registration waits (per-device order): with
      // this index that check is one seek, whatever the length of the device's queue.
      await db.schema.createIndex('push_outbox_order').on('push_outbox').columns(['registration_id', 'id']).execute();
    },
  },
];
