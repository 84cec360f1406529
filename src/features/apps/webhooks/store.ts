import { randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { FeatureStorage } from '../../../ports/store.js';

/** The webhook outbox's storage port (SQLite now; PostgreSQL claims with FOR UPDATE SKIP LOCKED on the same columns). */

export interface NewOutboxRow {
  readonly appId: string;
  readonly uid: string;
  readonly at: number;
  readonly body: string;
  /** When it was enqueued: it goes webhook_batch_ms later at the latest (the worker's setting of the moment, so a restart with another setting applies to rows already written). */
  readonly dueAt: number;
}

export interface OutboxRow {
  readonly id: number;
  readonly uid: string;
  readonly seq: number;
  readonly at: number;
  readonly body: string;
}

/** An update as written to the app's log (the outbox), with its place in it: streams follow `id`. */
export interface LoggedUpdate {
  readonly id: number;
  readonly appId: string;
  readonly uid: string;
  readonly seq: number;
  readonly at: number;
  /** JSON of a StoredBody. */
  readonly body: string;
  /** When it was written. */
  readonly createdAt: number;
}

/** The most `AppBacklog.count` says: the largest webhook_batch_max, all the worker compares it with. */
export const BACKLOG_COUNT_CAP = 10_000;

export interface AppBacklog {
  readonly appId: string;
  readonly oldestDue: number;
  /** Pending rows of the app, counted up to the store's cap (webhook_batch_max, at most BACKLOG_COUNT_CAP). */
  readonly count: number;
  readonly endpointNext: number | null;
  readonly claimedUntil: number | null;
  readonly disabled: boolean;
}

export interface EndpointState {
  readonly failingSince: number | null;
  readonly failures: number;
  readonly nextAttemptAt: number | null;
  readonly lastError: string | null;
  readonly lastSuccessAt: number | null;
  readonly disabledAt: number | null;
  readonly disabledReason: string | null;
}

export interface AttemptRecord {
  readonly appId: string;
  readonly batchId: string;
  readonly at: number;
  readonly updates: number;
  readonly status: number | null;
  readonly latencyMs: number;
  readonly responseExcerpt: string | null;
  readonly error: string | null;
}

export interface Claim {
  readonly batchId: string;
  readonly rows: readonly OutboxRow[];
  readonly endpoint: EndpointState;
}

export interface WebhookStore {
  /** Writes the rows in one transaction, each with the next sequence number of its (app, user); returns them as logged. */
  append(rows: readonly NewOutboxRow[], now: number): Promise<LoggedUpdate[]>;
  /**
   * The newest logged update of each user of the app, and the log position (the largest id of the
   * whole log) they are consistent with: every later update has a larger id.
   */
  newestOfApp(appId: string): Promise<{ readonly cursor: number; readonly users: LoggedUpdate[] }>;
  /** The newest logged update of each of these users of the app (those with none are left out). */
  newestOfUsers(appId: string, uids: readonly string[]): Promise<LoggedUpdate[]>;
  /** The app's logged updates with id > after, oldest first (whatever their delivery state). */
  since(appId: string, after: number, limit: number): Promise<LoggedUpdate[]>;
  /** The largest id of the log (0 when empty). */
  maxId(): Promise<number>;
  /** The newest logged body of every (app, user): what each app was last told. */
  newestBodies(): Promise<Array<{ readonly appId: string; readonly uid: string; readonly body: string }>>;
  backlog(): Promise<AppBacklog[]>;
  /**
   * Takes the app's lease (none when another worker holds it) and its oldest pending rows; while the
   * endpoint is failing, older pending updates of a user are first collapsed into the newest, unless
   * the app asked for every transition.
   */
  claim(appId: string, worker: string, now: number, leaseMs: number, max: number, everyTransition?: boolean): Promise<Claim | null>;
  delivered(appId: string, rowIds: readonly number[], now: number): Promise<void>;
  failed(appId: string, rowIds: readonly number[], now: number, change: { nextAttemptAt: number; error: string; disabledReason: string | null }): Promise<void>;
  /** The rows are not sent (the app has no webhook URL any more): superseded, the endpoint untouched. */
  discard(rowIds: readonly number[], now: number): Promise<void>;
  release(appId: string, worker: string): Promise<void>;
  logAttempt(a: AttemptRecord): Promise<void>;
  endpoint(appId: string): Promise<EndpointState>;
  attempts(appId: string, since: number, limit: number): Promise<AttemptRecord[]>;
  pendingCount(appId: string | null): Promise<number>;
  /** Delivered updates of the app whose time is within [from, to] are pending again; how many. */
  replay(appId: string, from: number, to: number, now: number): Promise<number>;
  enable(appId: string): Promise<void>;
  /** Delivered and superseded rows, and log entries, older than `before`; and every row of apps that no longer exist. */
  purge(before: number): Promise<number>;
}

export interface WebhookStoreOptions {
  /** Where backlog() stops counting an app's pending rows: the worker only asks whether a batch is full (webhook_batch_max). */
  readonly backlogCountCap?: number;
}

export function webhookStore(storage: FeatureStorage, opts: WebhookStoreOptions = {}): WebhookStore {
  if (storage.dialect === 'sqlite') return new SqliteWebhookStore(storage.db, opts);
  throw new Error(`webhooks have no outbox for ${storage.dialect} yet`);
}

const EMPTY_ENDPOINT: EndpointState = { failingSince: null, failures: 0, nextAttemptAt: null, lastError: null, lastSuccessAt: null, disabledAt: null, disabledReason: null };

interface EndpointRow {
  failing_since: number | null;
  failures: number;
  next_attempt_at: number | null;
  last_error: string | null;
  last_success_at: number | null;
  disabled_at: number | null;
  disabled_reason: string | null;
}

const toEndpoint = (r: EndpointRow | undefined): EndpointState =>
  r === undefined
    ? EMPTY_ENDPOINT
    : { failingSince: r.failing_since, failures: r.failures, nextAttemptAt: r.next_attempt_at, lastError: r.last_error, lastSuccessAt: r.last_success_at, disabledAt: r.disabled_at, disabledReason: r.disabled_reason };

export class SqliteWebhookStore implements WebhookStore {
  readonly #countCap: number;

  constructor(
    private readonly db: Kysely<any>,
    opts: WebhookStoreOptions = {},
  ) {
    this.#countCap = Math.min(opts.backlogCountCap ?? BACKLOG_COUNT_CAP, BACKLOG_COUNT_CAP);
  }

  async append(rows: readonly NewOutboxRow[], now: number): Promise<LoggedUpdate[]> {
    if (rows.length === 0) return [];
    // Three statements per write whatever its size (it was three per row): the rows go in as one JSON
    // parameter, so each statement's text is fixed and stays prepared. The transaction is BEGIN
    // IMMEDIATE (the write lock is held from the start), so the sequence numbers read first cannot move
    // before they are written back.
    const keyOf = (appId: string, uid: string): string => `${appId}\u0000${uid}`;
    const keys = new Map<string, [string, string]>();
    for (const r of rows) keys.set(keyOf(r.appId, r.uid), [r.appId, r.uid]);
    return this.db.transaction().execute(async (trx) => {
      const { rows: current } = await sql<{ app_id: string; uid: string; seq: number }>`
        SELECT s.app_id, s.uid, s.seq FROM json_each(${JSON.stringify([...keys.values()])}) j
        JOIN webhook_seq s ON s.app_id = j.value ->> 0 AND s.uid = j.value ->> 1`.execute(trx);
      const seqOf = new Map<string, number>();
      for (const c of current) seqOf.set(keyOf(c.app_id, c.uid), c.seq);
      // Each row takes the next number of its (app, user), in the order given.
      const seqs = rows.map((r) => {
        const k = keyOf(r.appId, r.uid);
        const seq = (seqOf.get(k) ?? 0) + 1;
        seqOf.set(k, seq);
        return seq;
      });
      const { rows: inserted } = await sql<{ id: number; app_id: string; uid: string; seq: number }>`
        INSERT INTO webhook_outbox (app_id, uid, seq, at, body_json, state, attempts, next_attempt_at, created_at)
        SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, 'pending', 0, j.value ->> 5, ${now}
        FROM json_each(${JSON.stringify(rows.map((r, i) => [r.appId, r.uid, seqs[i], r.at, r.body, r.dueAt]))}) j ORDER BY j.key
        RETURNING id, app_id, uid, seq`.execute(trx);
      // (app, user, seq) names one row: ids are matched by it, not by the order RETURNING happens to use.
      const idOf = new Map<string, number>();
      for (const x of inserted) idOf.set(`${keyOf(x.app_id, x.uid)}\u0000${x.seq}`, x.id);
      const out: LoggedUpdate[] = rows.map((r, i) => {
        const id = idOf.get(`${keyOf(r.appId, r.uid)}\u0000${seqs[i]}`);
        if (id === undefined) throw new Error('webhook outbox: an inserted row was not returned');
        return { id, appId: r.appId, uid: r.uid, seq: seqs[i]!, at: r.at, body: r.body, createdAt: now };
      });
      // The newest row of each (app, user) is its last in this write.
      const newest = new Map<string, LoggedUpdate>();
      for (const u of out) newest.set(keyOf(u.appId, u.uid), u);
      await sql`
        INSERT INTO webhook_seq (app_id, uid, seq, last_id, last_at, last_body)
        SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4, j.value ->> 5
        FROM json_each(${JSON.stringify([...newest.values()].map((u) => [u.appId, u.uid, u.seq, u.id, u.at, u.body]))}) j WHERE true
        ON CONFLICT (app_id, uid) DO UPDATE SET seq = excluded.seq, last_id = excluded.last_id, last_at = excluded.last_at, last_body = excluded.last_body`.execute(trx);
      return out;
    });
  }

  async newestOfApp(appId: string): Promise<{ readonly cursor: number; readonly users: LoggedUpdate[] }> {
    return this.db.transaction().execute(async (trx) => {
      const { rows: m } = await sql<{ id: number | null }>`SELECT max(id) AS id FROM webhook_outbox`.execute(trx);
      const { rows } = await sql<{ uid: string; seq: number; last_id: number; last_at: number; last_body: string }>`
        SELECT uid, seq, last_id, last_at, last_body FROM webhook_seq WHERE app_id = ${appId} AND last_id IS NOT NULL ORDER BY last_id`.execute(trx);
      return { cursor: m[0]?.id ?? 0, users: rows.map((r) => ({ id: r.last_id, appId, uid: r.uid, seq: r.seq, at: r.last_at, body: r.last_body, createdAt: r.last_at })) };
    });
  }

  async newestOfUsers(appId: string, uids: readonly string[]): Promise<LoggedUpdate[]> {
    if (uids.length === 0) return [];
    const { rows } = await sql<{ uid: string; seq: number; last_id: number; last_at: number; last_body: string }>`
      SELECT uid, seq, last_id, last_at, last_body FROM webhook_seq WHERE app_id = ${appId} AND last_id IS NOT NULL AND uid IN (${sql.join(uids)})`.execute(this.db);
    return rows.map((r) => ({ id: r.last_id, appId, uid: r.uid, seq: r.seq, at: r.last_at, body: r.last_body, createdAt: r.last_at }));
  }

  async since(appId: string, after: number, limit: number): Promise<LoggedUpdate[]> {
    const { rows } = await sql<{ id: number; uid: string; seq: number; at: number; body_json: string; created_at: number }>`
      SELECT id, uid, seq, at, body_json, created_at FROM webhook_outbox WHERE app_id = ${appId} AND id > ${after} ORDER BY id LIMIT ${limit}`.execute(this.db);
    return rows.map((r) => ({ id: r.id, appId, uid: r.uid, seq: r.seq, at: r.at, body: r.body_json, createdAt: r.created_at }));
  }

  async maxId(): Promise<number> {
    const { rows } = await sql<{ id: number | null }>`SELECT max(id) AS id FROM webhook_outbox`.execute(this.db);
    return rows[0]?.id ?? 0;
  }

  async newestBodies(): Promise<Array<{ readonly appId: string; readonly uid: string; readonly body: string }>> {
    const { rows } = await sql<{ app_id: string; uid: string; last_body: string }>`SELECT app_id, uid, last_body FROM webhook_seq WHERE last_body IS NOT NULL`.execute(this.db);
    return rows.map((r) => ({ appId: r.app_id, uid: r.uid, body: r.last_body }));
  }

  async backlog(): Promise<AppBacklog[]> {
    // Runs on every pass of the worker: the apps with pending rows are found by jumping from one app id
    // to the next in the partial index of pending rows, and each app costs a few index probes; the
    // count stops at the cap (a full batch). Scanning every pending row instead made a backlog slow itself down.
    const { rows } = await sql<{ app_id: string; due: number; n: number; enext: number | null; cu: number | null; dis: number | null }>`
      WITH RECURSIVE a(id) AS (
        SELECT (SELECT min(app_id) FROM webhook_outbox WHERE state = 'pending')
        UNION ALL
        SELECT (SELECT min(app_id) FROM webhook_outbox WHERE state = 'pending' AND app_id > a.id) FROM a WHERE a.id IS NOT NULL)
      SELECT a.id AS app_id,
        (SELECT min(next_attempt_at) FROM webhook_outbox WHERE state = 'pending' AND app_id = a.id) AS due,
        (SELECT count(*) FROM (SELECT 1 FROM webhook_outbox WHERE state = 'pending' AND app_id = a.id LIMIT ${this.#countCap})) AS n,
        e.next_attempt_at AS enext, e.claimed_until AS cu, e.disabled_at AS dis
      FROM a LEFT JOIN webhook_endpoints e ON e.app_id = a.id WHERE a.id IS NOT NULL`.execute(this.db);
    return rows.map((r) => ({ appId: r.app_id, oldestDue: r.due, count: r.n, endpointNext: r.enext, claimedUntil: r.cu, disabled: r.dis !== null }));
  }

  async claim(appId: string, worker: string, now: number, leaseMs: number, max: number, everyTransition = false): Promise<Claim | null> {
    return this.db.transaction().execute(async (trx) => {
      // The lease, taken in one statement: a new endpoint row, or the existing one if it is enabled and
      // nobody holds it; no row comes back when it is not ours to take.
      const { rows: took } = await sql<EndpointRow>`
        INSERT INTO webhook_endpoints (app_id, failures, claimed_by, claimed_until) VALUES (${appId}, 0, ${worker}, ${now + leaseMs})
        ON CONFLICT (app_id) DO UPDATE SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
        WHERE disabled_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ${now})
        RETURNING *`.execute(trx);
      if (took.length !== 1) return null;
      const ep = toEndpoint(took[0]);
      if (ep.failingSince !== null && !everyTransition) {
        // While the endpoint is down only the newest state of each user is worth sending.
        await sql`
          UPDATE webhook_outbox SET state = 'superseded', delivered_at = ${now}
          WHERE app_id = ${appId} AND state = 'pending'
            AND seq < (SELECT max(n.seq) FROM webhook_outbox n WHERE n.app_id = webhook_outbox.app_id AND n.uid = webhook_outbox.uid AND n.state = 'pending')`.execute(trx);
      }
      const { rows } = await sql<{ id: number; uid: string; seq: number; at: number; body_json: string; batch_id: string | null }>`
        SELECT id, uid, seq, at, body_json, batch_id FROM webhook_outbox
        WHERE app_id = ${appId} AND state = 'pending' ORDER BY id LIMIT ${max}`.execute(trx);
      if (rows.length === 0) {
        await sql`UPDATE webhook_endpoints SET claimed_by = NULL, claimed_until = NULL WHERE app_id = ${appId}`.execute(trx);
        return null;
      }
      // A retry of exactly the same updates keeps its webhook-id, so the receiver can recognise it.
      const prev = rows[0]!.batch_id;
      let batchId = prev;
      if (prev === null || rows.some((r) => r.batch_id !== prev)) batchId = null;
      else {
        const { rows: c } = await sql<{ n: number }>`SELECT count(*) AS n FROM webhook_outbox WHERE app_id = ${appId} AND batch_id = ${prev} AND state = 'pending'`.execute(trx);
        if (c[0]!.n !== rows.length) batchId = null;
      }
      batchId ??= `msg_${randomBytes(16).toString('base64url')}`;
      const ids = rows.map((r) => r.id);
      await sql`UPDATE webhook_outbox SET batch_id = ${batchId}, claimed_by = ${worker}, claimed_until = ${now + leaseMs} WHERE id IN (SELECT value FROM json_each(${JSON.stringify(ids)}))`.execute(trx);
      return { batchId, endpoint: ep, rows: rows.map((r) => ({ id: r.id, uid: r.uid, seq: r.seq, at: r.at, body: r.body_json })) };
    });
  }

  async delivered(appId: string, rowIds: readonly number[], now: number): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      if (rowIds.length > 0) {
        await sql`UPDATE webhook_outbox SET state = 'delivered', delivered_at = ${now}, attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL WHERE id IN (SELECT value FROM json_each(${JSON.stringify(rowIds)}))`.execute(trx);
      }
      await sql`UPDATE webhook_endpoints SET failing_since = NULL, failures = 0, next_attempt_at = NULL, last_error = NULL, last_success_at = ${now} WHERE app_id = ${appId}`.execute(trx);
    });
  }

  async failed(appId: string, rowIds: readonly number[], now: number, change: { nextAttemptAt: number; error: string; disabledReason: string | null }): Promise<void> {
    await this.db.transaction().execute(async (trx) => {
      if (rowIds.length > 0) {
        await sql`UPDATE webhook_outbox SET attempts = attempts + 1, claimed_by = NULL, claimed_until = NULL WHERE id IN (SELECT value FROM json_each(${JSON.stringify(rowIds)}))`.execute(trx);
      }
      await sql`
        UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, ${now}), failures = failures + 1, next_attempt_at = ${change.nextAttemptAt},
          last_error = ${change.error},
          disabled_at = CASE WHEN ${change.disabledReason} IS NULL THEN disabled_at ELSE ${now} END,
          disabled_reason = coalesce(${change.disabledReason}, disabled_reason)
        WHERE app_id = ${appId}`.execute(trx);
    });
  }

  async discard(rowIds: readonly number[], now: number): Promise<void> {
    if (rowIds.length === 0) return;
    await sql`UPDATE webhook_outbox SET state = 'superseded', delivered_at = ${now}, claimed_by = NULL, claimed_until = NULL WHERE id IN (SELECT value FROM json_each(${JSON.stringify(rowIds)}))`.execute(this.db);
  }

  async release(appId: string, worker: string): Promise<void> {
    await sql`UPDATE webhook_endpoints SET claimed_by = NULL, claimed_until = NULL WHERE app_id = ${appId} AND claimed_by = ${worker}`.execute(this.db);
  }

  async logAttempt(a: AttemptRecord): Promise<void> {
    await sql`
      INSERT INTO webhook_attempts (app_id, batch_id, at, updates, status, latency_ms, response_excerpt, error)
      VALUES (${a.appId}, ${a.batchId}, ${a.at}, ${a.updates}, ${a.status}, ${a.latencyMs}, ${a.responseExcerpt}, ${a.error})`.execute(this.db);
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
    const { rows } = appId === null
      ? await sql<{ n: number }>`SELECT count(*) AS n FROM webhook_outbox WHERE state = 'pending'`.execute(this.db)
      : await sql<{ n: number }>`SELECT count(*) AS n FROM webhook_outbox WHERE state = 'pending' AND app_id = ${appId}`.execute(this.db);
    return rows[0]!.n;
  }

  async replay(appId: string, from: number, to: number, now: number): Promise<number> {
    const res = await sql`
      UPDATE webhook_outbox SET state = 'pending', attempts = 0, batch_id = NULL, delivered_at = NULL, next_attempt_at = ${now}
      WHERE app_id = ${appId} AND state = 'delivered' AND at >= ${from} AND at <= ${to}`.execute(this.db);
    return Number(res.numAffectedRows ?? 0n);
  }

  async enable(appId: string): Promise<void> {
    await sql`UPDATE webhook_endpoints SET disabled_at = NULL, disabled_reason = NULL, failing_since = NULL, failures = 0, next_attempt_at = NULL WHERE app_id = ${appId}`.execute(this.db);
  }

  async purge(before: number): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const a = await sql`DELETE FROM webhook_outbox WHERE state <> 'pending' AND delivered_at < ${before}`.execute(trx);
      const b = await sql`DELETE FROM webhook_outbox WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_attempts WHERE at < ${before} OR app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_endpoints WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_seq WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      return Number((a.numAffectedRows ?? 0n) + (b.numAffectedRows ?? 0n));
    });
  }
}
