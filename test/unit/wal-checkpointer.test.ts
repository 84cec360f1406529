import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.js';
import { until } from '../helpers/cluster.js';

/**
 * A server's SQLite store checkpoints its WAL on a thread of its own (wal-checkpointer.ts), so that no
 * commit on the event loop copies the log into the database file and fsyncs it. Shown from outside by
 * the files: the database file takes the written pages while the main connection's own threshold
 * (16 MiB) was never reached, and closing leaves no WAL behind.
 */

const root = mkdtempSync(join(tmpdir(), 'presenced-wal-'));
after(() => rmSync(root, { recursive: true, force: true }));

async function fill(store: SqliteStore, accounts: number): Promise<void> {
  const hash = 'h'.repeat(2_000); // about 2 KB a row: a few MB in all, far below the 16 MiB net
  for (let i = 0; i < accounts; i++) await store.createAccount({ jid: `u${i}@localhost`, passwordHash: hash, scramSha1: null, scramSha256: null, createdAt: i });
}

describe('WAL checkpoints off the event loop', () => {
  test('the thread moves committed pages into the database file; close removes the WAL', async () => {
    const file = join(root, 'thread.sqlite');
    const errors: string[] = [];
    const store = SqliteStore.open({ path: file, checkpointThread: (e) => errors.push(e) });
    await store.migrate();
    const before = statSync(file).size;
    await fill(store, 2_000);
    // Below the main connection's own threshold, only the thread checkpoints.
    await until('the database file grew by the rows written', () => statSync(file).size > before + 3_000_000, 20_000);
    await store.close();
    assert.equal(existsSync(`${file}-wal`), false, 'the main connection closed last and removed the WAL');
    assert.deepEqual(errors, []);
  });

});
