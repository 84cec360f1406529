import { Kysely, PostgresDialect, PostgresDriver, type CompiledQuery, type DatabaseConnection, type Driver, type PostgresDialectConfig, type QueryResult } from 'kysely';
import pg from 'pg';
import { translateNul, translateUnavailable } from './unavailable.js';

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
  /** Told when a pooled connection fails while idle (PostgreSQL restarted or the network cut it). */
  readonly onIdleError?: (err: Error) => void;
}

/**
 * A connection whose failures for want of a server (refused, reset, terminated by a restart) reach
 * callers as DatabaseUnavailable, a PresenceError('unavailable') every front door answers as "try
 * again" (HTTP 503), instead of a raw socket error answered as an internal fault; a NUL character
 * PostgreSQL cannot take in text becomes a bad-request. Other errors about the statement itself
 * (constraints, syntax) pass unchanged.
 */
class TranslatingConnection implements DatabaseConnection {
  constructor(readonly inner: DatabaseConnection) {}

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    try {
      return await this.inner.executeQuery<R>(compiledQuery);
    } catch (e) {
      throw translateNul(translateUnavailable(e));
    }
  }

  streamQuery<R>(compiledQuery: CompiledQuery, chunkSize?: number): AsyncIterableIterator<QueryResult<R>> {
    return this.inner.streamQuery<R>(compiledQuery, chunkSize);
  }
}

class TranslatingPostgresDriver extends PostgresDriver {
  override async acquireConnection(): Promise<DatabaseConnection> {
    try {
      return new TranslatingConnection(await super.acquireConnection());
    } catch (e) {
      throw translateUnavailable(e);
    }
  }

  override async releaseConnection(connection: DatabaseConnection): Promise<void> {
    // Kysely's driver releases its own connection object (pg-pool then drops a client that died).
    const own = connection instanceof TranslatingConnection ? connection.inner : connection;
    await super.releaseConnection(own as Parameters<PostgresDriver['releaseConnection']>[0]);
  }
}

class TranslatingPostgresDialect extends PostgresDialect {
  readonly #config: PostgresDialectConfig;
  constructor(config: PostgresDialectConfig) {
    super(config);
    this.#config = config;
  }
  override createDriver(): Driver {
    return new TranslatingPostgresDriver(this.#config);
  }
}

/**
 * A pool and a Kysely on it for a `postgres://` URL. Closing the Kysely ends the pool. Connections
 * are opened on demand: nothing is contacted until the first query, and after PostgreSQL restarts the
 * pool opens new connections by itself (the first queries may fail as unavailable meanwhile).
 */
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
  // the pool's 'error' event would take the process down. The pool has already dropped that client.
  pool.on('error', (err) => opts.onIdleError?.(err));
  // pg-pool listens for errors only while a client is idle. A connection cut while checked out (a
  // transaction between two statements when PostgreSQL restarts) emits 'error' with no listener, an
  // uncaught exception that ends the process. Absorbed here: the query running or next sent on that
  // client fails (as unavailable), and pg-pool drops the dead client when it is released.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return { db: new Kysely<any>({ dialect: new TranslatingPostgresDialect({ pool }) }), pool };
}

export const isPostgresUrl = (s: string): boolean => /^postgres(ql)?:\/\//i.test(s);

/** The URL without its password, for messages and logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return '(unparseable URL)';
  }
}
