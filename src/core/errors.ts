/**
 * Errors the core raises carry a stable machine-readable code. Every front door maps the code onto
 * its own wire form (a JSON error, an XMPP stanza error, an HTTP status), so the code list is part of
 * the public contract: add codes, never rename them.
 */
export type ErrorCode =
  | 'bad-request'
  | 'bad-jid'
  | 'unknown-type'
  | 'not-authenticated'
  | 'already-authenticated'
  | 'auth-failed'
  | 'not-found'
  | 'not-allowed'
  | 'conflict'
  | 'rate-limited'
  | 'unsupported'
  /** A service the request needs (the database, the cluster's Redis) cannot be reached right now; the same request may succeed later. */
  | 'unavailable'
  | 'internal';

export class PresenceError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = 'PresenceError';
    this.code = code;
  }
}

export function isPresenceError(e: unknown): e is PresenceError {
  return e instanceof PresenceError;
}
