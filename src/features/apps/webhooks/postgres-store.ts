import { createHash } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import { batchKeyOf } from './migration.js';
import type { AppBacklog, AttemptRecord, Claim, EndpointState, LoggedUpdate, NewOutboxRow, WebhookStore, WebhookStoreOptions } from './store.js';
import { countCapOf, purgeDone, toEndpoint, toOutboxRow, unsettledBatchLength, batchIdOf, failedBatchKey, type EndpointRow, type LeasedEndpoint, type LogRow, type PurgeBounds } from './store-common.js';

/**
 * Advisory lock class of the webhook log's appends (two-key form, a key space of its own); the second
 * key is a hash of the app id. Two apps whose hashes collide merely append one after the other.
 */
const APPEND_LOCK = 0x77686b6c; // "whkl"

const appLockKey = (appId: string): number => createHash('sha256').update(appId).digest().readInt32BE(0);

type SeqRow = { app_id: string; uid: string; seq: number; last_id: number; last_at: number; last_body: string };
const fromSeq = (r: SeqRow): LoggedUpdate => ({ id: r.last_id, appId: r.app_id, uid: r.uid, seq: r.seq, at: r.last_at, body: r.last_body, createdAt: r.last_at });

/**
 * The outbox on PostgreSQL (APP_MIGRATIONS 7, as on SQLite: a log written once, delivery as a position
 * per app), for several nodes appending and delivering at once.
 *
 * Appends: the delivery position (every row of an app with id <= delivered_through is done) and the
 * streams' cursors need an app's ids to become visible in increasing order, and each (app, user)'s
 * sequence numbers to be gapless and to follow the ids. A sequence alone gives neither (ids commit out
 * of order). So an append first takes a transaction-scoped advisory lock per app it writes (in a fixed
 * order: no deadlock), then its ids from the sequence, then its sequence numbers from webhook_seq (an
 * upsert adding the batch's count, RETURNING the new number): an app's appends are serialised from id
 * to commit, while appends of other apps run in parallel. webhook_seq, with each user's newest update,
 * is written in the same statement: no checkpoint and no memory, which would be wrong with other nodes
 * writing.
 *
 * Deliveries: the lease is on the endpoint row, taken by one conditional upsert (claimed_until in the
 * past, or none); PostgreSQL makes a second worker wait for the first's row lock and then re-checks the
 * condition on the new row, so exactly one gets the lease. The rest of a claim, and delivered(),
 * failed(), discard(), run under that lease, as on SQLite.
 */
export class PostgresWebhookStore implements WebhookStore {
  readonly #countCap: number;

  constructor(
    private readonly db: Kysely<any>,
    opts: WebhookStoreOptions = {},
  ) {
    this.#countCap = countCapOf(opts);
  }

