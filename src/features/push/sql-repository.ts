import { sql, type Kysely, type RawBuilder } from 'kysely';
import type { SqlDialect } from '../sql-dialect.js';
import { randomId } from './ids.js';
import type { PushMessage } from './providers/provider.js';
import { RegistrationCache } from './registration-cache.js';
import {
  TooManyRegistrations,
  type ClaimRequest,
  type ClaimRider,
  type NewPush,
  type NewRegistration,
  type PushRepository,
  type PushRepositoryOptions,
  type QueuedPush,
  type Registration,
  type RegistrationKey,
} from './repository.js';

interface RegistrationRow {
  id: string;
  account: string;
  provider: string;
  token: string;
  second_token: string | null;
  keys_json: string | null;
  resource: string | null;
  source: string;
  node: string;
  xmpp_jid: string | null;
  away: number;
  options_json: string | null;
  created_at: number;
  updated_at: number;
  failures: number;
  last_error: string | null;
  last_success_at: number | null;
  disabled_at: number | null;
  disabled_reason: string | null;
}

const toRegistration = (r: RegistrationRow): Registration => ({
  id: r.id,
  account: r.account,
  provider: r.provider,
  token: r.token,
  secondToken: r.second_token,
  keys: r.keys_json === null ? null : (JSON.parse(r.keys_json) as Registration['keys']),
  resource: r.resource,
  source: r.source === 'xmpp' ? 'xmpp' : 'native',
  node: r.node,
  xmppJid: r.xmpp_jid,
  away: r.away !== 0,
  options: r.options_json === null ? null : (JSON.parse(r.options_json) as Record<string, string>),
  createdAt: r.created_at,
  updatedAt: r.updated_at,
  failures: r.failures,
  lastError: r.last_error,
  lastSuccessAt: r.last_success_at,
  disabledAt: r.disabled_at,
  disabledReason: r.disabled_reason,
});

type ClaimedRow = { id: number; push_id: string; registration_id: string; account: string; trigger: string; message_json: string; attempts: number };

/**
 * What differs between the databases, kept here so that the repository's queries are written once.
 * SQLite has one writer at a time (a write transaction holds the database), so claiming and coalescing
 * need no row locks there; on PostgreSQL several nodes write at once.
 */
interface PushSql {
  /** A subquery listing `values`, for `x IN <list>`. */
  list(values: readonly (string | number)[], type: 'text' | 'bigint'): RawBuilder<unknown>;
  /** Leases up to `limit` due pushes, each the oldest waiting push of its registration. */
  claim(db: Kysely<any>, worker: string, now: number, until: number, limit: number, exclude: readonly string[]): Promise<ClaimedRow[]>;
  /** Added to coalescing's UPDATE: the row must still be free when it is written. */
  stillFree(now: number): RawBuilder<unknown>;
  /** Serialises registrations of the same account or device token (the per-account count, the token's row). */
  lockRegistration(trx: Kysely<any>, account: string, provider: string, token: string): Promise<void>;
}

const SQLITE: PushSql = {
  list: (values) => sql`(SELECT value FROM json_each(${JSON.stringify(values)}))`,
  async claim(db, worker, now, until, limit, exclude) {
    // The rows to lease are read first, in the due-time index's order: most looks at the queue find
    // none, and the UPDATE with this as its subquery cost about 0.3 ms of CPU even then (the read alone
    // 0.03 ms). due_at moves to the lease's end, so rows being sent are not scanned again at each pass;
    // claimed_until still marks the lease for coalescing (enqueue).
    const { rows: due } = await sql<{ id: number }>`
      SELECT o.id FROM push_outbox o
      WHERE o.due_at <= ${now} AND (o.claimed_until IS NULL OR o.claimed_until <= ${now})
        AND o.registration_id NOT IN ${SQLITE.list(exclude, 'text')}
        AND NOT EXISTS (SELECT 1 FROM push_outbox p WHERE p.registration_id = o.registration_id AND p.id < o.id)
      ORDER BY o.due_at, o.id LIMIT ${limit}`.execute(db);
    if (due.length === 0) return [];
    // Outside a transaction another one (an enqueue's riding claim) may have leased a row since it was
    // read: the lease checks again that each row is still due and free. (A row stays the oldest of its
    // device's: no older one can appear.)
    const { rows } = await sql<ClaimedRow>`
      UPDATE push_outbox SET claimed_by = ${worker}, claimed_until = ${until}, due_at = ${until}
      WHERE id IN ${SQLITE.list(due.map((r) => r.id), 'bigint')} AND due_at <= ${now} AND (claimed_until IS NULL OR claimed_until <= ${now})
      RETURNING id, push_id, registration_id, account, trigger, message_json, attempts`.execute(db);
    return rows;
  },
  // The write transaction excludes every other writer: what the UPDATE's subquery saw still holds.
  stillFree: () => sql``,
  lockRegistration: async () => undefined,
};

