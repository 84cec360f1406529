import { PresencedError, serverError } from './errors.js';
import type { WebSocketConstructor, WebSocketLike } from './types.js';

/** A frame the server sends without an id: `presence`, `roster`, `subscription`, `closing`. */
export type Push = { readonly type: string } & Record<string, unknown>;

export interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

interface Pending {
  readonly type: string;
  resolve(value: unknown): void;
  reject(e: PresencedError): void;
  timer: ReturnType<typeof setTimeout> | null;
}

const OPEN = 1;
/** Close code for a connection the client gave up on without a handshake (RFC 6455 reserves 1006 for it). */
export const ABNORMAL = 1006;

/**
 * One WebSocket speaking the native protocol: request ids, answers matched to promises, pushes handed
 * on. It knows nothing of authentication or reconnecting; PresencedClient builds those on top, and
 * applications may use it directly for requests the client does not wrap.
 */
export class PresencedConnection {
  /** Pushes from the server, in order. */
  onPush: (push: Push) => void = () => {};
  /** An error frame that answers no request (the server could not read a frame). */
  onStrayError: (e: PresencedError) => void = () => {};
  /** Called once, when the socket is gone (closed by either side, or abandoned). */
  onClose: (info: CloseInfo) => void = () => {};

  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  private readonly closedPromise: Promise<CloseInfo>;
  private resolveClosed!: (info: CloseInfo) => void;

  private constructor(private readonly ws: WebSocketLike) {
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    ws.onmessage = (ev: { data: unknown }) => this.onFrame(ev.data);
    ws.onclose = (ev: { code?: number; reason?: string }) => this.finish({ code: ev.code ?? ABNORMAL, reason: ev.reason ?? '' });
    // An error is always followed by close, which carries the code.
    ws.onerror = ignore;
  }

  /**
   * Opens a socket to `url`. Rejects with `disconnected` if it cannot be opened, or with `timeout` if
   * opening takes longer than `timeoutMs`.
   */
  static open(url: string, WebSocketImpl: WebSocketConstructor, timeoutMs = 10_000): Promise<PresencedConnection> {
    return new Promise((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = new WebSocketImpl(url);
      } catch (e) {
        reject(new PresencedError('disconnected', `cannot open ${url}: ${(e as Error).message}`));
        return;
      }
      const timer = setTimeout(() => {
        detach();
        safeClose(ws);
        reject(new PresencedError('timeout', `no connection to ${url} within ${timeoutMs} ms`));
      }, timeoutMs);
      const detach = () => {
        clearTimeout(timer);
        ws.onopen = ws.onclose = null;
        // Never null: the ws package throws an 'error' event that has no listener.
        ws.onerror = ignore;
      };
      ws.onopen = () => {
        detach();
        resolve(new PresencedConnection(ws));
      };
      ws.onerror = ignore;
      ws.onclose = (ev: { code?: number; reason?: string }) => {
        detach();
        reject(new PresencedError('disconnected', `cannot connect to ${url} (close code ${ev.code ?? ABNORMAL}${ev.reason ? `, ${ev.reason}` : ''})`));
      };
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.ws.readyState === OPEN;
  }

  /** Resolves when the socket is gone. */
  get whenClosed(): Promise<CloseInfo> {
    return this.closedPromise;
  }

  /**
   * Sends a request and resolves with its `result`, or rejects with a PresencedError carrying the
   * server's code, `timeout` after `timeoutMs` (0: never), or `disconnected` if the socket goes first.
   */
  request<T = unknown>(type: string, body: Record<string, unknown> = {}, timeoutMs = 0): Promise<T> {
    if (!this.isOpen) return Promise.reject(new PresencedError('disconnected', `not connected (${type})`, type));
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { type, resolve: resolve as (v: unknown) => void, reject, timer: null };
      if (timeoutMs > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new PresencedError('timeout', `no answer to ${type} within ${timeoutMs} ms`, type));
        }, timeoutMs);
      }
      this.pending.set(id, p);
      try {
        this.ws.send(JSON.stringify({ ...body, id, type }));
      } catch (e) {
        this.settle(id);
        reject(new PresencedError('disconnected', `send failed: ${(e as Error).message}`, type));
      }
    });
  }

  /** Starts a closing handshake; `onClose` follows when the server answers. */
  close(code = 1000, reason = ''): void {
    if (this.closed) return;
    safeClose(this.ws, code, reason);
  }

  /**
   * Gives up on the socket at once, without waiting for a closing handshake that a half-open
   * connection would never complete.
   */
  abandon(reason: string): void {
    if (this.closed) return;
    const ws = this.ws as WebSocketLike & { terminate?: () => void };
    ws.onmessage = ws.onclose = null;
    ws.onerror = ignore;
    if (typeof ws.terminate === 'function') ws.terminate();
    else safeClose(ws, 4000, reason);
    this.finish({ code: ABNORMAL, reason });
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    if (p.timer !== null) clearTimeout(p.timer);
    return p;
  }

  private onFrame(data: unknown): void {
    if (typeof data !== 'string') return; // the protocol is text only
    let msg: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(data);
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return;
      msg = parsed as Record<string, unknown>;
    } catch {
      return;
    }
    if (msg.type === 'result' || msg.type === 'error') {
      const p = typeof msg.id === 'number' ? this.settle(msg.id) : undefined;
      const err = msg.error as { code?: unknown; message?: unknown } | undefined;
      if (!p) {
        // A late answer to a request that timed out is dropped; an error with no id reports a frame
        // the server could not read.
        if (msg.type === 'error' && msg.id === null) this.onStrayError(serverError(err?.code, err?.message));
        return;
      }
      if (msg.type === 'result') p.resolve(msg.result ?? {});
      else p.reject(serverError(err?.code, err?.message, p.type));
      return;
    }
    if (typeof msg.type === 'string') this.onPush(msg as Push);
  }

  private finish(info: CloseInfo): void {
    if (this.closed) return;
    this.closed = true;
    for (const [id, p] of [...this.pending]) {
      this.settle(id);
      p.reject(new PresencedError('disconnected', `connection closed before an answer to ${p.type} (${info.code}${info.reason ? ` ${info.reason}` : ''})`, p.type));
    }
    this.resolveClosed(info);
    this.onClose(info);
  }
}

function safeClose(ws: WebSocketLike, code?: number, reason?: string): void {
  try {
    ws.close(code, reason);
  } catch {
    // already closing, or a code the implementation refuses: the socket is going either way
  }
}

function ignore(): void {}
