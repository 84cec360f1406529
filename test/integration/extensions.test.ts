import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { main } from '../../src/cli.js';
import { extensionsOf, type ExtensionView } from '../../src/features/extensions/extensions-feature.js';
import { pushOf } from '../../src/features/push/push-feature.js';
import { ADMIN_TOKEN, startTestServer, type TestServer } from '../helpers/server.js';
import { eventually, Receiver } from '../helpers/webhook-receiver.js';
import { befriend, TestClient } from '../helpers/ws-client.js';
import { buildDist, killAllServerProcesses, processAdmin, startServerProcess } from '../helpers/server-process.js';

const EXAMPLES = fileURLToPath(new URL('../../examples/extensions/', import.meta.url));
const AUDIT = join(EXAMPLES, 'audit-log.mjs');
const FOLLOWER_PUSH = join(EXAMPLES, 'offline-follower-push.mjs');
const SECRET = `whsec_${randomBytes(24).toString('base64')}`;

type AuditLine = { at: number; jid: string; event: string; resource?: string; reason?: string; online?: boolean; show?: string };

function auditLines(path: string): AuditLine[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as AuditLine);
}

function viewOf(t: TestServer, name: string): ExtensionView {
  const v = extensionsOf(t.server.engine)?.list().find((e) => e.name === name);
  assert.ok(v, `extension ${name} is listed`);
  return v;
}

/** Runs `presenced <args>` in this process (the CLI reaches the in-process server through its control socket). */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const log = console.log;
  const error = console.error;
  console.log = (...a: unknown[]) => void out.push(a.join(' '));
  console.error = (...a: unknown[]) => void err.push(a.join(' '));
  try {
    const code = await main(args);
    return { code, out: out.join('\n'), err: err.join('\n') };
  } finally {
    console.log = log;
    console.error = error;
  }
}

function configFile(dir: string, t: TestServer): string {
  const file = join(dir, 'cli-config.json');
  writeFileSync(file, JSON.stringify({ data_dir: t.dataDir, admin_token: ADMIN_TOKEN }));
  return file;
}