  async append(rows: readonly NewOutboxRow[], now: number): Promise<LoggedUpdate[]> {
    if (rows.length === 0) return [];
    // Per (app, user): how many rows of the batch, and how far each is from the newest (its seq is the
    // user's new number minus that).
    const keyOf = (appId: string, uid: string): string => `${appId}\u0000${uid}`;
    const count = new Map<string, number>();
    for (const r of rows) count.set(keyOf(r.appId, r.uid), (count.get(keyOf(r.appId, r.uid)) ?? 0) + 1);
    const seen = new Map<string, number>();
    const back = rows.map((r) => {
      const k = keyOf(r.appId, r.uid);
      const n = (seen.get(k) ?? 0) + 1;
      seen.set(k, n);
      return count.get(k)! - n;
    });
    const locks = [...new Set(rows.map((r) => appLockKey(r.appId)))].sort((a, b) => a - b);
    return this.db.transaction().execute(async (trx) => {
      await sql`SELECT pg_advisory_xact_lock(${APPEND_LOCK}, k) FROM unnest(${locks}::int[]) AS k`.execute(trx);
      // Taken after the locks: every id given to these apps' rows before is committed or rolled back.
      const { rows: got } = await sql<{ id: number }>`SELECT nextval('webhook_log_id_seq') AS id FROM generate_series(1, ${rows.length}::int)`.execute(trx);
      const ids = got.map((g) => g.id).sort((a, b) => a - b);
      const newest = new Map<string, number>();
      rows.forEach((r, i) => newest.set(keyOf(r.appId, r.uid), i));
      const users = [...newest.values()].map((i) => ({ r: rows[i]!, id: ids[i]!, n: count.get(keyOf(rows[i]!.appId, rows[i]!.uid))! }));
      const { rows: written } = await sql<{ id: number; seq: number }>`
        WITH s AS (
          INSERT INTO webhook_seq AS w (app_id, uid, seq, last_id, last_at, last_body)
          SELECT * FROM unnest(${users.map((u) => u.r.appId)}::text[], ${users.map((u) => u.r.uid)}::text[], ${users.map((u) => u.n)}::int[],
            ${users.map((u) => u.id)}::bigint[], ${users.map((u) => u.r.at)}::bigint[], ${users.map((u) => u.r.body)}::text[])
          ON CONFLICT (app_id, uid) DO UPDATE SET seq = w.seq + excluded.seq, last_id = excluded.last_id, last_at = excluded.last_at, last_body = excluded.last_body
          -- Rows carrying the account's registry version (a cluster): a user's rows older than what the
          -- log already holds for that user are dropped (written late by another node), not logged after it.
          WHERE (excluded.last_body::jsonb ->> 'v') IS NULL OR (w.last_body::jsonb ->> 'v') IS NULL
            OR (w.last_body::jsonb ->> 'v')::bigint <= (excluded.last_body::jsonb ->> 'v')::bigint
          RETURNING app_id, uid, seq),
        l AS (
          INSERT INTO webhook_log (app_id, id, uid, seq, at, body_json, due_at, created_at)
          SELECT i.app_id, i.id, i.uid, s.seq - i.back, i.at, i.body, i.due_at, ${now}::bigint
          FROM unnest(${rows.map((r) => r.appId)}::text[], ${ids}::bigint[], ${rows.map((r) => r.uid)}::text[], ${back}::int[],
            ${rows.map((r) => r.at)}::bigint[], ${rows.map((r) => r.body)}::text[], ${rows.map((r) => r.dueAt)}::bigint[]) AS i(app_id, id, uid, back, at, body, due_at)
          JOIN s ON s.app_id = i.app_id AND s.uid = i.uid
          RETURNING app_id, id, seq),
        e AS (
          -- The app's newest row id: the app has something pending while it is past its delivery position.
          INSERT INTO webhook_endpoints AS ep (app_id, failures, head)
          SELECT app_id, 0, max(id) FROM l GROUP BY app_id
          ON CONFLICT (app_id) DO UPDATE SET head = GREATEST(ep.head, excluded.head))
        SELECT id, seq FROM l`.execute(trx);
      const seqOf = new Map(written.map((w) => [w.id, w.seq]));
      const out: LoggedUpdate[] = [];
      rows.forEach((r, i) => {
        const seq = seqOf.get(ids[i]!);
        if (seq !== undefined) out.push({ id: ids[i]!, appId: r.appId, uid: r.uid, seq, at: r.at, body: r.body, createdAt: now });
      });
      return out;
    });
  }

  async newestOfApp(appId: string): Promise<{ readonly cursor: number; readonly users: LoggedUpdate[] }> {
    // One statement, one snapshot: the app's head and its users' newest updates agree. The cursor is the
    // app's own head: any row of the app not visible yet takes an id after it (the append lock), which a
    // row of another app committed meanwhile does not promise.
    const { rows } = await sql<{ head: number; uid: string | null; seq: number; last_id: number; last_at: number; last_body: string }>`
      SELECT h.head, s.uid, s.seq, s.last_id, s.last_at, s.last_body
      FROM (SELECT coalesce((SELECT head FROM webhook_endpoints WHERE app_id = ${appId}), 0) AS head) h
      LEFT JOIN webhook_seq s ON s.app_id = ${appId} AND s.last_id IS NOT NULL
      ORDER BY s.last_id`.execute(this.db);
    const users = rows.filter((r) => r.uid !== null).map((r) => fromSeq({ ...r, app_id: appId, uid: r.uid! }));
    return { cursor: rows[0]?.head ?? 0, users };
  }

  async newestOfUsers(appId: string, uids: readonly string[]): Promise<LoggedUpdate[]> {
    if (uids.length === 0) return [];
    const { rows } = await sql<SeqRow>`
      SELECT app_id, uid, seq, last_id, last_at, last_body FROM webhook_seq
      WHERE app_id = ${appId} AND uid = ANY(${uids}::text[]) AND last_id IS NOT NULL ORDER BY last_id`.execute(this.db);
    return rows.map(fromSeq);
  }