/** A registration's last success time is kept to this step (see #sent). */
const SUCCESS_TIME_STEP_MS = 60_000;

/** Advisory lock class of push registrations (two-key form: a space of its own). */
const PG_REGISTRATION_LOCK = 0x70757368; // "push"

const POSTGRES: PushSql = {
  list: (values, type) => sql`(SELECT unnest(${values}::${sql.raw(type)}[]))`,
  async claim(db, worker, now, until, limit, exclude) {
    // Several workers (nodes) claim at once: rows another worker is claiming are skipped, not waited
    // for, and a row whose lease another worker committed since this statement's snapshot is re-checked
    // when locked (READ COMMITTED), so fails `claimed_until <= now` and is left out. The CTE is run once.
    // A registration's newer push stays out while its older one exists, locked or not: one at a time per device.
    const { rows } = await sql<ClaimedRow>`
      WITH c AS (
        SELECT o.id FROM push_outbox o
        WHERE o.due_at <= ${now} AND (o.claimed_until IS NULL OR o.claimed_until <= ${now})
          AND o.registration_id NOT IN ${POSTGRES.list(exclude, 'text')}
          AND NOT EXISTS (SELECT 1 FROM push_outbox p WHERE p.registration_id = o.registration_id AND p.id < o.id)
        ORDER BY o.due_at, o.id LIMIT ${limit}
        FOR UPDATE OF o SKIP LOCKED)
      UPDATE push_outbox SET claimed_by = ${worker}, claimed_until = ${until}, due_at = ${until}
      FROM c WHERE push_outbox.id = c.id
      RETURNING push_outbox.id, push_id, registration_id, account, trigger, message_json, attempts`.execute(db);
    return rows;
  },
  // The row chosen may be leased by another node between the subquery's snapshot and the write; the
  // UPDATE re-checks its own WHERE on the row's newest version, so a row under way is not replaced.
  stillFree: (now) => sql` AND (claimed_until IS NULL OR claimed_until <= ${now})`,
  async lockRegistration(trx, account, provider, token) {
    // Both keys, in a fixed order (no deadlock between two registrations taking them).
    const keys = [`a:${account}`, `t:${JSON.stringify([provider, token])}`].sort();
    for (const k of keys) await sql`SELECT pg_advisory_xact_lock(${PG_REGISTRATION_LOCK}, hashtext(${k}))`.execute(trx);
  },
};

/**
 * Registrations and the durable queue through kysely, on SQLite and PostgreSQL; the few differences are
 * in PushSql above.
 */
export class SqlPushRepository implements PushRepository {
  readonly #sql: PushSql;
  /** null: every read goes to the database (a cluster: other nodes change rows too). */
  readonly #cache: RegistrationCache | null;

  constructor(
    private readonly db: Kysely<any>,
    dialect: SqlDialect = 'sqlite',
    opts: PushRepositoryOptions = {},
  ) {
    this.#sql = dialect === 'postgres' ? POSTGRES : SQLITE;
    this.#cache = (opts.cacheAccounts ?? 0) > 0 ? new RegistrationCache(opts.cacheAccounts!) : null;
  }

  async register(r: NewRegistration, max: number, now: number): Promise<{ registration: Registration; replaced: boolean }> {
    // The token's previous account loses it (a device changing hands).
    let previous: string | undefined;
    try {
      return await this.#register(r, max, now, (account) => (previous = account));
    } finally {
      this.#cache?.drop(r.account);
      if (previous !== undefined) this.#cache?.drop(previous);
    }
  }

