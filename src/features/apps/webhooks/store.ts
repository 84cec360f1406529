import { CompiledQuery, sql, type Kysely } from 'kysely';
import type { FeatureStorage } from '../../../ports/store.js';
import { batchKeyOf } from './migration.js';
import { PostgresWebhookStore } from './postgres-store.js';
import { countCapOf, purgeDone, toEndpoint, toOutboxRow, unsettledBatchLength, batchIdOf, failedBatchKey, type EndpointRow, type LeasedEndpoint, type LogRow, type PurgeBounds } from './store-common.js';

/**
 * The webhook outbox's storage port, one implementation per database: SqliteWebhookStore below (one
 * process appends: ids from the webhook_log_head row under BEGIN IMMEDIATE, webhook_seq checkpointed
 * from memory) and PostgresWebhookStore (several nodes append: a lock per app orders its ids,
 * webhook_seq is upserted in each write). Both keep what streams and the worker rely on: an app's
 * ids become visible in increasing order, each (app, user)'s seq is gapless and follows its ids.
 */

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

export { BACKLOG_COUNT_CAP } from './store-common.js';

export interface AppBacklog {
  readonly appId: string;
  /** When its oldest pending update was enqueued (or replayed); 0 when only skipped rows are left to pass. */
  readonly oldestDue: number;
  /**
   * Pending rows of the app, counted up to the store's cap (webhook_batch_max, at most
   * BACKLOG_COUNT_CAP); null when not counted because it would change nothing: the app is due anyway
   * by time, or waits for its endpoint's next attempt or another worker's lease.
   */
  readonly count: number | null;
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
  /** Who holds the lease this batch was taken under (the worker's id given to claim()). */
  readonly worker: string;
  /** Replayed rows first (older), then live ones, each group in log order. */
  readonly rows: readonly OutboxRow[];
  readonly endpoint: EndpointState;
  /** Where the app's delivery position goes when this batch is done: every live row up to it is in `rows` or superseded. */
  readonly through: number;
  /** The ids of `rows` that came from a replay. */
  readonly replayed: readonly number[];
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
  /** The largest id ever given in the log (0 when none). */
  maxId(): Promise<number>;
  /** The app's newest log id (0 when none): every row of the app up to it is visible, every later one gets a larger id. */
  appHead(appId: string): Promise<number>;
  /** The newest logged body of every (app, user): what each app was last told. */
  newestBodies(): Promise<Array<{ readonly appId: string; readonly uid: string; readonly body: string }>>;
  /** The apps with something pending; `count` only where it matters: for apps not yet due by time (oldest due after `dueAfter`), free to claim at `now`. */
  backlog(now: number, dueAfter: number): Promise<AppBacklog[]>;
  /**
   * Takes the app's lease (none when another worker holds it) and its oldest pending rows; while the
   * endpoint is failing, older pending updates of a user are first collapsed into the newest, unless
   * the app asked for every transition. A retry of exactly the same rows keeps its batch id.
   */
  claim(appId: string, worker: string, now: number, leaseMs: number, max: number, everyTransition?: boolean): Promise<Claim | null>;
  /** The request carrying `sentIds` of the claim succeeded: the app's position moves past the claim (claimed rows not sent are superseded), the attempt is logged, the lease released. */
  delivered(appId: string, claim: Claim, sentIds: readonly number[], now: number, attempt: AttemptRecord): Promise<boolean>;
  /** The request carrying `sentIds` failed: they stay pending (a retry of exactly them keeps the batch id), the attempt is logged, the lease released. */
  failed(appId: string, claim: Claim, sentIds: readonly number[], now: number, change: { nextAttemptAt: number; error: string; disabledReason: string | null }, attempt: AttemptRecord): Promise<boolean>;
  /**
   * These rows of the claim are not sent (revoked grant, no webhook URL): superseded (so a replay leaves
   * them out), the endpoint's state untouched. `mark: false` only passes over them (an app without a
   * webhook URL, whose updates go by stream: no write per row).
   */
  discard(appId: string, claim: Claim, rowIds: readonly number[], now: number, opts?: { readonly mark?: boolean }): Promise<boolean>;
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
  switch (storage.dialect) {
    case 'sqlite':
      return new SqliteWebhookStore(storage.db, opts);
    case 'postgres':
      return new PostgresWebhookStore(storage.db, opts);
  }
}

