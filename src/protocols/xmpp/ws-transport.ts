import type { WebSocket } from 'ws';
import type { TransportEvents, XmppTransport } from './transport.js';

/** RFC 7395: one complete XML element per WebSocket text frame. */
export class WsTransport implements XmppTransport {
  readonly framing = 'websocket' as const;
  readonly canStartTls = false;
  events: TransportEvents | null = null;
  private closed = false;

  constructor(
    private readonly ws: WebSocket,
    readonly secure: boolean,
    readonly remote: string,
    private readonly closeTimeoutMs: number,
  ) {
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
      if (this.closed) return;
      this.closed = true;
      this.events?.onTransportClosed();
    });
  }

  send(text: string, onWritten?: () => void): void {
    if (this.ws.readyState !== 1) return;
    this.ws.send(text, onWritten ? (err) => { if (!err) onWritten(); } : undefined);
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
    this.ws.terminate();
  }
}