describe('extension examples loaded from the configuration', () => {
  const rx = new Receiver();
  const work = mkdtempSync(join(tmpdir(), 'presenced-ext-'));
  const auditPath = join(work, 'audit.jsonl');
  let t: TestServer;
  const pushesTo = (device: string) => rx.requests.filter((r) => (r.payload as { device?: string } | null)?.device === device);

  before(async () => {
    rx.secret = SECRET;
    await rx.listen();
    t = await startTestServer({
      webhooks_allow_private: true,
      push_providers: { gw: { type: 'webhook', url: rx.url, secret: SECRET } },
      push_backoff_base_ms: 10,
      extensions_list: {
        audit: { module: AUDIT, settings: { path: auditPath } },
        'follower-push': { module: FOLLOWER_PUSH, settings: { title: '{contact} is here' } },
      },
    });
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    await t.destroy();
    await rx.close();
    rmSync(work, { recursive: true, force: true });
  });

  test('both are running and listed, by the REST API and by `presenced extensions list`', async () => {
    const res = await t.admin('GET', '/extensions');
    assert.equal(res.status, 200);
    const names = (res.body.extensions as ExtensionView[]).map((e) => [e.name, e.state, e.source]);
    assert.deepEqual(names, [
      ['audit', 'running', 'config'],
      ['follower-push', 'running', 'config'],
    ]);
    const anon = await fetch(`${t.url}/api/v1/extensions`);
    assert.equal(anon.status, 401);
    assert.equal(((await anon.json()) as { error: { code: string } }).error.code, 'auth-failed');
    const r = await cli(['extensions', 'list', '--config', configFile(work, t)]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^NAME\s+STATE\s+HANDLED/m);
    assert.match(r.out, /^audit\s+running\s+\d+/m);
    assert.match(r.out, /^follower-push\s+running\s+\d+/m);
  });

  test('the push example pushes an offline follower when a contact comes online, and not an online one', async () => {
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'laptop' });
    const { client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone' });
    await befriend(alice, 'alice@localhost', bob, 'bob@localhost');
    await bob.request('push.register', { provider: 'gw', token: 'bob-phone' });
    // carol follows alice too, and is online from her desktop while her phone (registered) sleeps:
    // the server's push policy would wake the phone, but the extension's condition (follower offline) does not hold.
    const { client: carol } = await TestClient.login(t.wsUrl, 'carol@localhost', 'secret-pw', { resource: 'phone' });
    await befriend(alice, 'alice@localhost', carol, 'carol@localhost');
    await carol.request('push.register', { provider: 'gw', token: 'carol-phone' });
    await carol.request('bye');
    await carol.closed;
    const { client: carolDesk } = await TestClient.login(t.wsUrl, 'carol@localhost', 'secret-pw', { resource: 'desktop' });
    await carolDesk.request('presence', { show: 'available' });
    await bob.request('bye');
    await bob.closed;
    await alice.request('bye');
    await alice.closed;

    const { client: alice2 } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'laptop' });
    await alice2.request('presence', { show: 'available' });
    await rx.until(() => pushesTo('bob-phone').length >= 1, 'the push to bob');
    const p = pushesTo('bob-phone')[0]!.payload as Record<string, any>;
    assert.equal(p.title, 'alice@localhost is here');
    assert.equal(p.data.contact, 'alice@localhost');

    // A later positive case is the barrier: the extension handles events in order and queues pushes
    // durably before it returns, so once dave's push arrives, a push to carol would have been queued.
    const { client: dave } = await TestClient.login(t.wsUrl, 'dave@localhost', 'secret-pw', { resource: 'phone' });
    const { client: erin } = await TestClient.login(t.wsUrl, 'erin@localhost', 'secret-pw', { resource: 'laptop' });
    await befriend(dave, 'dave@localhost', erin, 'erin@localhost');
    await dave.request('push.register', { provider: 'gw', token: 'dave-phone' });
    await dave.request('bye');
    await erin.request('bye');
    await erin.closed;
    const { client: erin2 } = await TestClient.login(t.wsUrl, 'erin@localhost', 'secret-pw', { resource: 'laptop' });
    await erin2.request('presence', { show: 'available' });
    await rx.until(() => pushesTo('dave-phone').length >= 1, 'the push to dave');
    await eventually(async () => assert.equal(await pushOf(t.server.engine)!.registrations.pendingCount(), 0));
    assert.equal(pushesTo('carol-phone').length, 0, 'carol was online: no push');
    assert.equal(pushesTo('bob-phone').length, 1);
    assert.deepEqual(rx.bad, []);
    for (const c of [alice2, carolDesk, erin2]) await c.close();
  });

  test('the audit example logs each transition in order, with the disconnect reasons: timeout, replaced, shutdown', async () => {
    const jid = 'dave@localhost';
    const mine = () => auditLines(auditPath).filter((l) => l.jid === jid && (l.event === 'connect' || l.event === 'disconnect'));
    const start = mine().length;
    const next = async (what: string, pred: (l: AuditLine) => boolean) => {
      await eventually(async () => assert.ok(mine().slice(start).some(pred), `audit line: ${what}`), 10_000);
    };
    const { client: a } = await TestClient.login(t.wsUrl, jid, 'secret-pw', { resource: 'tab' });
    await a.request('presence', { show: 'away' });
    a.destroy();
    await next('timeout', (l) => l.event === 'disconnect' && l.reason === 'timeout');
    const { client: b } = await TestClient.login(t.wsUrl, jid, 'secret-pw', { resource: 'tab' });
    await b.request('presence', { show: 'available' });
    const { client: c } = await TestClient.login(t.wsUrl, jid, 'secret-pw', { resource: 'tab' });
    await c.request('presence', { show: 'dnd' });
    await next('replaced', (l) => l.event === 'disconnect' && l.reason === 'replaced');
    await t.stop();
    const got = mine().slice(start);
    assert.deepEqual(
      got.map((l) => (l.event === 'connect' ? `connect ${l.resource}` : `disconnect ${l.resource} ${l.reason}`)),
      ['connect tab', 'disconnect tab timeout', 'connect tab', 'disconnect tab replaced', 'connect tab', 'disconnect tab shutdown'],
    );
    // Lines are in the order things happened, and presence lines sit between them in order too.
    const all = auditLines(auditPath).filter((l) => l.jid === jid);
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.at >= all[i - 1]!.at, `line ${i} is not older than the one before`);
    const fromTab = all.slice(all.findIndex((l) => l.event === 'connect' && l.resource === 'tab'));
    assert.deepEqual(
      fromTab.map((l) => `${l.event} ${l.event === 'presence' ? l.show : l.event === 'disconnect' ? l.reason : l.resource}`),
      [
        'connect tab',
        'presence available',
        'presence away',
        'disconnect timeout',
        'presence offline',
        'connect tab',
        'presence available',
        'disconnect replaced',
        'connect tab',
        'presence dnd',
        'disconnect shutdown',
        'presence offline',
      ],
    );
  });
});

