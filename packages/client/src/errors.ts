/** Codes the server sends in `error` frames (docs/native-protocol.md, "Limits and errors"). */
export type ServerErrorCode =
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
  | 'unavailable'
  | 'internal';

/**
 * Codes the client raises itself: `disconnected` (the connection went away before an answer, or the
 * client is closed), `timeout` (no answer in time).
 */
export type ClientErrorCode = 'disconnected' | 'timeout';

export type ErrorCode = ServerErrorCode | ClientErrorCode;

const SERVER_CODES: ReadonlySet<string> = new Set<ServerErrorCode>([
  'bad-request',
  'bad-jid',
  'unknown-type',
  'not-authenticated',
  'already-authenticated',
  'auth-failed',
  'not-found',
  'not-allowed',
  'conflict',
  'rate-limited',
  'unsupported',
  'unavailable',
  'internal',
]);

export class PresencedError extends Error {
  override readonly name = 'PresencedError';
  constructor(
    readonly code: ErrorCode,
    message: string,
    /** The request type that failed, when the error answers a request. */
    readonly requestType?: string,
  ) {
    super(message);
  }

  /** True for codes that came from the server rather than from the client itself. */
  get fromServer(): boolean {
    return SERVER_CODES.has(this.code);
  }
}

export function isPresencedError(e: unknown): e is PresencedError {
  return e instanceof PresencedError;
}

/**
 * A server may add codes before this client knows them; they are kept as they are (the union above
 * documents the known ones, the string still reaches the application).
 */
export function serverError(code: unknown, message: unknown, requestType?: string): PresencedError {
  const c = typeof code === 'string' && code !== '' ? code : 'internal';
  return new PresencedError(c as ErrorCode, typeof message === 'string' ? message : c, requestType);
}