  async since(appId: string, after: number, limit: number): Promise<LoggedUpdate[]> {
    const { rows } = await sql<{ id: number; uid: string; seq: number; at: number; body_json: string; created_at: number }>`
      SELECT id, uid, seq, at, body_json, created_at FROM webhook_log WHERE app_id = ${appId} AND id > ${after} ORDER BY id LIMIT ${limit}`.execute(this.db);
    return rows.map((r) => ({ id: r.id, appId, uid: r.uid, seq: r.seq, at: r.at, body: r.body_json, createdAt: r.created_at }));
  }

  async maxId(): Promise<number> {
    // The last id handed out, committed or not yet: a cursor can only hold an id at or below it.
    const { rows } = await sql<{ m: number }>`SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS m FROM webhook_log_id_seq`.execute(this.db);
    return rows[0]?.m ?? 0;
  }

  async appHead(appId: string): Promise<number> {
    // Written in the transaction that logs the app's rows (under its append lock on PostgreSQL).
    const { rows } = await sql<{ head: number }>`SELECT head FROM webhook_endpoints WHERE app_id = ${appId}`.execute(this.db);
    return Number(rows[0]?.head ?? 0);
  }

  async newestBodies(): Promise<Array<{ readonly appId: string; readonly uid: string; readonly body: string }>> {
    const { rows } = await sql<{ app_id: string; uid: string; last_body: string }>`
      SELECT app_id, uid, last_body FROM webhook_seq WHERE last_id IS NOT NULL ORDER BY last_id`.execute(this.db);
    return rows.map((r) => ({ appId: r.app_id, uid: r.uid, body: r.last_body }));
  }

  async backlog(now: number, dueAfter: number): Promise<AppBacklog[]> {
    // As on SQLite: only the apps with something pending (the partial index), the count only where it
    // matters. LEAST skips NULLs: an app with only a replay, or only live rows, gets that one's due time.
    const { rows } = await sql<{ app_id: string; due: number | null; n: number | null; enext: number | null; cu: number | null; dis: number | null }>`
      WITH b AS (
        SELECT e.app_id, e.delivered_through AS dt, e.replaying, e.next_attempt_at AS enext, e.claimed_until AS cu, e.disabled_at AS dis,
          LEAST((SELECT l.due_at FROM webhook_log l WHERE l.app_id = e.app_id AND l.id > e.delivered_through AND l.superseded IS NULL ORDER BY l.id LIMIT 1),
                CASE WHEN e.replaying = 1 THEN (SELECT min(r.due_at) FROM webhook_replay r WHERE r.app_id = e.app_id) END) AS due
        FROM webhook_endpoints e WHERE e.head > e.delivered_through OR e.replaying = 1)
      SELECT app_id, due, enext, cu, dis,
        CASE WHEN due IS NOT NULL AND due > ${dueAfter}::bigint AND dis IS NULL AND coalesce(enext, 0) <= ${now}::bigint AND coalesce(cu, 0) <= ${now}::bigint
          THEN (SELECT count(*) FROM (SELECT 1 FROM webhook_log l WHERE l.app_id = b.app_id AND l.id > b.dt AND l.superseded IS NULL LIMIT ${this.#countCap}) x)
             + CASE WHEN replaying = 1 THEN (SELECT count(*) FROM (SELECT 1 FROM webhook_replay r WHERE r.app_id = b.app_id LIMIT ${this.#countCap}) y) ELSE 0 END
        END AS n
      FROM b`.execute(this.db);
    return rows.map((r) => ({ appId: r.app_id, oldestDue: r.due ?? 0, count: r.n, endpointNext: r.enext, claimedUntil: r.cu, disabled: r.dis !== null }));
  }

