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
}

/** The stream side of a transport: what the transport calls. */
export interface TransportEvents {
  onData(chunk: Buffer): void;
  onFrame(text: string): void;
  onTransportClosed(): void;
}
