import type { Socket } from 'node:net';
import { TLSSocket, type SecureContext } from 'node:tls';
import { Backpressure, type InputHold, type OutputLimits, type TransportEvents, type XmppTransport } from './transport.js';

/** Transports with queued text; one immediate per turn flushes them all (not one per connection). */
let pending: TcpTransport[] = [];
let spare: TcpTransport[] = [];
let flushScheduled = false;

function flushAll(): void {
  flushScheduled = false;
  // Two lists swapped each turn: a flush may queue more (a stream ending), which goes to the next turn.
  const list = pending;
  pending = spare;
  try {
    for (const t of list) t.flush();
  } finally {
    list.length = 0;
    spare = list;
  }
}

/** Writes the text queued so far now rather than at the end of the turn (before a turn of login work). */
export function flushQueuedWrites(): void {
  if (flushScheduled) flushAll();
}

/**
 * An XMPP stream over TCP. Text queued during one turn of the event loop leaves in one write, as in the
 * native front door: a burst of presence to one client costs one syscall.
 */
export class TcpTransport implements XmppTransport {
  readonly framing = 'tcp' as const;
  secure: boolean;
  private socket: Socket;
  /** Text waiting for the end of the turn; a string grown by concatenation costs no array per turn. */
  private queued = '';
  private callbacks: Array<() => void> | null = null;
  private scheduled = false;
  private closed = false;
  events: TransportEvents | null = null;
  private readonly pressure: Backpressure;

  constructor(
    socket: Socket,
    private readonly tlsContext: SecureContext | null,
    secure: boolean,
    private readonly closeTimeoutMs: number,
    output: OutputLimits | null = null,
  ) {
    this.socket = socket;
    this.secure = secure;
    this.pressure = new Backpressure(
      output,
      (reading) => (reading ? this.socket.resume() : this.socket.pause()),
      () => this.events?.onOutputStalled(),
    );
    this.listen(socket);
  }

  /** Text not yet written to the kernel: ours for this turn plus the socket's buffer. */
  private get waiting(): number {
    return this.queued.length + this.socket.writableLength;
  }

  holdInput(reason: InputHold, hold: boolean): void {
    this.pressure.hold(reason, hold);
  }

  get canStartTls(): boolean {
    return !this.secure && this.tlsContext !== null;
  }

  get remote(): string {
    return `${this.socket.remoteAddress ?? '?'}:${this.socket.remotePort ?? '?'}`;
  }

  private listen(socket: Socket): void {
    socket.on('data', (d: Buffer) => this.events?.onData(d));
    socket.on('error', () => {
      // 'close' follows.
    });
    socket.on('drain', () => this.pressure.check(this.waiting));
    socket.on('close', () => {
      this.pressure.dispose();
      if (this.socket !== socket || this.closed) return;
      this.closed = true;
      this.events?.onTransportClosed();
    });
  }

  send(text: string, onWritten?: () => void): void {
    if (this.closed || this.pressure.stalled) return;
    this.queued = this.queued === '' ? text : this.queued + text;
    this.pressure.check(this.waiting);
    if (onWritten) (this.callbacks ??= []).push(onWritten);
    if (!this.scheduled) {
      this.scheduled = true;
      pending.push(this);
      if (!flushScheduled) {
        flushScheduled = true;
        setImmediate(flushAll);
      }
    }
  }

  /** @internal Writes what is queued (at the end of the turn, or before TLS starts or the stream ends). */
  flush(): void {
    this.scheduled = false;
    const text = this.queued;
    if (text === '') return;
    const cbs = this.callbacks;
    this.queued = '';
    this.callbacks = null;
    if (this.closed || !this.socket.writable) return;
    if (cbs === null) {
      this.socket.write(text);
      return;
    }
    this.socket.write(text, (err) => {
      if (!err) for (const cb of cbs) cb();
    });
  }

  startTls(): void {
    if (!this.tlsContext) return;
    this.flush();
    const plain = this.socket;
    plain.removeAllListeners('data');
    const secure = new TLSSocket(plain, { isServer: true, secureContext: this.tlsContext });
    this.socket = secure;
    this.secure = true;
    this.listen(secure);
    if (this.pressure.holding) secure.pause();
  }

  end(): void {
    this.flush();
    if (!this.closed) this.socket.end();
    // A peer that never answers our close must not hold the socket forever.
    setTimeout(() => this.socket.destroy(), this.closeTimeoutMs).unref();
  }

  destroy(): void {
    this.queued = '';
    this.callbacks = null;
    this.pressure.dispose();
    this.socket.destroy();
  }
}