/**
 * Log rows (and the checkpoint's webhook_seq rows) go in as multi-row VALUES statements of a few fixed
 * sizes, each text prepared once and kept in the store's statement cache, as already compiled queries:
 * building the statement through Kysely's template for every write, and passing the rows as one JSON
 * text for json_each to take apart column by column, cost more than the insert itself.
 */
const CHUNKS = [256, 64, 16, 4, 1] as const;

function chunkedTexts(head: string, columns: number, tail = ''): Map<number, string> {
  const one = `(${Array.from({ length: columns }, () => '?').join(', ')})`;
  return new Map(CHUNKS.map((n) => [n, `${head} VALUES ${Array.from({ length: n }, () => one).join(', ')}${tail}`]));
}

/** Runs the statement of `texts` over `items` in fixed-size chunks; `put` writes one item's columns at `params[o..]`. */
async function insertChunked<T>(trx: Kysely<any>, texts: Map<number, string>, columns: number, items: readonly T[], put: (params: unknown[], o: number, item: T, index: number) => void): Promise<void> {
  let i = 0;
  for (const size of CHUNKS) {
    while (items.length - i >= size) {
      const params: unknown[] = new Array(size * columns);
      for (let k = 0; k < size; k++, i++) put(params, k * columns, items[i]!, i);
      await trx.executeQuery(CompiledQuery.raw(texts.get(size)!, params));
    }
  }
}

const LOG_INSERT = chunkedTexts('INSERT INTO webhook_log (app_id, id, uid, seq, at, body_json, due_at, created_at)', 8);
const SEQ_UPSERT = chunkedTexts(
  'INSERT INTO webhook_seq (app_id, uid, seq, last_id, last_at, last_body)',
  6,
  ' ON CONFLICT (app_id, uid) DO UPDATE SET seq = excluded.seq, last_id = excluded.last_id, last_at = excluded.last_at, last_body = excluded.last_body',
);

function insertLogRows(trx: Kysely<any>, out: readonly LoggedUpdate[], rows: readonly NewOutboxRow[], now: number): Promise<void> {
  return insertChunked(trx, LOG_INSERT, 8, out, (p, o, u, i) => {
    p[o] = u.appId;
    p[o + 1] = u.id;
    p[o + 2] = u.uid;
    p[o + 3] = u.seq;
    p[o + 4] = u.at;
    p[o + 5] = u.body;
    p[o + 6] = rows[i]!.dueAt;
    p[o + 7] = now;
  });
}

function upsertSeqRows(trx: Kysely<any>, changed: readonly LoggedUpdate[]): Promise<void> {
  return insertChunked(trx, SEQ_UPSERT, 6, changed, (p, o, u) => {
    p[o] = u.appId;
    p[o + 1] = u.uid;
    p[o + 2] = u.seq;
    p[o + 3] = u.id;
    p[o + 4] = u.at;
    p[o + 5] = u.body;
  });
}

/** At most this many (app, user) seqs are remembered past a checkpoint (about 100 bytes each). */
const SEQ_KNOWN_MAX = 200_000;
/** webhook_seq is brought up to date this often, or once this many users changed since (whichever first). */
const SEQ_CHECKPOINT_MS = 1000;
const SEQ_CHECKPOINT_KEYS = 20_000;

const jsonIds = (ids: readonly number[]): string => JSON.stringify(ids);

/**
 * The outbox on SQLite (APP_MIGRATIONS 7): each update is written once, in `webhook_log`, clustered by
 * (app, id); what is delivered is a position per app on its endpoint row, so delivering a batch is one
 * row write whatever its size, and the claimed batch is recorded there too. Only rare paths write log
 * rows again (superseded: collapsed while failing, dropped for a revoked grant).
 */
export class SqliteWebhookStore implements WebhookStore {
  readonly #countCap: number;
  /** Newest logged update per (app, user) since webhook_seq's checkpoint; null until read from the database. */
  #recent: Map<string, LoggedUpdate> | null = null;
  /**
   * The seq of (app, user) pairs as webhook_seq holds them, remembered from checkpoints and reads, so
   * a user who changes again after a checkpoint costs no read of webhook_seq (at 10,000 busy pairs that
   * read, after every checkpoint, was a visible share of the writes). Only this store writes
   * webhook_seq; dropped with #recent whenever memory may disagree with the database, and bounded.
   */
  #seqKnown = new Map<string, number>();
  #checkpointAt = 0;