  async claim(appId: string, worker: string, now: number, leaseMs: number, max: number, everyTransition = false): Promise<Claim | null> {
    return this.db.transaction().execute(async (trx) => {
      // The lease, in one statement; the endpoint row stays locked until this transaction ends, so no
      // append of the app commits meanwhile (their rows, invisible here, take later ids).
      const { rows: took } = await sql<LeasedEndpoint>`
        INSERT INTO webhook_endpoints AS e (app_id, failures, claimed_by, claimed_until) VALUES (${appId}, 0, ${worker}, ${now + leaseMs}::bigint)
        ON CONFLICT (app_id) DO UPDATE SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
        WHERE e.disabled_at IS NULL AND (e.claimed_until IS NULL OR e.claimed_until <= ${now}::bigint)
        RETURNING e.*`.execute(trx);
      if (took.length !== 1) return null;
      const e = took[0]!;
      const ep = toEndpoint(e);
      const from = e.delivered_through;
      if (ep.failingSince !== null && !everyTransition) {
        // While the endpoint is down only the newest state of each user is worth sending.
        const { rows: old } = await sql<{ id: number }>`
          WITH p(id, uid) AS (
            SELECT id, uid FROM webhook_log WHERE app_id = ${appId} AND id > ${from} AND superseded IS NULL
            UNION ALL SELECT l.id, l.uid FROM webhook_replay r JOIN webhook_log l ON l.app_id = r.app_id AND l.id = r.id WHERE r.app_id = ${appId})
          SELECT id FROM p WHERE id NOT IN (SELECT max(id) FROM p GROUP BY uid)`.execute(trx);
        await this.#supersede(trx, appId, old.map((o) => o.id));
      }
      let replayRows = e.replaying === 1
        ? (await sql<LogRow>`
            SELECT l.id, l.uid, l.seq, l.at, l.body_json FROM webhook_replay r JOIN webhook_log l ON l.app_id = r.app_id AND l.id = r.id
            WHERE r.app_id = ${appId} ORDER BY r.id LIMIT ${max}`.execute(trx)).rows
        : [];
      let live = replayRows.length < max
        ? (await sql<LogRow>`
            SELECT id, uid, seq, at, body_json FROM webhook_log WHERE app_id = ${appId} AND id > ${from} AND superseded IS NULL
            ORDER BY id LIMIT ${max - replayRows.length}`.execute(trx)).rows
        : [];
      // The batch that went out last and was never settled goes again first, as it was.
      const again = unsettledBatchLength([...replayRows, ...live].map((r) => r.id), e.batch_id === null ? null : e.batch_key);
      if (again !== null) {
        live = live.slice(0, Math.max(0, again - replayRows.length));
        replayRows = replayRows.slice(0, again);
      }
      const through = live.length > 0 ? live.at(-1)!.id : replayRows.length > 0 ? from : Math.max(from, e.head);
      if (replayRows.length === 0 && live.length === 0) {
        await sql`UPDATE webhook_endpoints SET claimed_by = NULL, claimed_until = NULL, delivered_through = ${through},
          replaying = CASE WHEN replaying = 1 AND EXISTS (SELECT 1 FROM webhook_replay r WHERE r.app_id = ${appId}) THEN 1 ELSE 0 END
          WHERE app_id = ${appId}`.execute(trx);
        return null;
      }
      const rows = [...replayRows, ...live];
      const key = batchKeyOf(rows.map((r) => r.id));
      const { batchId, write } = batchIdOf(e, key);
      if (write) await sql`UPDATE webhook_endpoints SET batch_id = ${batchId}, batch_key = ${key} WHERE app_id = ${appId}`.execute(trx);
      return { batchId, worker, endpoint: ep, rows: rows.map(toOutboxRow), through, replayed: replayRows.map((r) => r.id) };
    });
  }

