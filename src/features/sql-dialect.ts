import { PostgresAdapter, type CreateTableBuilder, type Kysely } from 'kysely';

/**
 * What the features' migrations and repositories need to know about the database they run on. A
 * migration gets only the Kysely (src/features/migrations.ts), so the dialect is read from its adapter.
 */
export type SqlDialect = 'sqlite' | 'postgres';

export function dialectOf(db: Kysely<any>): SqlDialect {
  return db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite';
}

/**
 * The column type of epoch-ms times and ids. SQLite's INTEGER is already 64-bit, and must stay exactly
 * INTEGER where it is a primary key (the rowid alias), so SQLite databases get what they always got;
 * PostgreSQL's integer is 32-bit and Date.now() overflows it.
 */
export function int64(db: Kysely<any>): 'integer' | 'bigint' {
  return dialectOf(db) === 'postgres' ? 'bigint' : 'integer';
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
