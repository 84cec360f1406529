import type { ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import type { AppLog } from '../log-hub.js';
import type { AppRecord } from '../repository.js';
import type { GrantedAudience } from '../webhooks/presence-source.js';
import type { LoggedUpdate, WebhookStore } from '../webhooks/store.js';
import { encodeCursor, judgeCursor } from './cursor.js';
import { frame, liveBatch, liveFrame, updateView, type LiveBatch, type StreamFormat, type StreamLine } from './lines.js';

/** Reasons an app reads in the `end` line (docs/apps.md). */
export const END_REASONS = {
  lag: 'excessive client-side lag',
  shutdown: 'server shutting down',
  appDeleted: 'app deleted',
  secretChanged: 'client secret changed',
  failed: 'internal error',
} as const;

/** The SSE `retry:` hint: how long an EventSource waits before reconnecting. */
export const SSE_RETRY_MS = 3_000;
/** Rows read from the log per query while replaying. */
const PAGE = 500;
/**
 * A keep-alive's cursor is dated this much in the past: a row written a moment ago may not have
 * reached this stream yet, and a resume from the cursor must still find it in the log.
 */
const KEEPALIVE_CURSOR_SLACK_MS = 1_000;
/** How long an ended stream's last lines may take to leave before the connection is cut. */
const END_GRACE_MS = 2_000;

export interface StreamOptions {
  readonly retentionMs: number;
  readonly keepaliveMs: number;
  readonly maxLagBytes: number;
}

export interface StreamDeps {
  readonly store: Pick<WebhookStore, 'newestOfApp' | 'since' | 'maxId'>;
  readonly audience: Pick<GrantedAudience, 'grantOf'>;
  readonly hub: AppLog;
  readonly apps: { get(id: string): Promise<AppRecord | undefined> };
  readonly log: Logger;
  readonly opts: StreamOptions;
  /** Counts lines written, by type (`n` of them). */
  readonly countLine: (type: StreamLine['type'], n: number) => void;
  readonly countLagCut: () => void;
  readonly now?: () => number;
}

/**
 * The open streams of this server. Shutdown ends each with a reason line (and cuts what does not
 * finish in a moment), so a stream never keeps the server from closing.
 */
export class StreamRegistry {
  readonly #open = new Set<AppStream>();
  #closing = false;

  constructor(private readonly deps: StreamDeps) {}

  /** Streams whose connection is still open (an ended stream counts until its socket closes). */
  get size(): number {
    return this.#open.size;
  }

  /** Bytes written to the open streams and not yet taken by their consumers' sockets. */
  get bufferedBytes(): number {
    let n = 0;
    for (const s of this.#open) n += s.buffered;
    return n;
  }

  /** Starts a stream on a response whose headers are not sent yet; `since` is Last-Event-ID or ?since=. */
  open(app: AppRecord, res: ServerResponse, format: StreamFormat, since: string | undefined): void {
    const s = new AppStream(this.deps, app, res, format, () => this.#open.delete(s));
    this.#open.add(s);
    if (this.#closing) {
      s.end(END_REASONS.shutdown);
      return;
    }
    void s.start(since);
  }

  /** Ends every stream of the app (deleted, or its secret rotated: checked at each keep-alive tick too). */
  endApp(appId: string, reason: string): void {
    for (const s of this.#open) if (s.appId === appId) s.end(reason);
  }

  /**
   * The app was deleted or its client secret changed (here or on another node): its streams opened
   * with a secret that no longer holds end now rather than at their next keep-alive tick.
   */
  async recheckApp(appId: string): Promise<void> {
    const streams = [...this.#open].filter((s) => s.appId === appId);
    if (streams.length === 0) return;
    const current = await this.deps.apps.get(appId);
    for (const s of streams) s.recheck(current);
  }

  /** Ends every stream with `reason` and resolves once their connections closed (cut after a short grace). */
  async endAll(reason: string): Promise<void> {
    this.#closing = true;
    const all = [...this.#open];
    for (const s of all) s.end(reason);
    await Promise.all(all.map((s) => s.closed));
  }
}

type Phase = 'catching-up' | 'live' | 'ended';

/**
 * One open stream. It follows the app's log: subscribe to the hub first, then read the snapshot or
 * the missed rows, then send what the hub gave meanwhile that the read did not cover (by log id),
 * then live. Before any line of a user goes out, the grant is checked: a revoked user is never sent.
 */
class AppStream {
  readonly appId: string;
  readonly closed: Promise<void>;
  #phase: Phase = 'catching-up';
  #pending: LoggedUpdate[] = [];
  #pendingBytes = 0;
  /** The log position sent up to (rows of users not granted are passed over, not sent). */
  #lastId = 0;
  #wrote = false;
  #timer: NodeJS.Timeout | null = null;
  #unsubscribe: (() => void) | null = null;
  readonly #now: () => number;

  constructor(
    private readonly deps: StreamDeps,
    private readonly app: AppRecord,
    private readonly res: ServerResponse,
    private readonly format: StreamFormat,
    onClosed: () => void,
  ) {
    this.appId = app.id;
    this.#now = deps.now ?? Date.now;
    this.closed = new Promise<void>((resolve) =>
      res.once('close', () => {
        this.#stop();
        onClosed();
        resolve();
      }),
    );
    res.on('error', () => undefined);
    res.writeHead(200, {
      'content-type': format === 'sse' ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      // Reverse proxies (nginx) would otherwise hold lines back in their buffers.
      'x-accel-buffering': 'no',
    });
    if (format === 'sse') res.write(`retry: ${SSE_RETRY_MS}\n\n`);
    res.flushHeaders();
  }

  get buffered(): number {
    return this.res.writableLength;
  }

  async start(since: string | undefined): Promise<void> {
    const { hub, opts } = this.deps;
    this.#timer = setInterval(() => void this.#tick(), opts.keepaliveMs);
    this.#timer.unref();
    try {
      // Following first: whatever is logged from now on comes, and the catch-up below reads at least
      // as far as the follow began, so nothing falls between them.
      const unsubscribe = await hub.follow(this.appId, (logged) => this.#onLogged(logged));
      // Ended (shutdown, a cut) while the follow began.
      if ((this.#phase as Phase) === 'ended') {
        unsubscribe();
        return;
      }
      this.#unsubscribe = unsubscribe;
      const from = await this.#catchUp(since);
      if (this.#phase === 'ended') return;
      this.#write({ type: 'live', cursor: from });
      const pending = this.#pending;
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#phase = 'live';
      this.#sendLive(pending);
    } catch (err) {
      this.deps.log.error({ err, appId: this.appId }, 'app stream failed');
      this.end(END_REASONS.failed);
    }
  }

  /** Writes the snapshot or the replay; returns the cursor they bring the app to. */
  async #catchUp(since: string | undefined): Promise<string> {
    const { store, opts } = this.deps;
    let reason: string | null = null;
    if (since !== undefined) {
      const verdict = judgeCursor(since, this.#now(), opts.retentionMs, await store.maxId());
      if (verdict.ok) {
        this.#write({ type: 'resume', since });
        let after = verdict.cursor.id;
        let readAt = verdict.cursor.issuedAt;
        for (;;) {
          readAt = this.#now();
          const page = await store.since(this.appId, after, PAGE);
          for (const u of page) {
            if (this.#phase === 'ended') return '';
            this.#sendUpdate(u, false);
            after = u.id;
            if (this.buffered > this.res.writableHighWaterMark) await this.#drained();
          }
          if (page.length < PAGE) break;
        }
        // Rows after `after` not read yet were written after the last read began.
        this.#lastId = after;
        return encodeCursor(after, readAt);
      }
      reason = verdict.reason;
    }
    const readAt = this.#now();
    const { cursor, users } = await store.newestOfApp(this.appId);
    const granted = users.filter((u) => this.deps.audience.grantOf(this.appId, u.uid) !== undefined);
    this.#write({ type: 'snapshot', users: granted.length, fresh: reason !== null, ...(reason !== null ? { reason } : {}) });
    for (const u of granted) {
      if (this.#phase === 'ended') return '';
      this.#sendUpdate(u, true);
      if (this.buffered > this.res.writableHighWaterMark) await this.#drained();
    }
    this.#lastId = cursor;
    return encodeCursor(cursor, readAt);
  }

  #onLogged(logged: readonly LoggedUpdate[]): void {
    if (this.#phase === 'live') return this.#sendLive(logged);
    if (this.#phase === 'ended') return;
    // Held until the snapshot or replay is out; bounded like the socket's buffer.
    for (const u of logged) {
      this.#pending.push(u);
      this.#pendingBytes += u.body.length + u.uid.length + 128;
    }
    if (this.#pendingBytes > this.deps.opts.maxLagBytes) this.#cutForLag();
  }

  /**
   * The updates of one log write go out as one write to the socket: a write per line was a syscall
   * (and a chunk header) per line, per stream.
   */
  #sendLive(logged: readonly LoggedUpdate[]): void {
    if (this.#phase !== 'live' || logged.length === 0) return;
    if (logged[0]!.id > this.#lastId) {
      // The usual case: nothing of this write was sent yet, so the bytes are those of every stream of the app.
      this.#lastId = logged[logged.length - 1]!.id;
      const batch = liveBatch(this.format, logged, (uid) => this.deps.audience.grantOf(this.appId, uid));
      if (batch.lines > 0) this.#writeShared(batch);
      return;
    }
    let out = '';
    let n = 0;
    for (const u of logged) {
      // Already covered by the snapshot or replay.
      if (u.id <= this.#lastId) continue;
      this.#lastId = u.id;
      const grant = this.deps.audience.grantOf(this.appId, u.uid);
      if (grant === undefined) continue;
      out += liveFrame(this.format, u, grant);
      n++;
    }
    if (n > 0) this.#writeFramed(out, 'presence', n);
  }

  #sendUpdate(u: LoggedUpdate, snapshot: boolean): void {
    const grant = this.deps.audience.grantOf(this.appId, u.uid);
    if (grant === undefined) return;
    if (!snapshot) return this.#writeFramed(liveFrame(this.format, u, grant), 'presence', 1);
    this.#write({ type: 'presence', snapshot: true, ...updateView(u, grant) });
  }

  #write(line: StreamLine): void {
    this.#writeFramed(frame(this.format, line), line.type, 1);
  }

  #writeFramed(text: string | Buffer, type: StreamLine['type'], lines: number): void {
    if (this.#phase === 'ended' || this.res.destroyed) return;
    this.res.write(text);
    this.#wrote = true;
    this.deps.countLine(type, lines);
    if (this.buffered > this.deps.opts.maxLagBytes) this.#cutForLag();
  }

  /**
   * A live batch, the same bytes for every stream of the app: on a chunked response (HTTP/1.1, the
   * usual case) the chunk made once for all goes straight to the socket, in order after whatever the
   * response wrote before (both append to the socket's queue; the response holds bytes of its own
   * only while it does not own the socket yet, and then this waits its turn through it). The
   * response's own write would frame it again for each stream, and cork the socket until the next
   * tick: the lag check just after would then count the whole batch as unread even when the kernel
   * takes it at once, and a fast consumer could be cut for one large write.
   */
  #writeShared(batch: LiveBatch): void {
    const socket = this.res.socket;
    if (this.#phase === 'ended' || this.res.destroyed || socket === null || !this.res.chunkedEncoding || this.res.writableLength > socket.writableLength) {
      return this.#writeFramed(batch.bytes, 'presence', batch.lines);
    }
    socket.write(batch.chunk);
    this.#wrote = true;
    this.deps.countLine('presence', batch.lines);
    if (this.buffered > this.deps.opts.maxLagBytes) this.#cutForLag();
  }

  /** Waits until the consumer took what was written; one that takes nothing for two keep-alive periods is cut. */
  #drained(): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.res.off('drain', done);
        this.res.off('close', done);
        resolve();
      };
      const t = setTimeout(() => {
        this.#cutForLag();
        done();
      }, 2 * this.deps.opts.keepaliveMs);
      this.res.once('drain', done);
      this.res.once('close', done);
    });
  }

  async #tick(): Promise<void> {
    if (this.#phase === 'ended') return;
    if (this.#phase === 'live' && !this.#wrote) {
      this.#write({ type: 'keepalive', cursor: encodeCursor(this.#lastId, this.#now() - KEEPALIVE_CURSOR_SLACK_MS) });
    }
    this.#wrote = false;
    // The app may have been deleted, or its secret rotated (a leaked secret must not keep a stream).
    try {
      this.recheck(await this.deps.apps.get(this.appId));
    } catch (err) {
      this.deps.log.warn({ err, appId: this.appId }, 'checking a streaming app failed');
    }
  }

  /** Ends the stream if its app is gone or its client secret is not the one it was opened with. */
  recheck(current: AppRecord | undefined): void {
    if (current === undefined) this.end(END_REASONS.appDeleted);
    else if (current.clientSecretHash !== this.app.clientSecretHash) this.end(END_REASONS.secretChanged);
  }

  #cutForLag(): void {
    if (this.#phase === 'ended') return;
    this.deps.countLagCut();
    this.deps.log.info({ appId: this.appId, buffered: this.buffered }, 'app stream cut: its consumer fell too far behind');
    this.end(END_REASONS.lag);
  }

  /**
   * Ends the stream with a reason line. What is already buffered may still reach a slow consumer for
   * a moment; a stalled one is cut, so its buffer is released.
   */
  end(reason: string): void {
    if (this.#phase === 'ended') return;
    this.#stop();
    // Written past the lag check: it is the last line, and the buffer stays bounded by one line.
    if (!this.res.destroyed) {
      this.res.write(frame(this.format, { type: 'end', reason }));
      this.deps.countLine('end', 1);
    }
    this.res.end();
    const t = setTimeout(() => this.res.destroy(), END_GRACE_MS);
    t.unref();
    void this.closed.then(() => clearTimeout(t));
  }

  #stop(): void {
    this.#phase = 'ended';
    this.#pending = [];
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }
}
