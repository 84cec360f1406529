import { PostgresAdapter, sql, type ColumnDefinitionBuilder, type CreateTableBuilder, type Expression, type Kysely } from 'kysely';
import type { StorageDialect } from '../../ports/store.js';

/**
 * What differs between the SQL databases presenced runs on, for schema code (core and feature
 * migrations) and for repositories. Everything else is written once, in portable kysely.
 *
 * The rules a migration follows to run on both:
 * - epoch milliseconds and any counter that may pass 2^31: `timeColumn(dialect)` (bigint on
 *   PostgreSQL, where integer is 32 bits; plain integer on SQLite, whose integers are 64-bit anyway);
 * - text compared by order (JIDs, ids that are paged through with `>`/ORDER BY):
 *   `keyTextColumn(dialect)`, so PostgreSQL orders bytes as SQLite does, whatever the database's locale;
 * - a generated row id: `autoId(dialect)`;
 * - `without rowid` only through `withoutRowid(dialect, builder)`;
 * - booleans as integer 0/1 with a CHECK, JSON as text: both databases take these as they are.
 */

/** The dialect a kysely instance (or transaction) talks to. */
export function dialectOf(db: Kysely<any>): StorageDialect {
  // The adapter is the one part of a kysely dialect that names the database; a subclassed dialect
  // (postgres/connection.ts wraps the driver) keeps PostgreSQL's adapter.
  return db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite';
}

/** Epoch milliseconds and counters beyond 32 bits. Read back as numbers (postgres/connection.ts parses int8). */
export function timeColumn(dialect: StorageDialect): 'integer' | 'bigint' {
  return dialect === 'postgres' ? 'bigint' : 'integer';
}

/**
 * Text ordered bytewise. PostgreSQL compares text by the database's collation (en_US sorts
 * "u0@other.org" before "user00@example.com" differently from SQLite and ignores punctuation at
 * first); "C" orders bytes, which for UTF-8 is code point order, as SQLite's default BINARY does.
 */
export function keyTextColumn(dialect: StorageDialect): 'text' | Expression<unknown> {
  return dialect === 'postgres' ? sql`text collate "C"` : 'text';
}

/** An integer primary key the database numbers itself, increasing; the row's id is returned by `returning('id')`. */
export function autoId(dialect: StorageDialect): { readonly type: 'integer' | 'bigint'; readonly build: (c: ColumnDefinitionBuilder) => ColumnDefinitionBuilder } {
  return dialect === 'postgres'
    ? { type: 'bigint', build: (c) => c.primaryKey().generatedByDefaultAsIdentity() }
    : // AUTOINCREMENT: ids are never reused after the newest row is deleted (delivery deletes by id).
      { type: 'integer', build: (c) => c.primaryKey().autoIncrement() };
}

/** SQLite's WITHOUT ROWID for tables keyed by text; PostgreSQL has no rowid to drop. */
export function withoutRowid<T extends CreateTableBuilder<any, any>>(dialect: StorageDialect, table: T): T {
  return dialect === 'sqlite' ? (table.modifyEnd(sql`without rowid`) as T) : table;
}

/**
 * PostgreSQL: serialises, until the transaction ends, every transaction that locks the same `key`
 * (a transaction-scoped advisory lock on its 64-bit hash; a collision only makes two unrelated keys
 * wait for each other). For read-modify-writes that the rows alone cannot lock, such as a count
 * before an insert. SQLite needs none: a write transaction (BEGIN IMMEDIATE) already excludes every other.
 */
export async function lockKey(trx: Kysely<any>, key: string): Promise<void> {
  if (dialectOf(trx) !== 'postgres') return;
  await sql`select pg_advisory_xact_lock(hashtextextended(${key}, 0))`.execute(trx);
}

/** The key all schema changes (core and feature migrations) take, so nodes starting together migrate one at a time. */
export const MIGRATION_LOCK_KEY = 'presenced:schema-migrations';
