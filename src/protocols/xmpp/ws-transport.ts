import type { WebSocket } from 'ws';
import { Backpressure, type InputHold, type OutputLimits, type TransportEvents, type XmppTransport } from './transport.js';

/** RFC 7395: one complete XML element per WebSocket text frame. */
export class WsTransport implements XmppTransport {
  readonly framing = 'websocket' as const;
  readonly canStartTls = false;
  events: TransportEvents | null = null;
  private closed = false;
  private readonly pressure: Backpressure;
  private readonly limited: boolean;

  constructor(
    private readonly ws: WebSocket,
    readonly secure: boolean,
    readonly remote: string,
    private readonly closeTimeoutMs: number,
    output: OutputLimits | null = null,
  ) {
    this.limited = output !== null;
    this.pressure = new Backpressure(
      output,
      (reading) => (reading ? ws.resume() : ws.pause()),
      () => this.events?.onOutputStalled(),
    );
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) {
        this.events?.onFrame('<binary-frame/>');
        return;
      }
      this.events?.onFrame(data.toString('utf8'));
    });
    ws.on('error', () => {
      // 'close' follows.
    });
    ws.on('close', () => {
      this.pressure.dispose();
      if (this.closed) return;
      this.closed = true;
      this.events?.onTransportClosed();
    });
  }

  send(text: string, onWritten?: () => void): void {
    if (this.ws.readyState !== 1 || this.pressure.stalled) return;
    if (!this.limited) {
      this.ws.send(text, onWritten ? (err) => { if (!err) onWritten(); } : undefined);
      return;
    }
    // Each write completing may bring the backlog under the low-water mark (ws has no drain event).
    this.ws.send(text, (err) => {
      if (!err) onWritten?.();
      this.pressure.check(this.ws.bufferedAmount);
    });
    this.pressure.check(this.ws.bufferedAmount);
  }

  holdInput(reason: InputHold, hold: boolean): void {
    if (this.ws.readyState === 1) this.pressure.hold(reason, hold);
  }

  startTls(): void {
    // Not part of RFC 7395: TLS is the web server's business.
  }

  end(): void {
    if (this.ws.readyState === 0 || this.ws.readyState === 1) this.ws.close(1000);
    // A peer that never answers our close must not hold the socket forever.
    setTimeout(() => this.ws.terminate(), this.closeTimeoutMs).unref();
  }

  destroy(): void {
    this.pressure.dispose();
    this.ws.terminate();
  }
}
