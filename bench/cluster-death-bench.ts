/**
 * A node's death in a three-node cluster, measured from outside (issue 14's bound, issue 15's
 * reconnection figure). Private PostgreSQL and Redis, three `presenced start` processes (dist/: run
 * `npm run build` first), all on this machine.
 *
 * Part 1, death to offline (`--kills`, default 20): `--users` accounts log in on node B, each a mutual
 * contact of `--watchers` accounts logged in on nodes A and C. Once every watcher sees every user
 * online, B is killed (SIGKILL) and the clock runs until every watcher has seen every user go offline;
 * B is then started again under the same node id and the users log in on it again. Per kill: the last
 * watcher's time (what the bound is about), and over all watcher-user pairs the median. The users do
 * not reconnect in this part: a reconnection elsewhere would (rightly) keep them online.
 *
 * Part 2, back online through the others (`--storm-kills`, default 3): `--storm-users` accounts log in
 * on B; B is killed, and each client reconnects at once (as an SDK does when its socket closes),
 * alternately to A and C, with its login token. Per kill: the time from the kill until the last of
 * them had its login answered.
 *
 *   npm run build && npx tsx bench/cluster-death-bench.ts --kills 20 --users 50 --watchers 10
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { WebSocket } from 'ws';
import { ClusterServices } from '../test/helpers/cluster.js';
import { stopAllPrivateServices } from '../test/helpers/private-services.js';
import { killAllServerProcesses, processAdmin, startServerProcess, type ServerProcess } from '../test/helpers/server-process.js';
import { pct } from './lib/app-bench.js';

const { values: args } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    users: { type: 'string', default: '50' },
    watchers: { type: 'string', default: '10' },
    'storm-kills': { type: 'string', default: '3' },
    'storm-users': { type: 'string', default: '1000' },
    /** node_lease_ms of every node (the default is the production default). */
    lease: { type: 'string', default: '5000' },
  },
});
const KILLS = Number(args.kills);
const USERS = Number(args.users);
const WATCHERS = Number(args.watchers);
const STORM_KILLS = Number(args['storm-kills']);
const STORM_USERS = Number(args['storm-users']);
const LEASE = Number(args.lease);

type Frame = Record<string, any>;

/** One native-protocol connection, logged in with a token; `onFrame` sees every pushed frame. */
class Conn {
  private nextId = 1;
  private readonly pending = new Map<number, (f: Frame) => void>();
  readonly closed: Promise<void>;
  onFrame: (f: Frame) => void = () => {};

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (d) => {
      const f = JSON.parse(d.toString()) as Frame;
      const p = typeof f.id === 'number' ? this.pending.get(f.id) : undefined;
      if (p && (f.type === 'result' || f.type === 'error')) {
        this.pending.delete(f.id);
        p(f);
      } else this.onFrame(f);
    });
    this.closed = new Promise((r) => ws.once('close', () => r()));
  }

  static async login(node: ServerProcess, token: string): Promise<{ conn: Conn; auth: Frame }> {
    const ws = new WebSocket(`${node.url.replace(/^http/, 'ws')}/ws`, { perMessageDeflate: false });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const conn = new Conn(ws);
    const auth = await conn.request('auth', { token });
    if (auth.type !== 'result') throw new Error(`login refused: ${JSON.stringify(auth)}`);
    return { conn, auth };
  }

  request(type: string, body: Record<string, unknown> = {}): Promise<Frame> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, resolve);
      this.ws.send(JSON.stringify({ id, type, ...body }), (e) => e && reject(e));
    });
  }

  close(): void {
    this.ws.terminate();
  }
}

async function until(what: string, cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** Runs `fn` over `items` with at most `width` at a time. */
async function pool<T>(items: readonly T[], width: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i] as T, i);
    }
  }));
}

const fmt = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;

