import type { StoredBody } from '../webhooks/outbox.js';
import type { GrantedApp } from '../webhooks/presence-source.js';
import type { LoggedUpdate } from '../webhooks/store.js';

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