describe('extension examples loaded from data_dir/extensions/', () => {
  const work = mkdtempSync(join(tmpdir(), 'presenced-ext-folder-'));
  const auditPath = join(work, 'audit.jsonl');
  let t: TestServer;

  before(async () => {
    const dataDir = join(work, 'data');
    mkdirSync(join(dataDir, 'extensions'), { recursive: true });
    copyFileSync(AUDIT, join(dataDir, 'extensions', 'audit-log.mjs'));
    // A folder with a package.json, as an extension installed with its own files would be.
    mkdirSync(join(dataDir, 'extensions', 'follower-push', 'lib'), { recursive: true });
    copyFileSync(FOLLOWER_PUSH, join(dataDir, 'extensions', 'follower-push', 'lib', 'main.mjs'));
    writeFileSync(join(dataDir, 'extensions', 'follower-push', 'package.json'), JSON.stringify({ name: 'follower-push', type: 'module', exports: { '.': { import: './lib/main.mjs' } } }));
    // The folder's modules take their settings from an entry of their name without a module.
    t = await startTestServer({ extensions_list: { 'audit-log': { settings: { path: auditPath } } } }, dataDir);
    for (const u of ['alice', 'bob']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    await t.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  test('both start from the folder, named after their file, with their settings from the configuration', async () => {
    assert.deepEqual(
      extensionsOf(t.server.engine)!.list().map((e) => [e.name, e.state, e.source]),
      [
        ['audit-log', 'running', 'folder'],
        ['follower-push', 'running', 'folder'],
      ],
    );
    const { client } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'web' });
    await client.request('presence', { show: 'chat' });
    await client.request('bye');
    await eventually(async () =>
      assert.deepEqual(
        auditLines(auditPath).map((l) => `${l.jid} ${l.event} ${l.event === 'presence' ? l.show : l.event === 'disconnect' ? l.reason : l.resource}`),
        ['alice@localhost connect web', 'alice@localhost presence available', 'alice@localhost presence chat', 'alice@localhost disconnect graceful', 'alice@localhost presence offline'],
      ),
    );
  });

  test('reload picks up a module added to the folder; its key-value store is durable across reloads', async () => {
    // A module added to the folder while the server runs is picked up by reload (the CLI's, here).
    writeFileSync(
      join(t.dataDir, 'extensions', 'counter.mjs'),
      `export default { name: 'counter', async onUserPresence(user, change, ctx) {
        if (change.type !== 'connect') return;
        const n = (await ctx.kv.get('connects:' + user.jid)) ?? 0;
        await ctx.kv.set('connects:' + user.jid, n + 1);
        await ctx.kv.set('last', { jid: user.jid, sessions: user.sessions.map((s) => s.resource) });
      } };\n`,
    );
    const r = await cli(['extensions', 'reload', '--config', configFile(work, t)]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^counter\s+running/m);
    const db = t.server.engine.store.featureStorage().db;
    const value = async (key: string) =>
      (await db.selectFrom('extension_kv').select('value').where('extension', '=', 'counter').where('key', '=', key).executeTakeFirst())?.value as string | undefined;
    for (let i = 0; i < 2; i++) {
      const { client } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: `r${i}` });
      // The event is described when the extension's turn comes: stay connected until it was handled,
      // so the user it sees still has this session.
      await eventually(async () => assert.equal(await value('connects:bob@localhost'), String(i + 1), 'the connect was counted'));
      await client.request('bye');
      await client.closed;
    }
    await eventually(async () => assert.deepEqual(JSON.parse((await value('last')) ?? 'null'), { jid: 'bob@localhost', sessions: ['r1'] }));
    const res = await t.admin('POST', '/extensions/reload');
    assert.equal(res.status, 200);
    const { client } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'r2' });
    await eventually(async () => assert.equal(await value('connects:bob@localhost'), '3'));
    await client.close();
  });
});