async function main(): Promise<void> {
  const root = mkdtempSync(join(tmpdir(), 'presenced-death-bench-'));
  const cluster = await ClusterServices.start();
  let dirs = 0;
  const startNode = (id: string): Promise<ServerProcess> =>
    // Logins use tokens; the accounts' password hashes are made once, cheaply (not what is measured).
    startServerProcess(join(root, `${id}-${++dirs}`), { ...cluster.processEnv(id, LEASE), PRESENCED_SCRYPT_COST: '10' });
  try {
    let [a, b, c] = await Promise.all([startNode('node-a'), startNode('node-b'), startNode('node-c')]);
    const survivors = [a, c];
    const users = Array.from({ length: USERS }, (_, i) => `u${i}@localhost`);
    const watchers = Array.from({ length: WATCHERS }, (_, i) => `w${i}@localhost`);
    const stormers = Array.from({ length: STORM_KILLS > 0 ? STORM_USERS : 0 }, (_, i) => `s${i}@localhost`);
    const tokens = new Map<string, string>();
    await pool([...users, ...watchers, ...stormers], 20, async (jid) => {
      const made = await processAdmin(a.url, 'POST', '/accounts', { jid, password: 'bench-password' });
      if (made.status !== 201) throw new Error(`account ${jid}: ${JSON.stringify(made.body)}`);
      const t = await processAdmin(a.url, 'POST', `/accounts/${encodeURIComponent(jid)}/tokens`, { ttl: 86_400 });
      tokens.set(jid, t.body.token as string);
    });

    // Watchers on A and C; each one's view of every user.
    const online = new Map<string, Map<string, boolean>>();
    const history: string[] = [];
    const wentOffline = new Map<string, Map<string, number>>();
    let killedAt = 0;
    const watcherConns = await Promise.all(
      watchers.map(async (w, i) => {
        const { conn } = await Conn.login(survivors[i % 2]!, tokens.get(w)!);
        const view = new Map<string, boolean>();
        const offAt = new Map<string, number>();
        online.set(w, view);
        wentOffline.set(w, offAt);
        conn.onFrame = (f) => {
          if (f.type === 'subscription' && f.kind === 'subscribe') void conn.request('approve', { jid: f.from });
          if (f.type !== 'presence' || typeof f.jid !== 'string') return;
          view.set(f.jid, f.online === true);
          if (process.env.DEATH_DEBUG) history.push(`${(performance.now() / 1000).toFixed(3)} ${w} <- ${f.jid} ${JSON.stringify(f)}`);
          if (f.online !== true && killedAt > 0 && !offAt.has(f.jid)) offAt.set(f.jid, performance.now() - killedAt);
        };
        return conn;
      }),
    );
    const everyoneSees = (isOnline: boolean): boolean => watchers.every((w) => users.every((u) => (online.get(w)!.get(u) ?? false) === isOnline));

    const loginUsers = async (node: ServerProcess): Promise<Conn[]> => {
      const conns: Conn[] = [];
      await pool(users, 20, async (u, i) => {
        conns[i] = (await Conn.login(node, tokens.get(u)!)).conn;
      });
      return conns;
    };

    // Rosters: each user and each watcher mutual contacts (kept in the database across kills).
    let userConns = await loginUsers(b);
    const watcherOf = new Map(watchers.map((w, i) => [w, watcherConns[i]!]));
    await pool(users, 10, async (u, i) => {
      const uc = userConns[i]!;
      uc.onFrame = (f) => {
        if (f.type === 'subscription' && f.kind === 'subscribe') void uc.request('approve', { jid: f.from });
      };
      for (const w of watchers) {
        await uc.request('subscribe', { jid: w });
        await watcherOf.get(w)!.request('subscribe', { jid: u });
      }
    });
    await until('every watcher to see every user online', () => everyoneSees(true), 120_000);
    console.log(`${USERS} users on node B, ${WATCHERS} watchers on A and C, mutual contacts; node_lease_ms ${LEASE}; ${cpus().length} CPUs (${cpus()[0]?.model ?? '?'})`);

    // Part 1.
    const lasts: number[] = [];
    const pairs: number[] = [];
    for (let k = 1; k <= KILLS; k++) {
      if (k > 1) {
        b = await startNode('node-b');
        userConns = await loginUsers(b);
        await until('every watcher to see every user online again', () => everyoneSees(true), 60_000);
      }
      for (const m of wentOffline.values()) m.clear();
      killedAt = performance.now();
      b.child.kill('SIGKILL');
      await until('every watcher to see every user offline', () => everyoneSees(false), 60_000).catch(async (e: Error) => {
        const still = watchers.flatMap((w) => users.filter((u) => online.get(w)!.get(u) === true).map((u) => [w, u] as const));
        const told: string[] = [];
        for (const [w, u] of still.slice(0, 3)) {
          for (const n of survivors) {
            const p = await processAdmin(n.url, 'GET', `/accounts/${encodeURIComponent(u)}/presence`);
            const ss = await processAdmin(n.url, 'GET', `/accounts/${encodeURIComponent(u)}/sessions`);
            told.push(`${w} sees ${u}; ${n.url} says ${JSON.stringify(p.body)} sessions ${JSON.stringify(ss.body)}`);
          }
          told.push(...history.filter((h) => h.includes(` ${w} <- ${u} `)), `killed at ${(killedAt / 1000).toFixed(3)}`);
        }
        throw new Error(`${e.message} (kill ${k}): ${still.length} pairs still online:\n${told.join('\n')}`);
      });
      killedAt = 0;
      let last = 0;
      for (const m of wentOffline.values()) {
        for (const t of m.values()) {
          pairs.push(t);
          last = Math.max(last, t);
        }
      }
      lasts.push(last);
      for (const uc of userConns) uc.close();
      await b.exited;
      console.log(`kill ${k}: last watcher saw the last user offline after ${fmt(last)}`);
    }
    if (KILLS > 0) {
      const s = [...lasts].sort((x, y) => x - y);
      const p = [...pairs].sort((x, y) => x - y);
      console.log(`\ndeath to the last watcher, over ${KILLS} kills: p50 ${fmt(pct(s, 50))}, p99 ${fmt(pct(s, 99))}, max ${fmt(s[s.length - 1]!)}, min ${fmt(s[0]!)}`);
      console.log(`every watcher-user pair (${p.length}): p50 ${fmt(pct(p, 50))}, p99 ${fmt(pct(p, 99))}`);
    }

    // Part 2.
    for (const wc of watcherConns) wc.close();
    const storm: number[] = [];
    for (let k = 1; k <= STORM_KILLS; k++) {
      b = await startNode('node-b');
      const conns: Conn[] = [];
      await pool(stormers, 50, async (s, i) => {
        conns[i] = (await Conn.login(b, tokens.get(s)!)).conn;
      });
      let back = 0;
      let lastBack = 0;
      let failures = 0;
      const t0 = performance.now();
      const again = stormers.map(async (s, i) => {
        await conns[i]!.closed;
        // Straight back, to a surviving node (a balancer would do the same).
        for (let attempt = 0; ; attempt++) {
          try {
            const { conn } = await Conn.login(survivors[i % 2]!, tokens.get(s)!);
            conns[i] = conn;
            break;
          } catch (e) {
            if (++failures > STORM_USERS * 3) throw e;
          }
        }
        back++;
        lastBack = performance.now() - t0;
      });
      b.child.kill('SIGKILL');
      await Promise.all(again);
      storm.push(lastBack);
      console.log(`storm ${k}: ${back} clients back online through A and C, the last ${fmt(lastBack)} after the kill (${failures} failed attempts retried)`);
      for (const conn of conns) conn.close();
      await b.exited;
    }
    if (STORM_KILLS > 0) console.log(`\n${STORM_USERS} clients of a killed node back online through the other two: ${storm.map(fmt).join(', ')}`);
  } finally {
    killAllServerProcesses();
    await cluster.remove();
    await stopAllPrivateServices();
    rmSync(root, { recursive: true, force: true });
  }
}

await main();
