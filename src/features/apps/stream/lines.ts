import type { StoredBody } from '../webhooks/outbox.js';
import type { GrantedApp } from '../webhooks/presence-source.js';
import type { LoggedUpdate } from '../webhooks/store.js';
import { encodeCursor } from './cursor.js';

/**
 * What an app is told of one user, in the shape of the extended webhook body (webhooks/worker.ts), so
 * a stream line, a REST answer and a webhook read alike. Status text and last seen only while the
 * grant has `presence.status`: a grant made again with fewer scopes must not show what an older
 * logged row still holds.
 */
export interface UpdateView {
  readonly uid: string;
  readonly status: StoredBody['status'];
  readonly seq: number;
  readonly at: string;
  readonly statusText?: string;
  readonly lastSeen?: string;
}

export function updateView(u: LoggedUpdate, grant: GrantedApp): UpdateView {
  const b = JSON.parse(u.body) as StoredBody;
  const withStatus = grant.scopes.includes('presence.status');
  return {
    uid: u.uid,
    status: b.status,
    seq: u.seq,
    at: new Date(u.at).toISOString(),
    ...(withStatus && b.statusText !== undefined ? { statusText: b.statusText } : {}),
    ...(withStatus && b.lastSeen !== undefined ? { lastSeen: new Date(b.lastSeen).toISOString() } : {}),
  };
}

/** The lines of a stream (docs/apps.md, "Presence stream"); the same JSON is an SSE event's data. */
export type StreamLine =
  | { readonly type: 'snapshot'; readonly users: number; readonly fresh: boolean; readonly reason?: string }
  | { readonly type: 'resume'; readonly since: string }
  | ({ readonly type: 'presence'; readonly snapshot?: true; readonly cursor?: string } & UpdateView)
  | { readonly type: 'live'; readonly cursor: string }
  | { readonly type: 'keepalive'; readonly cursor: string }
  | { readonly type: 'end'; readonly reason: string };

export type StreamFormat = 'ndjson' | 'sse';

/** SSE event names are the line types; `id:` is the cursor, on the lines that carry one. */
export function frame(format: StreamFormat, line: StreamLine): string {
  const json = JSON.stringify(line);
  if (format === 'ndjson') return `${json}\n`;
  const cursor = 'cursor' in line && line.cursor !== undefined ? `id: ${line.cursor}\n` : '';
  return `event: ${line.type}\n${cursor}data: ${json}\n\n`;
}

/**
 * The framed live (or replayed) line of a logged update, made once per update and shape and shared by
 * every stream that sends it: at 100 streams of an app the parse, the dates and the stringify were done
 * 100 times per update, most of the server's time. What varies between streams of an app is only the
 * format and whether the grant has `presence.status`; the uid is already the app's. Held by the update
 * object itself (the hub hands the same objects to every stream), so it goes when the update does.
 */
const framed = new WeakMap<LoggedUpdate, Array<string | undefined>>();

export function liveFrame(format: StreamFormat, u: LoggedUpdate, grant: GrantedApp): string {
  const slot = (format === 'sse' ? 2 : 0) + (grant.scopes.includes('presence.status') ? 1 : 0);
  let cache = framed.get(u);
  if (cache === undefined) framed.set(u, (cache = []));
  // A row is dated when it was written; every later row was written after it (so its cursor is safe to resume from).
  return (cache[slot] ??= frame(format, { type: 'presence', ...updateView(u, grant), cursor: encodeCursor(u.id, u.createdAt) }));
}

/**
 * The bytes of one log write for every live stream of an app in one format: the hub hands the same
 * array to each stream of the app, grants are per user (not per stream), so every stream that is past
 * the batch's first id sends exactly these bytes. Built by the first stream that sends the batch and
 * reused by the others: one grant check, one concatenation and one UTF-8 encoding per batch instead of
 * one per stream. Held by the array itself, so it goes when the batch does.
 */
export interface LiveBatch {
  readonly bytes: Buffer;
  readonly lines: number;
  /** The same bytes as one HTTP/1.1 chunk (size line, bytes, CRLF), made once for every chunked response. */
  readonly chunk: Buffer;
}

const CRLF = Buffer.from('\r\n', 'latin1');

const batches = new WeakMap<readonly LoggedUpdate[], Array<LiveBatch | undefined>>();

export function liveBatch(format: StreamFormat, logged: readonly LoggedUpdate[], grantOf: (uid: string) => GrantedApp | undefined): LiveBatch {
  const slot = format === 'sse' ? 1 : 0;
  let cache = batches.get(logged);
  if (cache === undefined) batches.set(logged, (cache = []));
  let made = cache[slot];
  if (made === undefined) {
    let out = '';
    let lines = 0;
    for (const u of logged) {
      const grant = grantOf(u.uid);
      if (grant === undefined) continue;
      out += liveFrame(format, u, grant);
      lines++;
    }
    const bytes = Buffer.from(out, 'utf8');
    made = cache[slot] = { bytes, lines, chunk: Buffer.concat([Buffer.from(`${bytes.length.toString(16)}\r\n`, 'latin1'), bytes, CRLF]) };
  }
  return made;
}