describe('misbehaving extensions: presence goes on, they are restarted, then disabled', () => {
  const work = mkdtempSync(join(tmpdir(), 'presenced-ext-bad-'));
  const mod = (name: string, body: string): string => {
    const file = join(work, `${name}.mjs`);
    writeFileSync(file, `export default { name: '${name}', ${body} };\n`);
    return file;
  };
  let t: TestServer;

  before(async () => {
    t = await startTestServer({
      // Long enough for the hog to reach its heap limit (a few hundred ms) before its budget runs out.
      extension_budget_ms: 1_000,
      extension_max_failures: 3,
      // The watcher's steps come as fast as the server answers.
      ws_rate_limit: 10_000,
      ws_rate_burst: 10_000,
      extension_backoff_base_ms: 20,
      extension_memory_mb: 32,
      extensions_list: {
        thrower: { module: mod('thrower', `onUserPresence() { throw new TypeError('bad luck'); }`) },
        looper: { module: mod('looper', `onUserPresence() { for (;;) {} }`) },
        hog: { module: mod('hog', `onUserPresence() { const keep = []; for (;;) keep.push(new Array(100000).fill(Math.random())); }`) },
        sulker: { module: mod('sulker', `onUserPresence() { return new Promise(() => {}); }`) },
        good: { module: mod('good', `async onUserPresence(user, change, ctx) { if (change.type === 'presence') await ctx.kv.set('last', user.show); }`) },
      },
    });
    for (const u of ['alice', 'bob']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    await t.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  test('a watcher keeps receiving every change while they fail; each ends disabled and the list says why', async () => {
    const { client: alice } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'a' });
    const { client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'b' });
    await befriend(alice, 'alice@localhost', bob, 'bob@localhost');
    const bad = ['thrower', 'looper', 'hog', 'sulker'];
    const shows = ['away', 'dnd', 'xa', 'chat'];
    const deadline = Date.now() + 60_000;
    let i = 0;
    let slowest = 0;
    while (bad.some((n) => viewOf(t, n).state !== 'disabled')) {
      assert.ok(Date.now() < deadline, `still not all disabled: ${JSON.stringify(extensionsOf(t.server.engine)!.list().map((e) => [e.name, e.state, e.restarts]))}`);
      const show = shows[i++ % shows.length]!;
      const started = Date.now();
      await alice.request('presence', { show, status: `step ${i}` });
      await bob.presenceOf('alice@localhost', (p) => p.status === `step ${i}`);
      slowest = Math.max(slowest, Date.now() - started);
      // Paced by the watcher's own round trips, not by a sleep: each step waits for the change to arrive.
      await bob.barrier();
    }
    // Presence never waited for an extension: had it waited, a step would have taken the 1 s budget.
    // (Half of it leaves room for a loaded test machine.)
    assert.ok(slowest < 500, `a presence change took ${slowest} ms to reach the watcher`);
    const kinds: Record<string, string> = { thrower: 'threw', looper: 'timeout', hog: 'out-of-memory', sulker: 'timeout' };
    for (const n of bad) {
      const v = viewOf(t, n);
      assert.equal(v.state, 'disabled', n);
      assert.equal(v.restarts, 2, `${n} was restarted before it was disabled`);
      assert.equal(v.lastError?.kind, kinds[n], `${n}: ${JSON.stringify(v.lastError)}`);
      assert.match(v.reason!, /^disabled after 3 failures in a row; last: /);
      assert.equal(v.failed, 3);
    }
    assert.match(viewOf(t, 'thrower').reason!, /TypeError: bad luck/);
    assert.match(viewOf(t, 'looper').reason!, /onUserPresence did not finish within 1000 ms/);
    assert.match(viewOf(t, 'hog').reason!, /ran out of memory/);
    // The well-behaved one saw everything, in order, meanwhile.
    const good = viewOf(t, 'good');
    assert.equal(good.state, 'running');
    assert.equal(good.failed, 0);
    assert.equal(good.dropped, 0);
    // Events after they were disabled are counted as missed.
    const before = viewOf(t, 'thrower').dropped;
    await alice.request('presence', { show: 'available', status: 'after' });
    await bob.presenceOf('alice@localhost', (p) => p.status === 'after');
    assert.ok(viewOf(t, 'thrower').dropped > before);
    const r = await cli(['extensions', 'list', '--config', configFile(work, t)]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^hog\s+disabled\s+0\s+3\s+\d+\s+2\s+0\s+config/m);
    assert.match(r.out, /why: disabled after 3 failures in a row; last: out-of-memory: it ran out of memory/);
    const metrics = await (await fetch(`${t.url}/metrics`)).text();
    assert.match(metrics, /presenced_extension_restarts_total\{extension="looper"\} 2/);
    assert.match(metrics, /presenced_extension_up\{extension="good"\} 1/);
    assert.match(metrics, /presenced_extension_up\{extension="sulker"\} 0/);
    assert.match(metrics, /presenced_extension_events_total\{extension="good",outcome="handled"\} [1-9]/);
    await alice.close();
    await bob.close();
  });
});

