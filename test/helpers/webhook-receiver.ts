import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';
import type { AppStatus } from '../../src/features/apps/webhooks/presence-source.js';

export interface Received {
  readonly at: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly payload: unknown;
  /** What the receiver answered, and when it finished answering. */
  answered: number;
  answeredAt: number;
}

/**
 * A webhook receiver that verifies every request with the standardwebhooks package (a request that
 * fails verification fails the test) and answers what `answer` says.
 */
export class Receiver {
  readonly requests: Received[] = [];
  readonly bad: string[] = [];
  answer: () => { status: number; headers?: Record<string, string>; body?: string } = () => ({ status: 204 });
  secret = '';
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
        const a = this.answer();
        const r: Received = { at, headers: req.headers, body, payload, answered: a.status, answeredAt: 0 };
        this.requests.push(r);
        res.writeHead(a.status, a.headers ?? {});
        res.end(a.body ?? '', () => {
          r.answeredAt = Date.now();
          for (const w of this.#waiters.splice(0)) w();
        });
      });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.#server.listen(0, '127.0.0.1', r));
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}/hook`;
  }

  /** Resolves once the received requests satisfy `check` (checked at each request answered). */
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
    return this.requests.filter((r) => r.answered < 300).flatMap((r) => r.payload as Array<{ uid: string; status: AppStatus; seq: number }>);
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