  async #register(r: NewRegistration, max: number, now: number, touched: (account: string) => void): Promise<{ registration: Registration; replaced: boolean }> {
    return this.db.transaction().execute(async (trx) => {
      await this.#sql.lockRegistration(trx, r.account, r.provider, r.token);
      const one = async (q: ReturnType<typeof sql<RegistrationRow>>) => (await q.execute(trx)).rows[0];
      const byToken = await one(sql<RegistrationRow>`SELECT * FROM push_registrations WHERE provider = ${r.provider} AND token = ${r.token}`);
      // The same device's older token (tokens rotate): a native registration from the same resource and provider.
      const bySlot =
        r.source === 'native' && r.resource != null
          ? await one(sql<RegistrationRow>`SELECT * FROM push_registrations WHERE account = ${r.account} AND source = 'native' AND resource = ${r.resource} AND provider = ${r.provider}`)
          : undefined;
      const keep = byToken ?? bySlot;
      if (keep !== undefined) touched(keep.account);
      if (bySlot !== undefined && byToken !== undefined && bySlot.id !== byToken.id) {
        await sql`DELETE FROM push_outbox WHERE registration_id = ${bySlot.id}`.execute(trx);
        await sql`DELETE FROM push_registrations WHERE id = ${bySlot.id}`.execute(trx);
      }
      if (keep === undefined || keep.account !== r.account) {
        const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM push_registrations WHERE account = ${r.account}`.execute(trx);
        if (rows[0]!.n >= max) throw new TooManyRegistrations(`this account already has ${rows[0]!.n} push registrations, the most allowed (push_max_registrations = ${max}); unregister one first`);
      }
      const keys = r.keys == null ? null : JSON.stringify({ p256dh: r.keys.p256dh, auth: r.keys.auth });
      const options = r.options == null ? null : JSON.stringify(r.options);
      if (keep !== undefined) {
        // Pushes waiting for the device's previous account, or its previous token, are not for this one.
        if (keep.account !== r.account || keep.token !== r.token) await sql`DELETE FROM push_outbox WHERE registration_id = ${keep.id}`.execute(trx);
        await sql`
          UPDATE push_registrations SET account = ${r.account}, token = ${r.token}, second_token = ${r.secondToken ?? null}, keys_json = ${keys},
            resource = ${r.resource ?? null}, source = ${r.source}, node = ${r.node ?? keep.node}, xmpp_jid = ${r.xmppJid ?? null}, away = ${r.away === true ? 1 : 0},
            options_json = ${options}, updated_at = ${now}, failures = 0, last_error = NULL, disabled_at = NULL, disabled_reason = NULL
          WHERE id = ${keep.id}`.execute(trx);
        const row = await one(sql<RegistrationRow>`SELECT * FROM push_registrations WHERE id = ${keep.id}`);
        return { registration: toRegistration(row!), replaced: true };
      }
      const id = randomId('pr_');
      await sql`
        INSERT INTO push_registrations (id, account, provider, token, second_token, keys_json, resource, source, node, xmpp_jid, away, options_json, created_at, updated_at, failures)
        VALUES (${id}, ${r.account}, ${r.provider}, ${r.token}, ${r.secondToken ?? null}, ${keys}, ${r.resource ?? null}, ${r.source}, ${r.node ?? randomId('')},
          ${r.xmppJid ?? null}, ${r.away === true ? 1 : 0}, ${options}, ${now}, ${now}, 0)`.execute(trx);
      const row = await one(sql<RegistrationRow>`SELECT * FROM push_registrations WHERE id = ${id}`);
      return { registration: toRegistration(row!), replaced: false };
    });
  }

  async unregister(account: string, key: RegistrationKey): Promise<number> {
    try {
      return await this.#unregister(account, key);
    } finally {
      this.#cache?.drop(account);
    }
  }

  async #unregister(account: string, key: RegistrationKey): Promise<number> {
    return this.db.transaction().execute(async (trx) => {
      const where =
        'id' in key ? sql`id = ${key.id}` : 'token' in key ? sql`token = ${key.token}` : sql`node = ${key.node}`;
      const { rows } = await sql<{ id: string }>`SELECT id FROM push_registrations WHERE account = ${account} AND ${where}`.execute(trx);
      for (const { id } of rows) {
        await sql`DELETE FROM push_outbox WHERE registration_id = ${id}`.execute(trx);
        await sql`DELETE FROM push_registrations WHERE id = ${id}`.execute(trx);
      }
      return rows.length;
    });
  }

  async list(account: string): Promise<Registration[]> {
    const { rows } = await sql<RegistrationRow>`SELECT * FROM push_registrations WHERE account = ${account} ORDER BY created_at, id`.execute(this.db);
    return rows.map(toRegistration);
  }

  async targets(account: string): Promise<readonly Registration[]> {
    const cache = this.#cache;
    const hit = cache?.get(account);
    if (hit !== undefined) return hit;
    const generation = cache?.generation ?? 0;
    const regs = await this.list(account);
    cache?.set(account, regs, generation);
    return regs;
  }

  async registrationsOf(pushes: readonly { readonly registrationId: string; readonly account: string }[]): Promise<Registration[]> {
    const cache = this.#cache;
    if (cache === null) return this.getMany([...new Set(pushes.map((p) => p.registrationId))]);
    const wanted = new Set(pushes.map((p) => p.registrationId));
    const out: Registration[] = [];
    const missing = new Set<string>();
    for (const account of new Set(pushes.map((p) => p.account))) {
      const hit = cache.get(account);
      if (hit === undefined) missing.add(account);
      else for (const r of hit) if (wanted.delete(r.id)) out.push(r);
    }
    if (missing.size > 0) {
      // The accounts not in the cache are read whole, in one query, and kept.
      const generation = cache.generation;
      const { rows } = await sql<RegistrationRow>`
        SELECT * FROM push_registrations WHERE account IN ${this.#sql.list([...missing], 'text')} ORDER BY account, created_at, id`.execute(this.db);
      const byAccount = new Map<string, Registration[]>([...missing].map((a) => [a, []]));
      for (const row of rows) byAccount.get(row.account)?.push(toRegistration(row));
      for (const [account, regs] of byAccount) {
        cache.set(account, regs, generation);
        for (const r of regs) if (wanted.delete(r.id)) out.push(r);
      }
    }
    // A push whose registration is not among its account's (it changed accounts since): read by id.
    if (wanted.size > 0) out.push(...(await this.getMany([...wanted])));
    return out;
  }

  async get(id: string): Promise<Registration | undefined> {
    const row = (await sql<RegistrationRow>`SELECT * FROM push_registrations WHERE id = ${id}`.execute(this.db)).rows[0];
    return row === undefined ? undefined : toRegistration(row);
  }

  async byNode(node: string): Promise<Registration | undefined> {
    const row = (await sql<RegistrationRow>`SELECT * FROM push_registrations WHERE node = ${node}`.execute(this.db)).rows[0];
    return row === undefined ? undefined : toRegistration(row);
  }

  async updateXmpp(id: string, change: { away?: boolean; options?: Readonly<Record<string, string>> | null; xmppJid?: string | null; resource?: string | null }, now: number): Promise<Registration | undefined> {
    const sets = [sql`updated_at = ${now}`];
    if (change.away !== undefined) sets.push(sql`away = ${change.away ? 1 : 0}`);
    if (change.options !== undefined) sets.push(sql`options_json = ${change.options === null ? null : JSON.stringify(change.options)}`);
    if (change.xmppJid !== undefined) sets.push(sql`xmpp_jid = ${change.xmppJid}`);
    if (change.resource !== undefined) sets.push(sql`resource = ${change.resource}`);
    await sql`UPDATE push_registrations SET ${sql.join(sets)} WHERE id = ${id}`.execute(this.db);
    // Whose row it is (the account's entry to drop) is known once it is read.
    let reg: Registration | undefined;
    try {
      reg = await this.get(id);
    } catch (e) {
      this.#cache?.clear();
      throw e;
    }
    if (reg !== undefined) this.#cache?.drop(reg.account);
    return reg;
  }

  async removeAccount(account: string): Promise<number> {
    try {
      return await this.db.transaction().execute(async (trx) => {
        await sql`DELETE FROM push_outbox WHERE account = ${account}`.execute(trx);
        const res = await sql`DELETE FROM push_registrations WHERE account = ${account}`.execute(trx);
        return Number(res.numAffectedRows ?? 0n);
      });
    } finally {
      this.#cache?.drop(account);
    }
  }

  async accounts(): Promise<string[]> {
    const { rows } = await sql<{ account: string }>`SELECT DISTINCT account FROM push_registrations`.execute(this.db);
    return rows.map((r) => r.account);
  }

  enqueue(pushes: readonly NewPush[], now: number): Promise<void> {
    if (pushes.length === 0) return Promise.resolve();
    // Group commit: the writes of one turn of the event loop (concurrent triggers) share a transaction.
    // Each caller still resolves only once its rows are committed; the commit, not the rows, is what
    // costs (the WAL's page writes), so a burst of notifications pays it once.
    return new Promise<void>((resolve, reject) => {
      this.#enqueues.push({ pushes, now, resolve, reject });
      if (this.#enqueues.length === 1) setImmediate(() => void this.#writeEnqueued());
    });
  }

  readonly #enqueues: Array<{ readonly pushes: readonly NewPush[]; readonly now: number; readonly resolve: () => void; readonly reject: (e: unknown) => void }> = [];

  #rider: ClaimRider | null = null;

  setClaimRider(rider: ClaimRider | null): void {
    this.#rider = rider;
  }

  async #writeEnqueued(): Promise<void> {
    const calls = this.#enqueues.splice(0);
    const rider = this.#rider;
    let ride: ClaimRequest | null = null;
    let claimed: QueuedPush[] = [];
    try {
      await this.db.transaction().execute(async (trx) => {
        // In the callers' order, as if each had its own transaction: a later push coalesces into an earlier one.
        // (One INSERT per row: measured cheaper than one statement for many, through json_each or a
        // multi-row VALUES, which cost more to bind or parse than the per-statement overhead saved.)
        for (const { pushes, now } of calls) for (const p of pushes) await this.#enqueueOne(trx, p, now);
        // The worker's claim, after the writes: what was just queued can be leased in the same commit.
        ride = rider?.request() ?? null;
        if (ride !== null) {
          if (ride.sent.length > 0) await this.#sent(trx, ride.sent, ride.now);
          claimed = await this.#claim(trx, ride.worker, ride.now, ride.leaseMs, ride.limit, ride.exclude);
        }
      });
    } catch (e) {
      for (const c of calls) c.reject(e);
      if (ride !== null) rider!.done({ error: e });
      return;
    }
    for (const c of calls) c.resolve();
    if (ride !== null) rider!.done({ claimed });
  }

  async #enqueueOne(trx: Kysely<any>, p: NewPush, now: number): Promise<void> {
    const body = JSON.stringify(p.message);
    // Only a push nobody is sending can be replaced: one under way has already left. A fresh collapse
    // key has nothing to replace.
    const res = p.freshCollapseKey === true ? { numAffectedRows: 0n } : await sql`
      UPDATE push_outbox SET message_json = ${body}, trigger = ${p.trigger}, updated_at = ${now}
      WHERE id = (SELECT id FROM push_outbox WHERE registration_id = ${p.registrationId} AND collapse_key = ${p.message.collapseKey}
                    AND (claimed_until IS NULL OR claimed_until <= ${now}) ORDER BY id DESC LIMIT 1)${this.#sql.stillFree(now)}`.execute(trx);
    if (res.numAffectedRows === 1n) return;
    await sql`
      INSERT INTO push_outbox (registration_id, account, trigger, collapse_key, message_json, push_id, attempts, due_at, created_at, updated_at)
      VALUES (${p.registrationId}, ${p.account}, ${p.trigger}, ${p.message.collapseKey}, ${body}, ${p.pushId}, 0, ${now}, ${now}, ${now})`.execute(trx);
  }

  async claimDue(worker: string, now: number, leaseMs: number, limit: number, exclude: readonly string[], sent: readonly QueuedPush[] = []): Promise<QueuedPush[]> {
    if (sent.length === 0) return this.#claim(this.db, worker, now, leaseMs, limit, exclude);
    return this.db.transaction().execute(async (trx) => {
      await this.#sent(trx, sent, now);
      return this.#claim(trx, worker, now, leaseMs, limit, exclude);
    });
  }

  async #claim(db: Kysely<any>, worker: string, now: number, leaseMs: number, limit: number, exclude: readonly string[]): Promise<QueuedPush[]> {
    if (limit <= 0) return [];
    const rows = await this.#sql.claim(db, worker, now, now + leaseMs, limit, exclude);
    return rows
      .sort((a, b) => a.id - b.id)
      .map((row) => ({
        rowId: row.id,
        pushId: row.push_id,
        registrationId: row.registration_id,
        account: row.account,
        trigger: row.trigger,
        message: JSON.parse(row.message_json) as PushMessage,
        attempts: row.attempts,
      }));
  }

