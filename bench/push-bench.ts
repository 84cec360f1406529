/**
 * Push providers benchmark: how many pushes per second the APNs provider (HTTP/2, multiplexed on one
 * connection) and the FCM provider (HTTP/1.1 keep-alive, cached access token) send to the local fakes,
 * and the latency of one push (send() called → the service's answer received) at a steady rate.
 * By hand, never in CI:
 *
 *   taskset -c 1 npx tsx bench/push-bench.ts [--pushes 50000] [--concurrency 256] [--rate 1000] [--seconds 10] [--repeat 3]
 *
 * The providers run in a child process pinned to core 0 (`taskset -c 0`), the fakes in this process
 * (pin it to core 1). The fakes check every request as in the tests (the APNs fake verifies each provider
 * token once, as APNs does); a request they refuse fails the run.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createProvider, type PushMessage, type PushProvider } from '../src/features/push/providers/index.js';
import { ApnsFake } from '../test/helpers/push-fakes/apns-fake.js';
import { makeP8, makeServiceAccount, makeTlsCert } from '../test/helpers/push-fakes/common.js';
import { FcmFake } from '../test/helpers/push-fakes/fcm-fake.js';

const { values: args } = parseArgs({
  options: {
    role: { type: 'string', default: 'main' },
    configs: { type: 'string', default: '' },
    pushes: { type: 'string', default: '50000' },
    concurrency: { type: 'string', default: '256' },
    rate: { type: 'string', default: '1000' },
    seconds: { type: 'string', default: '10' },
    repeat: { type: 'string', default: '3' },
    'provider-cpu': { type: 'string', default: '0' },
  },
});

interface RunResult {
  provider: string;
  pushesPerSec: number;
  cpuMsPerPush: number;
  paced: { rate: number; p50: number; p99: number; max: number; notSent: number };
  notSent: number;
}

const message: PushMessage = { reason: 'message', count: 1, collapseKey: 'chat-alice', urgency: 'high', ttlSeconds: 3600, data: { account: 'bob@example.com' } };

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** The provider side: runs in the pinned child, reports JSON on stdout. */
async function providerRole(): Promise<void> {
  const configs = JSON.parse(args.configs as string) as Record<string, Record<string, unknown>>;
  const log = pino({ level: 'warn' });
  const out: RunResult[] = [];
  const N = Number(args.pushes);
  const C = Number(args.concurrency);
  const rate = Number(args.rate);
  const seconds = Number(args.seconds);
  for (const [name, config] of Object.entries(configs)) {
    const p: PushProvider = createProvider(name, config, { dataDir: tmpdir(), log });
    const token = (i: number) => (config.type === 'apns' ? (i % 100_000).toString(16).padStart(64, 'a') : `fcm-bench-${i % 100_000}`);
    let notSent = 0;
    // Throughput: C pushes in flight at all times.
    const burst = async (count: number): Promise<number> => {
      let next = 0;
      const t0 = performance.now();
      await Promise.all(
        Array.from({ length: C }, async () => {
          while (next < count) {
            const i = next++;
            const r = await p.send({ provider: name, token: token(i) }, message);
            if (r.outcome !== 'sent') {
              notSent++;
              if (notSent < 5) process.stderr.write(`${name}: ${JSON.stringify(r)}\n`);
            }
          }
        }),
      );
      return performance.now() - t0;
    };
    await burst(Math.min(5000, N)); // warm-up: connections, token, JIT
    notSent = 0;
    const cpu0 = process.cpuUsage();
    const ms = await burst(N);
    const cpu = process.cpuUsage(cpu0);
    // Paced: one push every 1/rate s, each timed from its send() to its answer.
    const lat: number[] = [];
    let pacedNotSent = 0;
    const total = rate * seconds;
    const start = performance.now();
    const pending: Array<Promise<void>> = [];
    let sentCount = 0;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const due = Math.min(total, Math.floor(((performance.now() - start) / 1000) * rate));
        while (sentCount < due) {
          const i = sentCount++;
          const t = performance.now();
          pending.push(
            p.send({ provider: name, token: token(i) }, message).then((r) => {
              lat.push(performance.now() - t);
              if (r.outcome !== 'sent') pacedNotSent++;
            }),
          );
        }
        if (sentCount >= total) resolve();
        else setTimeout(tick, 1);
      };
      tick();
    });
    await Promise.all(pending);
    lat.sort((a, b) => a - b);
    out.push({
      provider: String(config.type),
      pushesPerSec: Math.round(N / (ms / 1000)),
      cpuMsPerPush: (cpu.user + cpu.system) / 1000 / N,
      paced: { rate, p50: pct(lat, 50), p99: pct(lat, 99), max: lat.at(-1) ?? NaN, notSent: pacedNotSent },
      notSent,
    });
    await p.close();
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'push-bench-'));
  const key = makeP8(dir);
  const tls = makeTlsCert(dir);
  const apns = new ApnsFake({ key: tls.key, cert: tls.cert, publicKey: key.publicKey, keyId: 'BENCHKEY01', teamId: 'BENCHTEAM1', topic: 'im.presenced.bench' });
  apns.keep = false;
  await apns.listen();
  const fcm = new FcmFake();
  fcm.keep = false;
  await fcm.listen();
  const sa = makeServiceAccount(dir, fcm.tokenUri, 'presenced-bench');
  fcm.trust(sa);
  const configs = {
    ios: { type: 'apns', keyFile: key.file, keyId: 'BENCHKEY01', teamId: 'BENCHTEAM1', topic: 'im.presenced.bench', environment: 'sandbox', endpoint: apns.endpoint, caFile: tls.certFile },
    android: { type: 'fcm', serviceAccountFile: sa.file, endpoint: fcm.base },
  };
  const rows: RunResult[] = [];
  try {
    for (let run = 1; run <= Number(args.repeat); run++) {
      const child = spawn('taskset', ['-c', args['provider-cpu'] as string, process.execPath, '--import', 'tsx', 'bench/push-bench.ts', '--role', 'provider', '--configs', JSON.stringify(configs), '--pushes', args.pushes as string, '--concurrency', args.concurrency as string, '--rate', args.rate as string, '--seconds', args.seconds as string], { stdio: ['ignore', 'pipe', 'inherit'] });
      const fakeCpu0 = process.cpuUsage();
      const fakeCount0 = apns.count + fcm.count;
      let stdout = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      const code = await new Promise<number | null>((r) => child.on('exit', r));
      if (code !== 0) throw new Error(`provider process exited with ${code}`);
      const results = JSON.parse(stdout.trim().split('\n').at(-1)!) as RunResult[];
      const fakeCpu = process.cpuUsage(fakeCpu0);
      // Whether the fakes (one process, one core) or the providers limit the throughput.
      console.log(`run ${run} fakes: ${((fakeCpu.user + fakeCpu.system) / 1000 / (apns.count + fcm.count - fakeCount0)).toFixed(3)} ms CPU/push`);
      for (const r of results) {
        rows.push(r);
        console.log(
          `run ${run} ${r.provider.padEnd(5)} ${String(r.pushesPerSec).padStart(7)} pushes/s  ${r.cpuMsPerPush.toFixed(3)} ms CPU/push  ` +
            `paced ${r.paced.rate}/s: p50 ${r.paced.p50.toFixed(2)} ms p99 ${r.paced.p99.toFixed(2)} ms max ${r.paced.max.toFixed(1)} ms  not sent ${r.notSent + r.paced.notSent}`,
        );
      }
    }
    if (apns.bad.length || fcm.bad.length) throw new Error(`the fakes refused requests: ${[...apns.bad, ...fcm.bad].slice(0, 5).join('; ')}`);
    console.log(`APNs fake: ${apns.count} pushes on ${apns.sessionsOpened} connections (max ${apns.maxInFlight} streams at once); FCM fake: ${fcm.count} pushes, ${fcm.tokenRequests.length} token requests`);
  } finally {
    await apns.close();
    await fcm.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await (args.role === 'provider' ? providerRole() : main());