describe('bad extensions and bad configuration: clear messages naming the extension', () => {
  const work = mkdtempSync(join(tmpdir(), 'presenced-ext-input-'));
  const file = (name: string, text: string): string => {
    const f = join(work, name);
    writeFileSync(f, text);
    return f;
  };
  after(() => rmSync(work, { recursive: true, force: true }));

  const cases: Record<string, { module: string; reason: RegExp }> = {
    ghost: { module: join(work, 'nowhere.mjs'), reason: /^cannot find its module .*nowhere\.mjs$/ },
    bare: { module: 'no-such-presenced-extension-package', reason: /^cannot find the package "no-such-presenced-extension-package"/ },
    'no-default': {
      module: file('no-default.mjs', `export const name = 'x';\nexport function onUserPresence() {}\n`),
      reason: /has no default export \(it exports name, onUserPresence\); export default definePresenceExtension/,
    },
    'a-function': { module: file('a-function.mjs', `export default function onUserPresence() {}\n`), reason: /default export of .*a-function\.mjs must be an object with a name and hooks \(got function\)/ },
    'bad-name': { module: file('bad-name.mjs', `export default { name: 'Not A Name!' };\n`), reason: /must have a "name": lower-case letters, digits, - and _, up to 64 \(got "Not A Name!"\)/ },
    typo: { module: file('typo.mjs', `export default { name: 'typo', onUserPresense() {} };\n`), reason: /has an unknown member "onUserPresense" \(hooks are onStart, onStop, onUserPresence/ },
    'not-fn': { module: file('not-fn.mjs', `export default { name: 'not-fn', onStart: 42 };\n`), reason: /onStart must be a function \(got number\)/ },
    syntax: { module: file('syntax.mjs', `export default { name: 'syntax', onStart( };\n`), reason: /^cannot load its module .*syntax\.mjs: SyntaxError/ },
    'start-throws': { module: file('start-throws.mjs', `export default { name: 'start-throws', onStart() { throw new Error('no database at db.internal'); } };\n`), reason: /^onStart failed: no database at db\.internal$/ },
  };

  test('each bad module is reported by name, and the server still starts and serves the good one', async () => {
    const good = file('fine.mjs', `export default { name: 'fine' };\n`);
    const list = Object.fromEntries(Object.entries(cases).map(([n, c]) => [n, { module: c.module }]));
    const t = await startTestServer({ extensions_list: { ...list, fine: { module: good }, missing: { settings: { a: 1 } } } });
    try {
      const res = await t.admin('GET', '/extensions');
      assert.equal(res.status, 200);
      const byName = new Map((res.body.extensions as ExtensionView[]).map((e) => [e.name, e]));
      for (const [name, c] of Object.entries(cases)) {
        const v = byName.get(name);
        assert.ok(v, name);
        assert.equal(v.state, 'failed', name);
        assert.match(v.reason ?? '', c.reason, name);
        assert.equal(v.lastError?.kind, 'load');
      }
      assert.equal(byName.get('fine')?.state, 'running');
      assert.match(byName.get('missing')?.reason ?? '', /extensions_list\.missing has no "module" and .*extensions holds no module of that name/);
      await t.createAccount('alice@localhost');
      const { client } = await TestClient.login(t.wsUrl, 'alice@localhost');
      await client.request('presence', { show: 'away' });
      await client.close();
    } finally {
      await t.destroy();
    }
  });

  test('with extensions_required the server refuses to start, naming each extension and why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presenced-ext-required-'));
    try {
      await assert.rejects(
        startTestServer({ extensions_required: true, extensions_list: { ghost: { module: cases.ghost!.module }, 'start-throws': { module: cases['start-throws']!.module } } }, dir),
        (e: Error) => {
          assert.match(e.message, /extensions_required is on and 2 extensions could not start/);
          assert.match(e.message, /extension "ghost": cannot find its module/);
          assert.match(e.message, /extension "start-throws": onStart failed: no database at db\.internal/);
          return true;
        },
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('configuration values of the wrong type are refused with the key and what it takes', () => {
    const problems = (env: Record<string, string>, overrides = {}): string => {
      try {
        loadConfig({ env, overrides });
      } catch (e) {
        assert.ok(e instanceof ConfigError);
        return e.message;
      }
      assert.fail('the configuration was accepted');
    };
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '[1, 2]' }), /extensions_list must be a JSON object/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"audit": ' }), /extensions_list must be a JSON object \(PRESENCED_EXTENSIONS_LIST is not valid JSON/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"audit": "./audit.mjs"}' }), /extensions_list\.audit must be an object such as \{"module": "\.\/ext\.mjs", "settings": \{\}\}/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"audit": {"module": 3}}' }), /extensions_list\.audit\.module must be a non-empty string/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"audit": {"module": "./a.mjs", "setings": {}}}' }), /extensions_list\.audit: unknown field "setings" \(an entry takes module, settings, enabled\)/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"audit": {"settings": [1]}}' }), /extensions_list\.audit\.settings must be an object/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"audit": {"enabled": "yes"}}' }), /extensions_list\.audit\.enabled must be true or false/);
    assert.match(problems({ PRESENCED_EXTENSIONS_LIST: '{"Audit Log": {}}' }), /extensions_list: "Audit Log" is not a valid extension name/);
    assert.match(problems({ PRESENCED_EXTENSION_BUDGET_MS: 'fast' }), /extension_budget_ms must be an integer \(got "fast" from PRESENCED_EXTENSION_BUDGET_MS\)/);
    assert.match(problems({ PRESENCED_EXTENSION_MEMORY_MB: '1' }), /extension_memory_mb must be between 8 and 16384/);
    assert.match(problems({ PRESENCED_EXTENSIONS_REQUIRED: 'maybe' }), /extensions_required must be true or false/);
  });

  test('`presenced extensions` without a running server, or with a wrong command, says so', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'presenced-ext-cli-'));
    try {
      const cfg = join(dir, 'c.json');
      writeFileSync(cfg, JSON.stringify({ data_dir: dir }));
      const none = await cli(['extensions', 'list', '--config', cfg]);
      assert.equal(none.code, 1);
      assert.match(none.err, /no server is running with data directory .*; extensions run inside a running server/);
      const wrong = await cli(['extensions', 'restart', '--config', cfg]);
      assert.equal(wrong.code, 2);
      assert.match(wrong.err, /unknown extensions command "restart"/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the server as a process (the compiled build)', () => {
  const work = mkdtempSync(join(tmpdir(), 'presenced-ext-proc-'));
  before(async () => {
    await buildDist();
  });
  after(() => {
    killAllServerProcesses();
    rmSync(work, { recursive: true, force: true });
  });

  test('SIGHUP reloads the extensions: a module added to the folder starts, a changed one runs its new code', async () => {
    const dataDir = join(work, 'data');
    mkdirSync(join(dataDir, 'extensions'), { recursive: true });
    const auditPath = join(work, 'audit.jsonl');
    copyFileSync(AUDIT, join(dataDir, 'extensions', 'audit-log.mjs'));
    writeFileSync(join(dataDir, 'extensions', 'marker.mjs'), `export default { name: 'marker', onStart(ctx) { return ctx.kv.set('version', 1); } };\n`);
    const p = await startServerProcess(dataDir, { PRESENCED_EXTENSIONS_LIST: JSON.stringify({ 'audit-log': { settings: { path: auditPath } } }) });
    const names = async () => ((await processAdmin(p.url, 'GET', '/extensions')).body.extensions as ExtensionView[]).map((e) => `${e.name} ${e.state}`);
    assert.deepEqual(await names(), ['audit-log running', 'marker running']);
    writeFileSync(join(dataDir, 'extensions', 'late.mjs'), `export default { name: 'late' };\n`);
    writeFileSync(join(dataDir, 'extensions', 'marker.mjs'), `export default { name: 'marker', onStart(ctx) { ctx.log.info('marker version 2'); } };\n`);
    p.child.kill('SIGHUP');
    await eventually(async () => assert.deepEqual(await names(), ['audit-log running', 'late running', 'marker running']));
    await eventually(async () => assert.ok(p.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('extension marker: marker version 2')), 'the new code ran'));
    assert.ok(p.logs.some((l) => l.msg === 'SIGHUP: reloading extensions'));
    // The server goes on serving, and the reloaded audit extension records.
    assert.equal((await processAdmin(p.url, 'POST', '/accounts', { jid: 'alice@localhost', password: 'secret-pw' })).status, 201);
    const { client } = await TestClient.login(p.url.replace(/^http/, 'ws') + '/ws', 'alice@localhost', 'secret-pw', { resource: 'x' });
    await client.request('bye');
    await eventually(async () => assert.ok(auditLines(auditPath).some((l) => l.jid === 'alice@localhost' && l.event === 'disconnect' && l.reason === 'graceful')));
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });

  test('a reload reads the configuration file again; one that no longer validates is refused and changes nothing', async () => {
    const dataDir = join(work, 'data-config');
    mkdirSync(dataDir, { recursive: true });
    const auditA = join(work, 'audit-a.jsonl');
    const auditB = join(work, 'audit-b.jsonl');
    const lateModule = join(work, 'late-from-config.mjs');
    writeFileSync(lateModule, `export default { name: 'late', onStart(ctx) { ctx.log.info('late says ' + ctx.settings.word); } };\n`);
    const configPath = join(work, 'presenced.json');
    const writeConfig = (list: unknown) => writeFileSync(configPath, JSON.stringify({ extensions_list: list }));
    writeConfig({ 'audit-log': { module: AUDIT, settings: { path: auditA } } });
    const p = await startServerProcess(dataDir, {}, ['--config', configPath]);
    const names = async () => ((await processAdmin(p.url, 'GET', '/extensions')).body.extensions as ExtensionView[]).map((e) => `${e.name} ${e.state}`);
    assert.deepEqual(await names(), ['audit-log running']);
    assert.equal((await processAdmin(p.url, 'POST', '/accounts', { jid: 'alice@localhost', password: 'secret-pw' })).status, 201);
    const session = async () => {
      const { client } = await TestClient.login(p.url.replace(/^http/, 'ws') + '/ws', 'alice@localhost', 'secret-pw', { resource: 'x' });
      await client.request('bye');
    };

    // New settings for one extension, and a new one, both only in the file: SIGHUP picks them up.
    writeConfig({ 'audit-log': { module: AUDIT, settings: { path: auditB } }, late: { module: lateModule, settings: { word: 'hello' } } });
    p.child.kill('SIGHUP');
    await eventually(async () => assert.deepEqual(await names(), ['audit-log running', 'late running']));
    await eventually(async () => assert.ok(p.logs.some((l) => typeof l.msg === 'string' && l.msg.includes('extension late: late says hello'))));
    await session();
    await eventually(async () => assert.ok(auditLines(auditB).some((l) => l.jid === 'alice@localhost' && l.event === 'disconnect'), 'the audit log moved to its new path'));

    // A file that no longer validates: the REST reload says why (400), SIGHUP logs it, the extensions run on unchanged.
    writeConfig({ 'audit-log': { module: AUDIT, setings: {} } });
    const refused = await processAdmin(p.url, 'POST', '/extensions/reload');
    assert.equal(refused.status, 400);
    assert.match(String((refused.body.error as { message: string }).message), /extensions not reloaded: the configuration does not validate: .*extensions_list\.audit-log: unknown field "setings"/);
    p.child.kill('SIGHUP');
    await eventually(async () => assert.ok(p.logs.some((l) => l.msg === 'extension reload refused: the configuration does not validate')));
    assert.deepEqual(await names(), ['audit-log running', 'late running']);
    const before = auditLines(auditB).length;
    await session();
    await eventually(async () => assert.ok(auditLines(auditB).length > before, 'the running audit extension still records'));
    p.child.kill('SIGTERM');
    assert.equal((await p.exited).code, 0);
  });
});
