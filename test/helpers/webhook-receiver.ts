import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { AppStatus } from '../../src/features/apps/webhooks/presence-source.js';

export interface Received {
  readonly at: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly payload: unknown;
  /** What the receiver answered (0 while it holds the request), and when it finished answering. */
  answered: number;
  answeredAt: number;
  /** The sender's connection closed before the receiver answered (a held request whose sender died). */
  aborted?: boolean;
}

/**
 * A webhook receiver that verifies every request with the standardwebhooks package (a request that
 * fails verification fails the test) and answers what `answer` says.
 */
export class Receiver {
  readonly requests: Received[] = [];
  readonly bad: string[] = [];
  answer: () => { status: number; headers?: Record<string, string>; body?: string } = () => ({ status: 204 });
  /**
   * While set, requests are recorded (answered 0) and left unanswered until release(): a receiver slow
   * to answer, so that the sender has the delivery in flight.
   */
  holding = false;
  secret = '';
  readonly #held: Array<() => void> = [];
  #server: Server;
  #waiters: Array<() => void> = [];

  constructor() {
    this.#server = createServer((req, res) => {
      const at = Date.now();
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let payload: unknown = null;
        try {
          payload = new Webhook(this.secret).verify(body, req.headers as Record<string, string>);
        } catch (e) {
          this.bad.push(`${(e as Error).message}: ${body.slice(0, 100)}`);
        }
        const r: Received = { at, headers: req.headers, body, payload, answered: 0, answeredAt: 0 };
        const respond = (): void => {
          if (r.aborted === true) return;
          const a = this.answer();
          r.answered = a.status;
          res.writeHead(a.status, a.headers ?? {});
          res.end(a.body ?? '', () => {
            r.answeredAt = Date.now();
            this.#wake();
          });
        };
        if (!this.holding) {
          respond();
          this.requests.push(r);
          return;
        }
        this.requests.push(r);
        res.once('close', () => {
          if (r.answered === 0) {
            r.aborted = true;
            this.#wake();
          }
        });
        this.#held.push(respond);
        this.#wake();
      });
    });
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  /** Stops holding: the requests held so far are answered now (those whose sender is gone are not). */
  release(): void {
    this.holding = false;
    for (const respond of this.#held.splice(0)) respond();
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hook`;
  }

  /** Resolves once the received requests satisfy `check` (checked at each request answered, held or aborted). */
  async until(check: (rs: readonly Received[]) => boolean, what: string, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check(this.requests)) {
      if (Date.now() > deadline) throw new Error(`receiver: timed out waiting for ${what} (${this.requests.length} requests)`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, Math.max(0, deadline - Date.now()) + 1).unref();
      });
    }
  }

  /** Updates in the order they arrived in requests answered 2xx (extended format). */
  delivered(): Array<{ uid: string; status: AppStatus; seq: number }> {
    return this.requests.filter((r) => r.answered >= 200 && r.answered < 300).flatMap((r) => r.payload as Array<{ uid: string; status: AppStatus; seq: number }>);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((r) => this.#server.close(() => r()));
  }
}

/** Retries a check until it passes: waits for an effect that follows asynchronously (no fixed sleep). */
export async function eventually(check: () => Promise<void>, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await check();
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