  async nextDue(now: number): Promise<number | null> {
    const { rows } = await sql<{ d: number | null }>`SELECT min(due_at) AS d FROM push_outbox WHERE due_at > ${now}`.execute(this.db);
    return rows[0]?.d ?? null;
  }

  async getMany(ids: readonly string[]): Promise<Registration[]> {
    if (ids.length === 0) return [];
    const { rows } = await sql<RegistrationRow>`SELECT * FROM push_registrations WHERE id IN ${this.#sql.list(ids, 'text')}`.execute(this.db);
    return rows.map(toRegistration);
  }

  async sent(pushes: readonly QueuedPush[], now: number): Promise<void> {
    if (pushes.length === 0) return;
    await this.db.transaction().execute((trx) => this.#sent(trx, pushes, now));
  }

  async #sent(trx: Kysely<any>, pushes: readonly QueuedPush[], now: number): Promise<void> {
    await sql`DELETE FROM push_outbox WHERE id IN ${this.#sql.list(pushes.map((p) => p.rowId), 'bigint')}`.execute(trx);
    // A registration's row is rewritten (a page of the table written to the WAL) only when it had
    // failures or its last success is older than a minute: a device pushed again soon keeps its time.
    await sql`
      UPDATE push_registrations SET failures = 0, last_error = NULL, last_success_at = ${now}
      WHERE id IN ${this.#sql.list([...new Set(pushes.map((p) => p.registrationId))], 'text')}
        AND (failures <> 0 OR last_error IS NOT NULL OR last_success_at IS NULL OR last_success_at <= ${now - SUCCESS_TIME_STEP_MS})`.execute(trx);
    // A kept registration that had failures has none now. (Its last success time is not kept up to
    // date there: the push path does not read it, and list() reads the table.)
    const cache = this.#cache;
    if (cache !== null) {
      for (const p of pushes) {
        const r = cache.get(p.account)?.find((x) => x.id === p.registrationId);
        if (r !== undefined && (r.failures !== 0 || r.lastError !== null)) cache.drop(p.account);
      }
    }
  }

