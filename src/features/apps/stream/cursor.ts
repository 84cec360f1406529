/**
 * A stream cursor: a place in the apps' log (the outbox row id) and when it was issued, written
 * `<id>.<ms>` in base 36. It is opaque to apps; they hand it back as Last-Event-ID or `?since=`.
 *
 * The time is what makes resuming safe: rows are purged only once older than the stream retention,
 * and every row after a cursor's id was written no earlier than the cursor's time, so a cursor no
 * older than the retention still has every row after it in the log.
 */
export interface Cursor {
  readonly id: number;
  readonly issuedAt: number;
}

export function encodeCursor(id: number, issuedAt: number): string {
  return `${id.toString(36)}.${Math.floor(issuedAt).toString(36)}`;
}

const SHAPE = /^([0-9a-z]{1,11})\.([0-9a-z]{1,11})$/;

/** The cursor, or null when the text is not one (any malformed input: the caller starts over). */
export function parseCursor(text: string | undefined): Cursor | null {
  if (text === undefined) return null;
  const m = SHAPE.exec(text.trim());
  if (m === null) return null;
  const id = parseInt(m[1]!, 36);
  const issuedAt = parseInt(m[2]!, 36);
  if (!Number.isSafeInteger(id) || !Number.isSafeInteger(issuedAt)) return null;
  return { id, issuedAt };
}

export type CursorVerdict = { readonly ok: true; readonly cursor: Cursor } | { readonly ok: false; readonly reason: string };

/**
 * Whether a stream may resume from `text`: well formed, issued within the retention, not from the
 * future (a small clock allowance for a cursor issued by another node), and not beyond the log.
 */
export function judgeCursor(text: string, now: number, retentionMs: number, maxId: number): CursorVerdict {
  const c = parseCursor(text);
  if (c === null) return { ok: false, reason: 'malformed cursor' };
  if (c.issuedAt > now + FUTURE_ALLOWANCE_MS || c.id > maxId) return { ok: false, reason: 'unknown cursor' };
  if (c.issuedAt < now - retentionMs) return { ok: false, reason: 'cursor expired' };
  return { ok: true, cursor: c };
}

const FUTURE_ALLOWANCE_MS = 5_000;
