import { createHash, randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import type { EndpointState, OutboxRow, WebhookStoreOptions } from './store.js';

/** Rows of the webhook tables as both stores read them, and what both stores share. */

/** The most `AppBacklog.count` says: the largest webhook_batch_max, all the worker compares it with. */
export const BACKLOG_COUNT_CAP = 10_000;

export const countCapOf = (opts: WebhookStoreOptions): number => Math.min(opts.backlogCountCap ?? BACKLOG_COUNT_CAP, BACKLOG_COUNT_CAP);

const EMPTY_ENDPOINT: EndpointState = { failingSince: null, failures: 0, nextAttemptAt: null, lastError: null, lastSuccessAt: null, disabledAt: null, disabledReason: null };

export interface EndpointRow {
  failing_since: number | null;
  failures: number;
  next_attempt_at: number | null;
  last_error: string | null;
  last_success_at: number | null;
  disabled_at: number | null;
  disabled_reason: string | null;
}

export const toEndpoint = (r: EndpointRow | undefined): EndpointState =>
  r === undefined
    ? EMPTY_ENDPOINT
    : { failingSince: r.failing_since, failures: r.failures, nextAttemptAt: r.next_attempt_at, lastError: r.last_error, lastSuccessAt: r.last_success_at, disabledAt: r.disabled_at, disabledReason: r.disabled_reason };

export interface LeasedEndpoint extends EndpointRow {
  delivered_through: number;
  head: number;
  replaying: number;
  batch_id: string | null;
  batch_key: string | null;
}

export type LogRow = { id: number; uid: string; seq: number; at: number; body_json: string };
export const toOutboxRow = (r: LogRow): OutboxRow => ({ id: r.id, uid: r.uid, seq: r.seq, at: r.at, body: r.body_json });

/** An app's log as purge() sees it: rows up to `upto` are done, `first` is its oldest row, written at `first_at`. */
export interface PurgeBounds {
  readonly app_id: string;
  readonly upto: number;
  readonly first: number | null;
  readonly first_at: number | null;
}

/** Deletes the app's done rows (id <= upto) written before `before`; how many. */
export async function purgeDone(db: Kysely<any>, e: PurgeBounds, before: number): Promise<number> {
  // Most apps have nothing old enough: their oldest row says so.
  if (e.first === null || e.first > e.upto || e.first_at === null || e.first_at >= before) return 0;
  // Ids grow with time: a binary search finds where the rows younger than `before` start, in a few
  // probes, instead of a scan of everything retained. Rows before it younger than `before` (a clock
  // set back) are still kept by the DELETE's own test.
  let lo = e.first;
  let hi = e.upto + 1;
  while (lo < hi) {
    const mid = Math.floor((lo + hi) / 2);
    const { rows: r } = await sql<{ id: number; created_at: number }>`
      SELECT id, created_at FROM webhook_log WHERE app_id = ${e.app_id} AND id >= ${mid} AND id <= ${e.upto} ORDER BY id LIMIT 1`.execute(db);
    const row = r[0];
    if (row !== undefined && row.created_at < before) lo = row.id + 1;
    else hi = mid;
  }
  if (lo <= e.first) return 0;
  const res = await sql`DELETE FROM webhook_log WHERE app_id = ${e.app_id} AND id < ${lo} AND created_at < ${before}`.execute(db);
  return Number(res.numAffectedRows ?? 0n);
}

/**
 * An endpoint's batch_key says which rows its last batch carried (batchKeyOf): as written by the claim
 * that sent it (its outcome unknown while the lease runs: the worker may have died mid-request), or with
 * this prefix once the request failed (the receiver did not take it).
 */
const FAILED = 'f:';

export const failedBatchKey = (key: string): string => `${FAILED}${key}`;

/**
 * The webhook-id of a claimed batch whose rows have `key`: the endpoint's when its last batch carried
 * exactly these rows (a retry), else a new one; `write` when the endpoint's batch_id and batch_key must
 * be updated (the claim records what goes out before it goes, so a crash does not change it).
 */
export function batchIdOf(e: { readonly batch_id: string | null; readonly batch_key: string | null }, key: string): { readonly batchId: string; readonly write: boolean } {
  if (e.batch_id !== null && (e.batch_key === key || e.batch_key === failedBatchKey(key))) return { batchId: e.batch_id, write: e.batch_key !== key };
  return { batchId: `msg_${randomBytes(16).toString('base64url')}`, write: true };
}

/**
 * How many of the pending rows (replayed ones first, then live ones, as a claim orders them) make up
 * the batch that went out last and was never settled (its worker died mid-request: the endpoint holds
 * its key as the claim wrote it), when they are the first of them. That batch goes again as it was,
 * under its webhook-id, though newer rows were logged since (they follow in the next request): a
 * receiver that took the first request can tell the second for a repeat. null: no such batch (a failed
 * batch is not one: the receiver did not take it, and its retry may carry what was logged since).
 */
export function unsettledBatchLength(ids: readonly number[], key: string | null): number | null {
  if (key === null || key.startsWith(FAILED)) return null;
  // The key is sha256 of the ids joined with commas: hashed one id at a time, each prefix compared.
  const h = createHash('sha256');
  for (let i = 0; i < ids.length; i++) {
    h.update(i === 0 ? String(ids[i]) : `,${ids[i]}`);
    if (h.copy().digest('base64url') === key) return i + 1;
  }
  return null;
}
