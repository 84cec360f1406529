/** Moved to src/adapters/sql/migrations.ts (shared by SQLite and PostgreSQL); kept so existing imports keep working. */
export { MIGRATIONS, runMigrations, type Migration } from '../sql/migrations.js';
