/**
 * The two databases the Store runs on, behind one small interface, so that one suite of store tests
 * runs on each: a fresh SQLite file per test, or a fresh database on a private PostgreSQL server (one
 * server per test file, see private-services.ts).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { Kysely, SqliteDialect } from 'kysely';
import pg from 'pg';
import { openPostgres } from '../../src/adapters/postgres/connection.js';
import { PostgresStore } from '../../src/adapters/postgres/postgres-store.js';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import type { SqlStore } from '../../src/adapters/sql/sql-store.js';
import type { StorageDialect } from '../../src/ports/store.js';
import { startPostgres, stopAllPrivateServices, type PrivatePostgres } from './private-services.js';

/** One empty database. */
export interface Place {
  /** A store on it, not yet migrated; `node` names its checkpoint rows (default: the embedded node). */
  open(node?: string): SqlStore;
  /** Runs SQL behind the stores' backs, as an operator with sqlite3 or psql would. */
  raw<T = Record<string, unknown>>(text: string, params?: unknown[]): Promise<T[]>;
  /** A plain kysely on it (no Store), for migration-runner tests; destroy it after use. */
  kysely(): Kysely<any>;
  tableExists(name: string): Promise<boolean>;
}

export interface Backend {
  readonly dialect: StorageDialect;
  setUp(): Promise<void>;
  tearDown(): Promise<void>;
  fresh(): Promise<Place>;
}

export function sqliteBackend(): Backend {
  let root = '';
  let n = 0;
  return {
    dialect: 'sqlite',
    async setUp() {
      root = fs.mkdtempSync(path.join(os.tmpdir(), 'presenced-sqlite-'));
    },
    async tearDown() {
      fs.rmSync(root, { recursive: true, force: true });
    },
    async fresh() {
      const dir = path.join(root, String(++n));
      fs.mkdirSync(dir);
      const file = path.join(dir, 'presenced.sqlite');
      const raw = async <T>(text: string, params: unknown[] = []): Promise<T[]> => {
        const db = new Database(file);
        try {
          const stmt = db.prepare(text);
          return stmt.reader ? (stmt.all(...params) as T[]) : (stmt.run(...params), []);
        } finally {
          db.close();
        }
      };
      return {
        open: (node) => SqliteStore.open({ path: file, ...(node !== undefined ? { node } : {}) }),
        raw,
        kysely: () => new Kysely<any>({ dialect: new SqliteDialect({ database: new Database(file) }) }),
        async tableExists(name) {
          return (await raw('select name from sqlite_master where type = ? and name = ?', ['table', name])).length > 0;
        },
      };
    },
  };
}

export function postgresBackend(): Backend {
  let server: PrivatePostgres | null = null;
  let n = 0;
  const pools: pg.Pool[] = [];
  return {
    dialect: 'postgres',
    async setUp() {
      server = await startPostgres();
    },
    async tearDown() {
      await Promise.all(pools.map((p) => p.end()));
      await stopAllPrivateServices();
    },
    async fresh() {
      if (server === null) throw new Error('postgresBackend: setUp first');
      const url = server.createDatabase(`store_${process.pid}_${++n}`);
      const pool = new pg.Pool({ connectionString: url, max: 2 });
      pools.push(pool);
      const raw = async <T>(text: string, params: unknown[] = []): Promise<T[]> => {
        // SQLite's ? placeholders, numbered for PostgreSQL.
        let i = 0;
        return (await pool.query(text.replace(/\?/g, () => `$${++i}`), params)).rows as T[];
      };
      return {
        open: (node) => PostgresStore.open({ url, node: node ?? 'embedded', poolSize: 4 }),
        raw,
        kysely: () => openPostgres(url, { poolSize: 2 }).db,
        async tableExists(name) {
          return (await raw<{ t: string | null }>('select to_regclass(?) as t', [name]))[0]?.t !== null;
        },
      };
    },
  };
}

export const BACKENDS: ReadonlyArray<() => Backend> = [sqliteBackend, postgresBackend];