  constructor(
    private readonly db: Kysely<any>,
    opts: WebhookStoreOptions = {},
  ) {
    this.#countCap = countCapOf(opts);
  }

  async append(rows: readonly NewOutboxRow[], now: number): Promise<LoggedUpdate[]> {
    if (rows.length === 0) return [];
    // A fixed number of statements per write whatever its size: rows go in as one JSON parameter, so
    // each statement's text is fixed and stays prepared. The transaction is BEGIN IMMEDIATE (the write
    // lock is held from the start), so the numbers read first cannot move before they are written back.
    const keyOf = (appId: string, uid: string): string => `${appId}\u0000${uid}`;
    const keys = new Map<string, [string, string]>();
    for (const r of rows) keys.set(keyOf(r.appId, r.uid), [r.appId, r.uid]);
    return this.db
      .transaction()
      .execute(async (trx) => {
        const recent = await this.#recentOf(trx);
        // Sequence numbers: the users written since the last checkpoint are in memory, the others in webhook_seq.
        const known = this.#seqKnown;
        const unknown = [...keys].filter(([k]) => !recent.has(k) && !known.has(k)).map(([, v]) => v);
        const seqOf = new Map<string, number>();
        if (unknown.length > 0) {
          const { rows: current } = await sql<{ app_id: string; uid: string; seq: number }>`
            SELECT s.app_id, s.uid, s.seq FROM json_each(${JSON.stringify(unknown)}) j
            JOIN webhook_seq s ON s.app_id = j.value ->> 0 AND s.uid = j.value ->> 1`.execute(trx);
          for (const c of current) seqOf.set(keyOf(c.app_id, c.uid), c.seq);
        }
        const { rows: h } = await sql<{ last_id: number }>`SELECT last_id FROM webhook_log_head WHERE one = 1`.execute(trx);
        let id = h[0]!.last_id;
        // Each row takes the next id of the log and the next number of its (app, user), in the order given.
        const out: LoggedUpdate[] = rows.map((r) => {
          const k = keyOf(r.appId, r.uid);
          const seq = (seqOf.get(k) ?? recent.get(k)?.seq ?? known.get(k) ?? 0) + 1;
          seqOf.set(k, seq);
          return { id: ++id, appId: r.appId, uid: r.uid, seq, at: r.at, body: r.body, createdAt: now };
        });
        await insertLogRows(trx, out, rows, now);
        await sql`UPDATE webhook_log_head SET last_id = ${id} WHERE one = 1`.execute(trx);
        const headOf = new Map<string, number>();
        for (const u of out) headOf.set(u.appId, u.id);
        // The app's newest row id: the app has something pending while it is past its delivery position.
        await sql`
          INSERT INTO webhook_endpoints (app_id, failures, head)
          SELECT j.value ->> 0, 0, j.value ->> 1 FROM json_each(${JSON.stringify([...headOf])}) j WHERE true
          ON CONFLICT (app_id) DO UPDATE SET head = excluded.head`.execute(trx);
        // Last, once every statement has succeeded (a failed commit drops the memory, read again from the log).
        for (const u of out) recent.set(keyOf(u.appId, u.uid), u);
        if (recent.size >= SEQ_CHECKPOINT_KEYS || now - this.#checkpointAt >= SEQ_CHECKPOINT_MS) await this.#checkpoint(trx, recent, id, now);
        return out;
      })
      .catch((err: unknown) => {
        this.#forget();
        throw err;
      });
  }

  /** Memory may no longer match the database (a write failed): read it again when next needed. */
  #forget(): void {
    this.#recent = null;
    this.#seqKnown = new Map();
  }

