/**
 * What a stream needs from the connection under it. TCP (with STARTTLS or direct TLS) and RFC 7395
 * WebSocket framing implement it; the stream logic above is the same for both.
 */
export interface XmppTransport {
  readonly framing: 'tcp' | 'websocket';
  /** TLS is in place (direct TLS, after STARTTLS, or a WebSocket reached over https). */
  readonly secure: boolean;
  readonly canStartTls: boolean;
  readonly remote: string;
  /** Queues text; `onWritten` runs once it has been handed to the kernel (or never, if the socket died). */
  send(text: string, onWritten?: () => void): void;
  /** Upgrades to TLS after `<proceed/>` was queued (TCP only); data read afterwards is already decrypted. */
  startTls(): void;
  /** Flushes what is queued and closes gracefully. */
  end(): void;
  /** Drops the connection at once (dead peer). */
  destroy(): void;
  /**
   * Stops (`hold` true) or resumes reading from the peer for one reason; reading goes on only when no
   * reason holds it. `input`: the stream has more parsed input than it has handled yet; `output`: the
   * peer is not reading what we write (the transport manages this one itself).
   */
  holdInput(reason: InputHold, hold: boolean): void;
}

export type InputHold = 'input' | 'output';

/**
 * Output backpressure. Above `maxBytes` waiting to be written the transport stops reading from the
 * peer, and reads again once the backlog is under half of it; still above after `timeoutMs`, or above
 * HARD_OUTPUT_FACTOR times the limit at any moment, output is dropped and the stream is ended
 * (`onOutputStalled`), so a client that never reads cannot make the server hold its output forever.
 */
export interface OutputLimits {
  readonly maxBytes: number;
  readonly timeoutMs: number;
}

/** Output piling up this many times the limit (presence fan-out to a reader that stopped) ends the stream at once. */
export const HARD_OUTPUT_FACTOR = 4;

/** Tracks the input holds and the output watermarks of one transport; the transport supplies the socket operations. */
export class Backpressure {
  private holds = 0;
  private overTimer: NodeJS.Timeout | null = null;
  /** Output is being dropped: the stream is over its hard limit or stalled past the timeout. */
  stalled = false;

  constructor(
    private readonly limits: OutputLimits | null,
    private readonly setReading: (reading: boolean) => void,
    private readonly onStalled: () => void,
  ) {}

  get holding(): boolean {
    return this.holds !== 0;
  }

  hold(reason: InputHold, on: boolean): void {
    const bit = reason === 'input' ? 1 : 2;
    const before = this.holds;
    this.holds = on ? before | bit : before & ~bit;
    if ((before === 0) !== (this.holds === 0)) this.setReading(this.holds === 0);
  }

  /** Called with the bytes now waiting, after every send and whenever some of it was written. */
  check(waiting: number): void {
    const limits = this.limits;
    if (!limits || this.stalled) return;
    if (waiting > limits.maxBytes * HARD_OUTPUT_FACTOR) {
      this.stall();
    } else if (waiting > limits.maxBytes) {
      if (this.overTimer !== null) return;
      this.hold('output', true);
      this.overTimer = setTimeout(() => this.stall(), limits.timeoutMs);
      this.overTimer.unref();
    } else if (this.overTimer !== null && waiting <= limits.maxBytes / 2) {
      clearTimeout(this.overTimer);
      this.overTimer = null;
      this.hold('output', false);
    }
  }

  private stall(): void {
    if (this.stalled) return;
    this.stalled = true;
    if (this.overTimer !== null) clearTimeout(this.overTimer);
    this.overTimer = null;
    // Not from inside a send: the stream may be in the middle of a presence fan-out.
    setImmediate(this.onStalled);
  }

  dispose(): void {
    if (this.overTimer !== null) clearTimeout(this.overTimer);
    this.overTimer = null;
  }
}

/** The stream side of a transport: what the transport calls. */
export interface TransportEvents {
  onData(chunk: Buffer): void;
  onFrame(text: string): void;
  onTransportClosed(): void;
  /** The peer stopped reading and its output passed the limits: end the stream, drop the socket. */
  onOutputStalled(): void;
}
