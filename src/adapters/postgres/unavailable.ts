import pg from 'pg';
import { PresenceError } from '../../core/errors.js';

/**
 * The database cannot be reached: PostgreSQL is down, restarting, refusing connections or cut off.
 * Requests get the 'unavailable' code (HTTP 503), which says "try again", never the cause: addresses
 * and server messages are for the operator's log (`cause`), not for clients.
 */
export class DatabaseUnavailable extends PresenceError {
  constructor(override readonly cause: unknown) {
    super('unavailable', 'the database is unavailable; try again later');
    this.name = 'DatabaseUnavailable';
  }
}

/**
 * SQLSTATE classes and codes that mean "no server to talk to" rather than "this statement is wrong":
 * 08 connection exception, 53 insufficient resources (too many connections, disk full), 57P01-57P05
 * the server shutting down, crashing or still starting, 58 system error (I/O).
 */
function unavailableState(code: string): boolean {
  return code.startsWith('08') || code.startsWith('53') || code.startsWith('58') || /^57P0[1-5]$/.test(code);
}

/** Messages of `pg` and `pg-pool` for a connection that failed or died (they carry no code). */
const CONNECTION_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'timeout expired',
  'Client has encountered a connection error',
  'Query read timeout',
];

/** Whether `err`, thrown by `pg`, says the database cannot be reached (see DatabaseUnavailable). */
export function isUnavailable(err: unknown): boolean {
  if (err instanceof DatabaseUnavailable) return true;
  if (err instanceof pg.DatabaseError) return typeof err.code === 'string' && unavailableState(err.code);
  if (!(err instanceof Error)) return false;
  // Socket errors: ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH, ENOTFOUND, EAI_AGAIN, EPIPE...
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === 'string' && /^E[A-Z_]+$/.test(code) && (err as NodeJS.ErrnoException).syscall !== undefined) return true;
  if (CONNECTION_MESSAGES.some((m) => err.message.startsWith(m))) return true;
  // An AggregateError of the socket errors of every address tried (Node's happy eyeballs).
  return err instanceof AggregateError && err.errors.length > 0 && err.errors.every(isUnavailable);
}

/** `err` as DatabaseUnavailable when it means that, else unchanged. */
export function translateUnavailable(err: unknown): unknown {
  return !(err instanceof DatabaseUnavailable) && isUnavailable(err) ? new DatabaseUnavailable(err) : err;
}

/** A short account of why, for logs and for the start-up error ("connect ECONNREFUSED 127.0.0.1:5432"). */
export function unavailableReason(err: unknown): string {
  const cause = err instanceof DatabaseUnavailable ? err.cause : err;
  if (cause instanceof AggregateError && cause.errors.length > 0) return cause.errors.map(unavailableReason).join('; ');
  return cause instanceof Error ? cause.message : String(cause);
}

/**
 * SQLSTATEs PostgreSQL answers for a NUL character (U+0000) in a text parameter (22021, invalid byte
 * sequence) or in JSON (22P05, unsupported Unicode escape). It stores no NUL in text, where SQLite
 * does: such input is the client's error (400 "bad-request"), never an internal fault.
 */
const NUL_STATES = new Set(['22021', '22P05']);

/** `err` as a bad-request when PostgreSQL refused a NUL character in what it was given, else unchanged. */
export function translateNul(err: unknown): unknown {
  if (err instanceof pg.DatabaseError && NUL_STATES.has(err.code ?? '')) {
    return new PresenceError('bad-request', 'text containing a NUL character (U+0000) is not accepted');
  }
  return err;
}
