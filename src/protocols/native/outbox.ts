import type { Duplex } from 'node:stream';

/**
 * Outgoing text frames bypass the `ws` sender. A presence change goes to many recipients with the
 * same bytes, so the frame (header and payload, unmasked as server frames are) is built once and the
 * same Buffer is queued on every recipient's socket. Frames queued during one turn of the event loop
 * leave in one write per socket when the turn's I/O callbacks are done: a busy recipient costs one
 * syscall per turn, and a lone update still leaves in the same turn. Going through `ws.send` instead
 * cost several objects per frame and recipient (frame list, writable-buffer entries, write requests),
 * which made young-generation GC the main source of delivery latency.
 *
 * Control frames (ping, close) still go through `ws`, written at once; a close is preceded by a
 * flush of the socket's queue so nothing queued is lost or sent after it.
 */

/** RFC 6455 §5.2 header of an unfragmented, unmasked text frame of `length` payload bytes. */
function headerLength(length: number): number {
  return length < 126 ? 2 : length < 65536 ? 4 : 10;
}

/** Encodes `text` as one complete WebSocket text frame. */
export function textFrame(text: string): Buffer {
  const length = Buffer.byteLength(text);
  const h = headerLength(length);
  const buf = Buffer.allocUnsafe(h + length);
  buf[0] = 0x81; // FIN + text opcode
  if (h === 2) {
    buf[1] = length;
  } else if (h === 4) {
    buf[1] = 126;
    buf.writeUInt16BE(length, 2);
  } else {
    buf[1] = 127;
    buf.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    buf.writeUInt32BE(length >>> 0, 6);
  }
  buf.write(text, h, 'utf8');
  return buf;
}

/** Writes the frames queued so far now rather than at the end of the turn (before a turn of login work). */
export function flushQueuedFrames(): void {
  if (flushScheduled) flushAll();
}

/** A socket's queue of frames waiting for the end of the turn. */
export class Outbox {
  private pending: Buffer | Buffer[] | null = null;

  /** `ws` is asked at flush time: once a close frame went out, nothing more may follow it. */
  constructor(
    private readonly ws: { readonly readyState: number },
    private readonly socket: Duplex,
  ) {}

  push(frame: Buffer): void {
    const p = this.pending;
    if (p === null) {
      this.pending = frame;
      scheduled.push(this);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flushAll);
      }
    } else if (Array.isArray(p)) {
      p.push(frame);
    } else {
      this.pending = [p, frame];
    }
  }

  /** Writes whatever is queued now (also called before a close frame). */
  flush(): void {
    const p = this.pending;
    if (p === null) return;
    this.pending = null;
    if (this.ws.readyState !== 1 || !this.socket.writable) return;
    this.socket.write(Array.isArray(p) ? Buffer.concat(p) : p);
  }

  /** Drops the queue: the socket is gone. */
  discard(): void {
    this.pending = null;
  }
}

let scheduled: Outbox[] = [];
let flushScheduled = false;

function flushAll(): void {
  flushScheduled = false;
  const list = scheduled;
  scheduled = [];
  for (const o of list) o.flush();
}
