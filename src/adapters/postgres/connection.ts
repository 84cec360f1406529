import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';

/**
 * int8 (bigint) and numeric come back from `pg` as strings by default, since a JavaScript number
 * cannot hold every 64-bit value. Every bigint presenced stores (millisecond times, log ids, counters)
 * stays far below 2^53, so they are read as numbers, as the SQLite adapter reads them; a value that
 * could not be held exactly is refused loudly instead of rounded.
 */
function parseInt8(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new RangeError(`a bigint column holds ${text}, beyond what presenced can use as a number`);
  return n;
}

let parsersSet = false;
function setTypeParsers(): void {
  if (parsersSet) return;
  pg.types.setTypeParser(pg.types.builtins.INT8, parseInt8);
  parsersSet = true;
}

export interface PostgresOptions {
  /** Connections in the pool (per process). */
  readonly poolSize?: number;
  /** Name reported in pg_stat_activity, so an operator can tell the nodes' connections apart. */
  readonly applicationName?: string;
}

/** A pool and a Kysely on it for a `postgres://` URL. Closing the Kysely ends the pool. */
export function openPostgres(url: string, opts: PostgresOptions = {}): { readonly db: Kysely<any>; readonly pool: pg.Pool } {
  setTypeParsers();
  const pool = new pg.Pool({
    connectionString: url,
    max: opts.poolSize ?? 10,
    application_name: opts.applicationName ?? 'presenced',
    // A node must learn quickly that the database is gone rather than queue work behind a dead socket.
    connectionTimeoutMillis: 5_000,
    keepAlive: true,
  });
  // An idle client's connection dropping (PostgreSQL restarted) is reported here; without a listener
  // the pool's 'error' event would take the process down. The next query opens a new connection.
  pool.on('error', () => undefined);
  return { db: new Kysely<any>({ dialect: new PostgresDialect({ pool }) }), pool };
}

export const isPostgresUrl = (s: string): boolean => /^postgres(ql)?:\/\//i.test(s);