  async #supersede(trx: Kysely<any>, appId: string, ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    await sql`UPDATE webhook_log SET superseded = 1 WHERE app_id = ${appId} AND id = ANY(${ids}::bigint[])`.execute(trx);
    await sql`DELETE FROM webhook_replay WHERE app_id = ${appId} AND id = ANY(${ids}::bigint[])`.execute(trx);
  }

  async #pass(trx: Kysely<any>, appId: string, claim: Claim): Promise<void> {
    if (claim.replayed.length > 0) {
      await sql`DELETE FROM webhook_replay WHERE app_id = ${appId} AND id = ANY(${claim.replayed}::bigint[])`.execute(trx);
      await sql`UPDATE webhook_endpoints SET replaying = CASE WHEN EXISTS (SELECT 1 FROM webhook_replay r WHERE r.app_id = ${appId}) THEN 1 ELSE 0 END WHERE app_id = ${appId}`.execute(trx);
    }
  }

  async delivered(appId: string, claim: Claim, sentIds: readonly number[], now: number, attempt: AttemptRecord): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.#stillHeld(trx, appId, claim))) return false;
      if (sentIds.length < claim.rows.length) {
        const sent = new Set(sentIds);
        await this.#supersede(trx, appId, claim.rows.map((r) => r.id).filter((id) => !sent.has(id)));
      }
      await this.#pass(trx, appId, claim);
      await this.#logAttempt(trx, attempt);
      await sql`
        UPDATE webhook_endpoints SET delivered_through = GREATEST(delivered_through, ${claim.through}::bigint), batch_id = NULL, batch_key = NULL,
          failing_since = NULL, failures = 0, next_attempt_at = NULL, last_error = NULL, last_success_at = ${now}::bigint, claimed_by = NULL, claimed_until = NULL
        WHERE app_id = ${appId}`.execute(trx);
      return true;
    });
  }

  async failed(appId: string, claim: Claim, sentIds: readonly number[], now: number, change: { nextAttemptAt: number; error: string; disabledReason: string | null }, attempt: AttemptRecord): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.#stillHeld(trx, appId, claim))) return false;
      await this.#logAttempt(trx, attempt);
      await sql`
        UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, ${now}::bigint), failures = failures + 1, next_attempt_at = ${change.nextAttemptAt}::bigint,
          last_error = ${change.error}::text,
          disabled_at = CASE WHEN ${change.disabledReason}::text IS NULL THEN disabled_at ELSE ${now}::bigint END,
          disabled_reason = coalesce(${change.disabledReason}::text, disabled_reason),
          batch_id = ${claim.batchId}::text, batch_key = ${failedBatchKey(batchKeyOf(sentIds))}::text, claimed_by = NULL, claimed_until = NULL
        WHERE app_id = ${appId}`.execute(trx);
      return true;
    });
  }

  async discard(appId: string, claim: Claim, rowIds: readonly number[], _now: number, opts: { readonly mark?: boolean } = {}): Promise<boolean> {
    if (rowIds.length === 0) return true;
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.#stillHeld(trx, appId, claim))) return false;
      if (opts.mark !== false) await this.#supersede(trx, appId, rowIds);
      if (rowIds.length >= claim.rows.length) {
        await this.#pass(trx, appId, claim);
        await sql`UPDATE webhook_endpoints SET delivered_through = GREATEST(delivered_through, ${claim.through}::bigint) WHERE app_id = ${appId}`.execute(trx);
      }
      return true;
    });
  }

  /**
   * Whether this claim's worker still holds the app's lease. A worker paused past its lease (a stopped
   * or partitioned node) finds another worker's claim in its place, and must not record its outcome:
   * it would move the position or clear the lease under the worker that now sends the app's batches.
   */
  async #stillHeld(trx: Kysely<any>, appId: string, claim: Claim): Promise<boolean> {
    const { rows } = await sql<{ claimed_by: string | null }>`SELECT claimed_by FROM webhook_endpoints WHERE app_id = ${appId} FOR UPDATE`.execute(trx);
    return rows[0]?.claimed_by === claim.worker;
  }

  async release(appId: string, worker: string): Promise<void> {
    await sql`UPDATE webhook_endpoints SET claimed_by = NULL, claimed_until = NULL WHERE app_id = ${appId} AND claimed_by = ${worker}`.execute(this.db);
  }

  async #logAttempt(db: Kysely<any>, a: AttemptRecord): Promise<void> {
    await sql`
      INSERT INTO webhook_attempts (app_id, batch_id, at, updates, status, latency_ms, response_excerpt, error)
      VALUES (${a.appId}, ${a.batchId}, ${a.at}, ${a.updates}, ${a.status}, ${a.latencyMs}, ${a.responseExcerpt}, ${a.error})`.execute(db);
  }

  async logAttempt(a: AttemptRecord): Promise<void> {
    await this.#logAttempt(this.db, a);
  }

  async endpoint(appId: string): Promise<EndpointState> {
    return toEndpoint((await sql<EndpointRow>`SELECT * FROM webhook_endpoints WHERE app_id = ${appId}`.execute(this.db)).rows[0]);
  }

  async attempts(appId: string, since: number, limit: number): Promise<AttemptRecord[]> {
    const { rows } = await sql<{ batch_id: string; at: number; updates: number; status: number | null; latency_ms: number; response_excerpt: string | null; error: string | null }>`
      SELECT * FROM webhook_attempts WHERE app_id = ${appId} AND at >= ${since} ORDER BY at, id LIMIT ${limit}`.execute(this.db);
    return rows.map((r) => ({ appId, batchId: r.batch_id, at: r.at, updates: r.updates, status: r.status, latencyMs: r.latency_ms, responseExcerpt: r.response_excerpt, error: r.error }));
  }

  async pendingCount(appId: string | null): Promise<number> {
    const perApp = sql`
      (SELECT count(*) FROM webhook_log l WHERE l.app_id = e.app_id AND l.id > e.delivered_through AND l.superseded IS NULL)
      + (SELECT count(*) FROM webhook_replay r WHERE r.app_id = e.app_id)`;
    // sum() of bigints is numeric, which pg hands over as a string: back to bigint, read as a number.
    const { rows } = appId === null
      ? await sql<{ n: number | null }>`SELECT sum(${perApp})::bigint AS n FROM webhook_endpoints e WHERE e.head > e.delivered_through OR e.replaying = 1`.execute(this.db)
      : await sql<{ n: number | null }>`SELECT ${perApp} AS n FROM webhook_endpoints e WHERE e.app_id = ${appId}`.execute(this.db);
    return rows[0]?.n ?? 0;
  }

  async replay(appId: string, from: number, to: number, now: number): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const res = await sql`
        INSERT INTO webhook_replay (app_id, id, due_at)
        SELECT l.app_id, l.id, ${now}::bigint FROM webhook_log l JOIN webhook_endpoints e ON e.app_id = l.app_id
        WHERE l.app_id = ${appId} AND l.id <= e.delivered_through AND l.superseded IS NULL AND l.at >= ${from} AND l.at <= ${to}
        ON CONFLICT (app_id, id) DO NOTHING`.execute(trx);
      const n = Number(res.numAffectedRows ?? 0n);
      if (n > 0) await sql`UPDATE webhook_endpoints SET replaying = 1 WHERE app_id = ${appId}`.execute(trx);
      return n;
    });
  }

  async enable(appId: string): Promise<void> {
    await sql`UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL, failures = 0, next_attempt_at = NULL WHERE app_id = ${appId}`.execute(this.db);
  }

  async purge(before: number): Promise<number> {
    let purged = 0;
    // Apps that no longer exist: everything of theirs (found by skipping from one app id to the next in the log).
    const { rows: gone } = await sql<{ id: string }>`
      WITH RECURSIVE a(id) AS (
        SELECT (SELECT min(app_id) FROM webhook_log)
        UNION ALL SELECT (SELECT min(app_id) FROM webhook_log WHERE app_id > a.id) FROM a WHERE a.id IS NOT NULL)
      SELECT id FROM a WHERE id IS NOT NULL AND id NOT IN (SELECT id FROM apps)`.execute(this.db);
    await this.db.transaction().execute(async (trx) => {
      if (gone.length > 0) {
        const res = await sql`DELETE FROM webhook_log WHERE app_id = ANY(${gone.map((g) => g.id)}::text[])`.execute(trx);
        purged += Number(res.numAffectedRows ?? 0n);
      }
      await sql`DELETE FROM webhook_replay WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_attempts WHERE at < ${before} OR app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_endpoints WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_seq WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
    });
    // Done rows older than `before`: at or before the app's position and before any row still to replay
    // (webhook_seq keeps each user's newest update itself, so nothing else holds them).
    const { rows: eps } = await sql<PurgeBounds>`
      SELECT e.app_id, LEAST(e.delivered_through, (SELECT min(r.id) - 1 FROM webhook_replay r WHERE r.app_id = e.app_id)) AS upto,
        (SELECT min(l.id) FROM webhook_log l WHERE l.app_id = e.app_id) AS first,
        (SELECT l.created_at FROM webhook_log l WHERE l.app_id = e.app_id ORDER BY l.id LIMIT 1) AS first_at
      FROM webhook_endpoints e`.execute(this.db);
    for (const e of eps) purged += await purgeDone(this.db, e, before);
    return purged;
  }
}
