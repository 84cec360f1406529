import type { CreateTableBuilder, Kysely } from 'kysely';
import { dialectOf, timeColumn } from '../adapters/sql/dialect.js';
import type { StorageDialect } from '../ports/store.js';

/**
 * The features' view of src/adapters/sql/dialect.ts (the rules every migration follows to run on
 * both databases): a migration or repository that has only the Kysely reads the dialect from it.
 */
export type SqlDialect = StorageDialect;
export { dialectOf };

/** timeColumn for a Kysely: epoch ms and ids, bigint on PostgreSQL, integer (the rowid alias where it is the key) on SQLite. */
export function int64(db: Kysely<any>): 'integer' | 'bigint' {
  return timeColumn(dialectOf(db));
}

/**
 * The `id` column of a table numbered by the database: INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (as
 * it always was), bigserial on PostgreSQL (which has no AUTOINCREMENT).
 */
export function withSerialId<TB extends string>(db: Kysely<any>, table: CreateTableBuilder<TB>): CreateTableBuilder<TB, 'id'> {
  return dialectOf(db) === 'postgres'
    ? table.addColumn('id', 'bigserial', (c) => c.primaryKey())
    : table.addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement());
}