  /**
   * The newest logged update of each (app, user) written since webhook_seq's checkpoint, read from the
   * log the first time (after a restart, what the last process wrote after its last checkpoint).
   * Only this store writes the log, so memory and database agree inside a transaction.
   */
  async #recentOf(trx: Kysely<any>): Promise<Map<string, LoggedUpdate>> {
    if (this.#recent !== null) return this.#recent;
    const { rows: h } = await sql<{ seq_through: number }>`SELECT seq_through FROM webhook_log_head WHERE one = 1`.execute(trx);
    const { rows } = await sql<{ app_id: string; id: number; uid: string; seq: number; at: number; body_json: string; created_at: number }>`
      SELECT l.app_id, l.id, l.uid, l.seq, l.at, l.body_json, l.created_at FROM webhook_endpoints e
      CROSS JOIN webhook_log l ON l.app_id = e.app_id AND l.id > ${h[0]!.seq_through}`.execute(trx);
    const recent = new Map<string, LoggedUpdate>();
    for (const r of rows) {
      const k = `${r.app_id}\u0000${r.uid}`;
      if ((recent.get(k)?.id ?? -1) < r.id) recent.set(k, { id: r.id, appId: r.app_id, uid: r.uid, seq: r.seq, at: r.at, body: r.body_json, createdAt: r.created_at });
    }
    this.#recent = recent;
    // The next write checkpoints: the rows read back are not left to a later restart to read again.
    this.#checkpointAt = -Infinity;
    return recent;
  }

  /** webhook_seq brought up to date with the log through `through`: one row write per user changed since the last checkpoint. */
  async #checkpoint(trx: Kysely<any>, recent: Map<string, LoggedUpdate>, through: number, now: number): Promise<void> {
    if (recent.size > 0) await upsertSeqRows(trx, [...recent.values()]);
    await sql`UPDATE webhook_log_head SET seq_through = ${through} WHERE one = 1`.execute(trx);
    if (this.#seqKnown.size + recent.size > SEQ_KNOWN_MAX) this.#seqKnown = new Map();
    for (const [k, u] of recent) this.#seqKnown.set(k, u.seq);
    recent.clear();
    this.#checkpointAt = now;
  }

