/**
 * The storm half of bench/storm-bench.ts, run as a child process of it (IPC): N clients that all come
 * online at once by one way in, each timed from the go to the moment the server took it online. A
 * process of its own, started at a lower priority than the bench, so that the thousands of logins it
 * drives do not delay the bench's reading of the already-online sessions' deliveries (the latency it
 * measures). Protocol: `run` (prepare) → `ready`; `go` → `progress`… → `done`; `close` → `closed`.
 */
import { performance } from 'node:perf_hooks';
import { WebSocket } from 'ws';
import { issueToken } from '../../src/engine/tokens.js';
import { MechanismNotOffered, XmppWire, type Mechanism } from './xmpp-wire.js';

export type Way = 'scram-sha-256' | 'scram-sha-1' | 'plain' | 'plain-warm' | 'native-password' | 'native-token' | 'register';
export const WAYS: readonly Way[] = ['scram-sha-256', 'scram-sha-1', 'plain', 'plain-warm', 'native-password', 'native-token', 'register'];

export interface StormRun {
  readonly cmd: 'run';
  readonly way: Way;
  readonly xmppPort: number;
  /** presenced's HTTP port (native protocol), 0 for the peers. */
  readonly httpPort: number;
  readonly domain: string;
  /** Localparts of the storm's accounts (to be registered, for `register`). */
  readonly users: readonly string[];
  readonly password: string;
  /** For native-token: the server's token secret and the accounts' generation (they share a password hash). */
  readonly tokenSecret?: string;
  readonly accountGeneration?: string;
  readonly stallMs: number;
}

export interface StormDone {
  readonly type: 'done';
  /** Epoch ms of the go and of the last client online (or given up). */
  readonly startedAt: number;
  readonly finishedAt: number;
  readonly online: number;
  readonly failed: number;
  /** Clients refused because the server does not offer the way's mechanism. */
  readonly notOffered: number;
  /** Milliseconds from the go to online, per client online, ascending. */
  readonly times: number[];
  readonly errors: string[];
  readonly stalled: boolean;
}

export type StormMessage = { type: 'ready' } | { type: 'progress'; online: number; failed: number } | StormDone | { type: 'closed' };

interface Held {
  close(): Promise<void>;
}

const MECHANISM: Partial<Record<Way, Mechanism>> = { 'scram-sha-256': 'SCRAM-SHA-256', 'scram-sha-1': 'SCRAM-SHA-1', plain: 'PLAIN', 'plain-warm': 'PLAIN', register: 'PLAIN' };

async function xmppLogin(run: StormRun, user: string, held: Held[]): Promise<void> {
  const wire = new XmppWire(user, run.xmppPort, run.domain);
  held.push({ close: () => wire.close() });
  const features = await wire.startStream();
  if (run.way === 'register') await wire.register(user, run.password);
  await wire.authenticate(features, MECHANISM[run.way] as Mechanism, user, run.password);
  await wire.bindAndAnnounce('storm', 'storm', `${user}@${run.domain}`);
  // Online: from here it only answers pings (XmppWire does) until the bench closes it.
  wire.scanWith(() => {});
}

function nativeLogin(run: StormRun, user: string, token: string | null, held: Held[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${run.httpPort}/ws`, { perMessageDeflate: false });
    held.push({
      close: () =>
        new Promise<void>((done) => {
          if (ws.readyState === WebSocket.CLOSED) return done();
          ws.once('close', () => done());
          ws.close(1000);
        }),
    });
    const jid = `${user}@${run.domain}`;
    ws.once('error', (e) => reject(new Error(`${user}: ${e.message}`)));
    ws.once('close', (code) => reject(new Error(`${user}: closed (${code}) before the login`)));
    ws.once('open', () => ws.send(JSON.stringify(token !== null ? { id: 1, type: 'auth', token, resource: 'storm' } : { id: 1, type: 'auth', jid, password: run.password, resource: 'storm' })));
    const onMessage = (m: Buffer): void => {
      const msg = JSON.parse(m.toString()) as { id?: number; type: string };
      if (msg.id !== 1) return;
      ws.off('message', onMessage);
      if (msg.type === 'result') resolve();
      else reject(new Error(`${user}: ${m.toString().slice(0, 200)}`));
    };
    ws.on('message', onMessage);
  });
}

let held: Held[] = [];
let run: StormRun | null = null;
let tokens: string[] = [];

function send(m: StormMessage): void {
  process.send?.(m);
}

async function go(r: StormRun): Promise<void> {
  const n = r.users.length;
  const times: number[] = [];
  const errors: string[] = [];
  let failed = 0;
  let notOffered = 0;
  const startedAt = performance.timeOrigin + performance.now();
  const t0 = performance.now();
  let lastProgressAt = t0;
  let finished!: () => void;
  const allDone = new Promise<void>((resolve) => (finished = resolve));
  const settle = (): void => {
    lastProgressAt = performance.now();
    if (times.length + failed === n) finished();
  };
  for (let i = 0; i < n; i++) {
    const user = r.users[i] as string;
    const login =
      r.way === 'native-password' ? nativeLogin(r, user, null, held) : r.way === 'native-token' ? nativeLogin(r, user, tokens[i] as string, held) : xmppLogin(r, user, held);
    login.then(
      () => {
        times.push(performance.now() - t0);
        settle();
      },
      (e: unknown) => {
        failed++;
        if (e instanceof MechanismNotOffered) notOffered++;
        else if (errors.length < 5) errors.push(e instanceof Error ? e.message : String(e));
        settle();
      },
    );
  }
  const progress = setInterval(() => {
    send({ type: 'progress', online: times.length, failed });
    if (performance.now() - lastProgressAt > r.stallMs) finished();
  }, 250);
  await allDone;
  clearInterval(progress);
  const stalled = times.length + failed < n;
  send({
    type: 'done',
    startedAt,
    finishedAt: stalled ? performance.timeOrigin + lastProgressAt : startedAt + Math.max(0, ...times),
    online: times.length,
    failed: failed + (n - times.length - failed),
    notOffered,
    times: times.sort((a, b) => a - b),
    errors: stalled ? [...errors, `${n - times.length - failed} clients made no progress for ${r.stallMs / 1000} s`] : errors,
    stalled,
  });
}

process.on('message', (m: { cmd: string } & Partial<StormRun>) => {
  if (m.cmd === 'run') {
    run = m as StormRun;
    // A token is what a reconnecting client holds already: issued here, before the go.
    if (run.way === 'native-token') {
      const now = Date.now();
      const secret = Buffer.from(run.tokenSecret as string);
      tokens = run.users.map((u) => issueToken(secret, { sub: `${u}@${run!.domain}`, acc: run!.accountGeneration as string, iat: now - 1000, exp: now + 3_600_000, scope: 'login' }));
    }
    send({ type: 'ready' });
  } else if (m.cmd === 'go' && run) {
    void go(run);
  } else if (m.cmd === 'close') {
    const all = held;
    held = [];
    void Promise.race([Promise.allSettled(all.map((h) => h.close())), new Promise((r) => setTimeout(r, 15_000))]).then(() => {
      send({ type: 'closed' });
      process.exit(0);
    });
  }
});
process.on('disconnect', () => process.exit(0));