  async retryLater(p: QueuedPush, dueAt: number, error: string, counted: boolean): Promise<void> {
    await sql`
      UPDATE push_outbox SET attempts = attempts + ${counted ? 1 : 0}, due_at = ${dueAt}, last_error = ${error}, claimed_by = NULL, claimed_until = NULL
      WHERE id = ${p.rowId}`.execute(this.db);
  }

  async failed(p: QueuedPush, error: string, maxFailures: number, now: number): Promise<{ failures: number; disabled: boolean }> {
    try {
      return await this.#failed(p, error, maxFailures, now);
    } finally {
      this.#cache?.drop(p.account);
    }
  }

  async #failed(p: QueuedPush, error: string, maxFailures: number, now: number): Promise<{ failures: number; disabled: boolean }> {
    return this.db.transaction().execute(async (trx) => {
      await sql`DELETE FROM push_outbox WHERE id = ${p.rowId}`.execute(trx);
      await sql`
        UPDATE push_registrations SET failures = failures + 1, last_error = ${error},
          disabled_at = CASE WHEN disabled_at IS NULL AND failures + 1 >= ${maxFailures} THEN ${now} ELSE disabled_at END,
          disabled_reason = CASE WHEN disabled_at IS NULL AND failures + 1 >= ${maxFailures}
            THEN ${`${maxFailures} pushes in a row failed (push_max_failures); last: ${error}`} ELSE disabled_reason END
        WHERE id = ${p.registrationId}`.execute(trx);
      const row = (await sql<{ failures: number; disabled_at: number | null }>`SELECT failures, disabled_at FROM push_registrations WHERE id = ${p.registrationId}`.execute(trx)).rows[0];
      if (row === undefined) return { failures: 0, disabled: false };
      // A disabled registration's other waiting pushes would only fail too.
      if (row.disabled_at !== null) await sql`DELETE FROM push_outbox WHERE registration_id = ${p.registrationId}`.execute(trx);
      return { failures: row.failures, disabled: row.disabled_at !== null };
    });
  }

  async drop(rowId: number): Promise<void> {
    await sql`DELETE FROM push_outbox WHERE id = ${rowId}`.execute(this.db);
  }

  async prune(registrationId: string): Promise<Registration | undefined> {
    let account: string | undefined;
    try {
      return await this.db.transaction().execute(async (trx) => {
        const row = (await sql<RegistrationRow>`SELECT * FROM push_registrations WHERE id = ${registrationId}`.execute(trx)).rows[0];
        account = row?.account;
        await sql`DELETE FROM push_outbox WHERE registration_id = ${registrationId}`.execute(trx);
        await sql`DELETE FROM push_registrations WHERE id = ${registrationId}`.execute(trx);
        return row === undefined ? undefined : toRegistration(row);
      });
    } finally {
      if (account !== undefined) this.#cache?.drop(account);
    }
  }

  async pendingCount(): Promise<number> {
    const { rows } = await sql<{ n: number }>`SELECT count(*) AS n FROM push_outbox`.execute(this.db);
    return rows[0]!.n;
  }
}