  /** The newest update of each user of the app (or of every app): webhook_seq, overlaid with what memory holds since its checkpoint. */
  async #newest(trx: Kysely<any>, appId: string | null, uids: readonly string[] | null): Promise<LoggedUpdate[]> {
    const recent = await this.#recentOf(trx);
    type SeqRow = { app_id: string; uid: string; seq: number; last_id: number; last_at: number; last_body: string };
    const { rows } =
      appId === null
        ? await sql<SeqRow>`SELECT app_id, uid, seq, last_id, last_at, last_body FROM webhook_seq WHERE last_id IS NOT NULL`.execute(trx)
        : uids === null
          ? await sql<SeqRow>`SELECT app_id, uid, seq, last_id, last_at, last_body FROM webhook_seq WHERE app_id = ${appId} AND last_id IS NOT NULL`.execute(trx)
          : await sql<SeqRow>`SELECT app_id, uid, seq, last_id, last_at, last_body FROM webhook_seq WHERE app_id = ${appId} AND last_id IS NOT NULL AND uid IN (SELECT value FROM json_each(${JSON.stringify(uids)}))`.execute(trx);
    const out = new Map<string, LoggedUpdate>();
    for (const r of rows) out.set(`${r.app_id}\u0000${r.uid}`, { id: r.last_id, appId: r.app_id, uid: r.uid, seq: r.seq, at: r.last_at, body: r.last_body, createdAt: r.last_at });
    const wanted = uids === null ? null : new Set(uids);
    for (const [k, u] of recent) {
      if ((appId === null || u.appId === appId) && (wanted === null || wanted.has(u.uid))) out.set(k, u);
    }
    return [...out.values()].sort((a, b) => a.id - b.id);
  }

  async newestOfApp(appId: string): Promise<{ readonly cursor: number; readonly users: LoggedUpdate[] }> {
    return this.db.transaction().execute(async (trx) => {
      const users = await this.#newest(trx, appId, null);
      const { rows: m } = await sql<{ last_id: number }>`SELECT last_id FROM webhook_log_head WHERE one = 1`.execute(trx);
      return { cursor: m[0]?.last_id ?? 0, users };
    });
  }

  async newestOfUsers(appId: string, uids: readonly string[]): Promise<LoggedUpdate[]> {
    if (uids.length === 0) return [];
    return this.db.transaction().execute((trx) => this.#newest(trx, appId, uids));
  }

  async since(appId: string, after: number, limit: number): Promise<LoggedUpdate[]> {
    const { rows } = await sql<{ id: number; uid: string; seq: number; at: number; body_json: string; created_at: number }>`
      SELECT id, uid, seq, at, body_json, created_at FROM webhook_log WHERE app_id = ${appId} AND id > ${after} ORDER BY id LIMIT ${limit}`.execute(this.db);
    return rows.map((r) => ({ id: r.id, appId, uid: r.uid, seq: r.seq, at: r.at, body: r.body_json, createdAt: r.created_at }));
  }

  async maxId(): Promise<number> {
    const { rows } = await sql<{ last_id: number }>`SELECT last_id FROM webhook_log_head WHERE one = 1`.execute(this.db);
    return rows[0]?.last_id ?? 0;
  }

  async appHead(appId: string): Promise<number> {
    // Written in the transaction that logs the app's rows (under its append lock on PostgreSQL).
    const { rows } = await sql<{ head: number }>`SELECT head FROM webhook_endpoints WHERE app_id = ${appId}`.execute(this.db);
    return Number(rows[0]?.head ?? 0);
  }

  async newestBodies(): Promise<Array<{ readonly appId: string; readonly uid: string; readonly body: string }>> {
    const all = await this.db.transaction().execute((trx) => this.#newest(trx, null, null));
    return all.map((u) => ({ appId: u.appId, uid: u.uid, body: u.body }));
  }

  async backlog(now: number, dueAfter: number): Promise<AppBacklog[]> {
    // Runs on every pass of the worker: only the apps with something pending (a partial index), a
    // probe or two each; the count, which walks up to a batch of rows, only where the answer matters.
    const { rows } = await sql<{ app_id: string; due: number | null; n: number | null; enext: number | null; cu: number | null; dis: number | null }>`
      WITH b AS (
        SELECT e.app_id, e.delivered_through AS dt, e.replaying, e.next_attempt_at AS enext, e.claimed_until AS cu, e.disabled_at AS dis,
          min(coalesce((SELECT l.due_at FROM webhook_log l WHERE l.app_id = e.app_id AND l.id > e.delivered_through AND l.superseded IS NULL ORDER BY l.id LIMIT 1), 1e300),
              CASE WHEN e.replaying = 1 THEN coalesce((SELECT min(r.due_at) FROM webhook_replay r WHERE r.app_id = e.app_id), 1e300) ELSE 1e300 END) AS due
        FROM webhook_endpoints e WHERE e.head > e.delivered_through OR e.replaying = 1)
      SELECT app_id, CASE WHEN due >= 1e300 THEN 0 ELSE due END AS due, enext, cu, dis,
        CASE WHEN due < 1e300 AND due > ${dueAfter} AND dis IS NULL AND coalesce(enext, 0) <= ${now} AND coalesce(cu, 0) <= ${now}
          THEN (SELECT count(*) FROM (SELECT 1 FROM webhook_log l WHERE l.app_id = b.app_id AND l.id > b.dt AND l.superseded IS NULL LIMIT ${this.#countCap}))
             + CASE WHEN replaying = 1 THEN (SELECT count(*) FROM (SELECT 1 FROM webhook_replay r WHERE r.app_id = b.app_id LIMIT ${this.#countCap})) ELSE 0 END
        END AS n
      FROM b`.execute(this.db);
    return rows.map((r) => ({ appId: r.app_id, oldestDue: r.due ?? 0, count: r.n, endpointNext: r.enext, claimedUntil: r.cu, disabled: r.dis !== null }));
  }

  async claim(appId: string, worker: string, now: number, leaseMs: number, max: number, everyTransition = false): Promise<Claim | null> {
    return this.db.transaction().execute(async (trx) => {
      // The lease, taken in one statement: a new endpoint row, or the existing one if it is enabled and
      // nobody holds it; no row comes back when it is not ours to take.
      const { rows: took } = await sql<LeasedEndpoint>`
        INSERT INTO webhook_endpoints (app_id, failures, claimed_by, claimed_until) VALUES (${appId}, 0, ${worker}, ${now + leaseMs})
        ON CONFLICT (app_id) DO UPDATE SET claimed_by = excluded.claimed_by, claimed_until = excluded.claimed_until
        WHERE disabled_at IS NULL AND (claimed_until IS NULL OR claimed_until <= ${now})
        RETURNING *`.execute(trx);
      if (took.length !== 1) return null;
      const e = took[0]!;
      const ep = toEndpoint(e);
      const from = e.delivered_through;
      if (ep.failingSince !== null && !everyTransition) {
        // While the endpoint is down only the newest state of each user is worth sending: the others
        // are marked superseded (a write only while failing), replayed ones included.
        const pending = sql`
          SELECT id, uid FROM webhook_log WHERE app_id = ${appId} AND id > ${from} AND superseded IS NULL
          UNION ALL SELECT l.id, l.uid FROM webhook_replay r JOIN webhook_log l ON l.app_id = r.app_id AND l.id = r.id WHERE r.app_id = ${appId}`;
        const { rows: old } = await sql<{ id: number }>`
          WITH p(id, uid) AS (${pending}) SELECT id FROM p WHERE id NOT IN (SELECT max(id) FROM p GROUP BY uid)`.execute(trx);
        if (old.length > 0) {
          const ids = jsonIds(old.map((o) => o.id));
          await sql`UPDATE webhook_log SET superseded = 1 WHERE app_id = ${appId} AND id IN (SELECT value FROM json_each(${ids}))`.execute(trx);
          await sql`DELETE FROM webhook_replay WHERE app_id = ${appId} AND id IN (SELECT value FROM json_each(${ids}))`.execute(trx);
        }
      }
      // Replayed rows (older) go first, then the live ones after the app's position.
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
      // Superseded rows between the position and the next live row are passed with this batch; with no
      // live row left, the position goes to the app's newest row.
      const through = live.length > 0 ? live.at(-1)!.id : replayRows.length > 0 ? from : Math.max(from, e.head);
      if (replayRows.length === 0 && live.length === 0) {
        await sql`UPDATE webhook_endpoints SET claimed_by = NULL, claimed_until = NULL, delivered_through = ${through},
          replaying = CASE WHEN replaying = 1 AND EXISTS (SELECT 1 FROM webhook_replay r WHERE r.app_id = ${appId}) THEN 1 ELSE 0 END
          WHERE app_id = ${appId}`.execute(trx);
        return null;
      }
      const rows = [...replayRows, ...live];
      const key = batchKeyOf(rows.map((r) => r.id));
      // A retry of exactly the same updates keeps its webhook-id, so the receiver can recognise it; the
      // id is written before the request goes, so a crash does not change it either.
      const { batchId, write } = batchIdOf(e, key);
      if (write) await sql`UPDATE webhook_endpoints SET batch_id = ${batchId}, batch_key = ${key} WHERE app_id = ${appId}`.execute(trx);
      return { batchId, worker, endpoint: ep, rows: rows.map(toOutboxRow), through, replayed: replayRows.map((r) => r.id) };
    });
  }

  /** Rows of the claim that were not sent: superseded (never sent, never replayed), out of the replay list. */
  async #supersede(trx: Kysely<any>, appId: string, ids: readonly number[]): Promise<void> {
    if (ids.length === 0) return;
    await sql`UPDATE webhook_log SET superseded = 1 WHERE app_id = ${appId} AND id IN (SELECT value FROM json_each(${jsonIds(ids)}))`.execute(trx);
    await sql`DELETE FROM webhook_replay WHERE app_id = ${appId} AND id IN (SELECT value FROM json_each(${jsonIds(ids)}))`.execute(trx);
  }

  /** The claim is done: the position passes it, its replayed rows leave the list. */
  async #pass(trx: Kysely<any>, appId: string, claim: Claim): Promise<void> {
    if (claim.replayed.length > 0) {
      await sql`DELETE FROM webhook_replay WHERE app_id = ${appId} AND id IN (SELECT value FROM json_each(${jsonIds(claim.replayed)}))`.execute(trx);
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
        UPDATE webhook_endpoints SET delivered_through = max(delivered_through, ${claim.through}), batch_id = NULL, batch_key = NULL,
          failing_since = NULL, failures = 0, next_attempt_at = NULL, last_error = NULL, last_success_at = ${now}, claimed_by = NULL, claimed_until = NULL
        WHERE app_id = ${appId}`.execute(trx);
      return true;
    });
  }

  async failed(appId: string, claim: Claim, sentIds: readonly number[], now: number, change: { nextAttemptAt: number; error: string; disabledReason: string | null }, attempt: AttemptRecord): Promise<boolean> {
    return this.db.transaction().execute(async (trx) => {
      if (!(await this.#stillHeld(trx, appId, claim))) return false;
      await this.#logAttempt(trx, attempt);
      // What was sent is the batch whose retry keeps the id (rows left out for a revoked user are superseded by then).
      await sql`
        UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, ${now}), failures = failures + 1, next_attempt_at = ${change.nextAttemptAt},
          last_error = ${change.error},
          disabled_at = CASE WHEN ${change.disabledReason} IS NULL THEN disabled_at ELSE ${now} END,
          disabled_reason = coalesce(${change.disabledReason}, disabled_reason),
          batch_id = ${claim.batchId}, batch_key = ${failedBatchKey(batchKeyOf(sentIds))}, claimed_by = NULL, claimed_until = NULL
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
        // Nothing of the claim is sent: it is done as if delivered, the endpoint's state untouched.
        await this.#pass(trx, appId, claim);
        await sql`UPDATE webhook_endpoints SET delivered_through = max(delivered_through, ${claim.through}) WHERE app_id = ${appId}`.execute(trx);
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
    const { rows } = await sql<{ claimed_by: string | null }>`SELECT claimed_by FROM webhook_endpoints WHERE app_id = ${appId}`.execute(trx);
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
    const { rows } = appId === null
      ? await sql<{ n: number | null }>`SELECT sum(${perApp}) AS n FROM webhook_endpoints e WHERE e.head > e.delivered_through OR e.replaying = 1`.execute(this.db)
      : await sql<{ n: number | null }>`SELECT ${perApp} AS n FROM webhook_endpoints e WHERE e.app_id = ${appId}`.execute(this.db);
    return rows[0]?.n ?? 0;
  }

  async replay(appId: string, from: number, to: number, now: number): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      // Delivered = at or before the app's position and not superseded; those already listed stay as they are.
      const res = await sql`
        INSERT INTO webhook_replay (app_id, id, due_at)
        SELECT l.app_id, l.id, ${now} FROM webhook_log l JOIN webhook_endpoints e ON e.app_id = l.app_id
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
      const recent = await this.#recentOf(trx);
      const dead = new Set(gone.map((g) => g.id));
      for (const [k, u] of recent) if (dead.has(u.appId)) recent.delete(k);
      if (dead.size > 0) this.#seqKnown = new Map();
      for (const g of gone) purged += Number((await sql`DELETE FROM webhook_log WHERE app_id = ${g.id}`.execute(trx)).numAffectedRows ?? 0n);
      await sql`DELETE FROM webhook_replay WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_attempts WHERE at < ${before} OR app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_endpoints WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
      await sql`DELETE FROM webhook_seq WHERE app_id NOT IN (SELECT id FROM apps)`.execute(trx);
    }).catch((err: unknown) => {
      // Memory was changed with the transaction that failed: read it again from the database.
      this.#forget();
      throw err;
    });
    // Done rows older than `before`: at or before the app's position, before any row still to replay,
    // and covered by webhook_seq's checkpoint (later ones are read back at start).
    const { rows: eps } = await sql<PurgeBounds>`
      SELECT e.app_id, min(e.delivered_through, (SELECT seq_through FROM webhook_log_head WHERE one = 1),
          coalesce((SELECT min(r.id) - 1 FROM webhook_replay r WHERE r.app_id = e.app_id), e.delivered_through)) AS upto,
        (SELECT min(l.id) FROM webhook_log l WHERE l.app_id = e.app_id) AS first,
        (SELECT l.created_at FROM webhook_log l WHERE l.app_id = e.app_id ORDER BY l.id LIMIT 1) AS first_at
      FROM webhook_endpoints e`.execute(this.db);
    for (const e of eps) purged += await purgeDone(this.db, e, before);
    return purged;
  }
}
