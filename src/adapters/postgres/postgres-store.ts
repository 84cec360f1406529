import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { PresenceError } from '../../core/errors.js';
import { SqlStore, type DialectOps, type Tables } from '../sql/sql-store.js';
import { openPostgres, redactUrl } from './connection.js';
import { DatabaseUnavailable, unavailableReason } from './unavailable.js';

/** deadlock_detected and serialization_failure: PostgreSQL aborted the transaction and asks for it again. */
const RETRY_STATES = new Set(['40P01', '40001']);
const TRANSACTION_ATTEMPTS = 4;

/**
 * PostgreSQL's side of the shared store. Transactions run at READ COMMITTED, where the store's
 * statements are already safe against other nodes (upserts are atomic, read-modify-writes take an
 * advisory lock); the retry covers a deadlock the server broke, which the fixed lock order of the
 * store's own writes avoids but a feature's transaction in the same rows could still cause.
 */
const POSTGRES_OPS: DialectOps = {
  dialect: 'postgres',
  async transaction(db, fn) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await db.transaction().execute(fn);
      } catch (e) {
        if (attempt < TRANSACTION_ATTEMPTS && e instanceof pg.DatabaseError && RETRY_STATES.has(e.code ?? '')) continue;
        throw e;
      }
    }
  },
  // right() takes the last n characters; SQLite's negative substr start has no PostgreSQL equivalent.
  jidEndsWith: (suffix) => sql<boolean>`right(jid, length(cast(${suffix} as text))) = ${suffix}`,
  upsertOncePerKey: true,
};

export interface PostgresStoreOptions {
  readonly url: string;
  /** This node's id: it names the presence checkpoint rows this store writes and recovers. */
  readonly node: string;
  readonly poolSize?: number;
  /** Told when a pooled connection fails while idle (for the log). */
  readonly onIdleError?: (err: Error) => void;
}

/** The Store on PostgreSQL, for a cluster of nodes sharing one database (docs/cluster.md). */
export class PostgresStore extends SqlStore {
  readonly #url: string;
  #closed = false;

  private constructor(db: Kysely<Tables>, url: string, node: string) {
    super(db, POSTGRES_OPS, node);
    this.#url = url;
  }

  /** Opens the pool; nothing is contacted until the first query (migrate(), at start). */
  static open(opts: PostgresStoreOptions): PostgresStore {
    const { db } = openPostgres(opts.url, {
      ...(opts.poolSize !== undefined ? { poolSize: opts.poolSize } : {}),
      applicationName: `presenced ${opts.node}`.slice(0, 63),
      ...(opts.onIdleError ? { onIdleError: opts.onIdleError } : {}),
    });
    return new PostgresStore(db as Kysely<Tables>, opts.url, opts.node);
  }

  /** Also the first contact with the server at start: its failures name the server (never the password). */
  override async migrate(): Promise<void> {
    try {
      await super.migrate();
    } catch (e) {
      const where = redactUrl(this.#url);
      if (e instanceof DatabaseUnavailable) throw new PresenceError('unavailable', `cannot reach PostgreSQL at ${where}: ${unavailableReason(e)}`);
      // Wrong password, no such database or role: the configuration, not the server, is wrong.
      if (e instanceof pg.DatabaseError && /^(28|3D)/.test(e.code ?? '')) throw new Error(`PostgreSQL at ${where} refused presenced: ${e.message}`);
      throw e;
    }
  }

  override async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await super.close();
  }
}
