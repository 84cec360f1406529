import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { extensionsOf } from '../../src/features/extensions/extensions-feature.js';
import { startTestServer } from '../helpers/server.js';
import { eventually } from '../helpers/webhook-receiver.js';
import { TestClient } from '../helpers/ws-client.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const PKG = join(ROOT, 'packages', 'extension-api');
const TSC = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

/** An extension author's folder: @presenced/extension-api (this package, built) installed in node_modules. */
describe('the extension-api package as an author installs it', () => {
  let dir: string;
  before(async () => {
    await run(process.execPath, [TSC, '-p', join(PKG, 'tsconfig.json')], { cwd: ROOT, timeout: 180_000 });
    dir = mkdtempSync(join(tmpdir(), 'presenced-ext-author-'));
    mkdirSync(join(dir, 'node_modules', '@presenced'), { recursive: true });
    symlinkSync(PKG, join(dir, 'node_modules', '@presenced', 'extension-api'), 'dir');
    writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'my-extensions', private: true, type: 'module' }));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('builds to an ES module with declarations, and has no runtime dependencies', () => {
    const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));
    assert.equal(pkg.name, '@presenced/extension-api');
    assert.equal(pkg.type, 'module');
    assert.deepEqual(pkg.dependencies ?? {}, {});
    for (const f of [pkg.exports['.'].import, pkg.exports['.'].types]) assert.ok(existsSync(join(PKG, f)), `${f} is built`);
  });

  test('the examples and a TypeScript extension type-check against it; mistakes are type errors', async () => {
    writeFileSync(
      join(dir, 'mine.ts'),
      `import { definePresenceExtension, type LeaveReason } from '@presenced/extension-api';
export default definePresenceExtension<{ greeting: string }>({
  name: 'mine',
  async onSessionClosed(session, reason: LeaveReason, user, ctx) {
    if (reason === 'timeout' && !user.online) await ctx.push.send(user.jid, { title: ctx.settings.greeting, body: session.resource });
    // @ts-expect-error the raw push token is not exposed to extensions
    user.externalTokens[0]?.token;
  },
  onUserPresence(user, change) {
    // @ts-expect-error a connect change has no reason
    if (change.type === 'connect') return change.reason;
    if (change.type === 'disconnect') { const r: LeaveReason = change.reason; return void r; }
  },
  // @ts-expect-error an unknown hook is a type error
  onUserPresense() {},
});
`,
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, noEmit: true, allowJs: true, checkJs: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2022'], types: [], skipLibCheck: false },
        files: ['mine.ts', 'audit-log.mjs', 'offline-follower-push.mjs'],
      }),
    );
    // The examples as an author would start from them: copied into the folder where the package is installed.
    for (const f of ['audit-log.mjs', 'offline-follower-push.mjs']) copyFileSync(join(ROOT, 'examples', 'extensions', f), join(dir, f));
    // The examples import node:fs: give the check Node's types without pulling in the whole repository.
    mkdirSync(join(dir, 'node_modules', '@types'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules', '@types', 'node'), join(dir, 'node_modules', '@types', 'node'), 'dir');
    const cfg = JSON.parse(readFileSync(join(dir, 'tsconfig.json'), 'utf8'));
    cfg.compilerOptions.types = ['node'];
    cfg.compilerOptions.typeRoots = [join(dir, 'node_modules', '@types')];
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(cfg));
    try {
      await run(process.execPath, [TSC, '-p', join(dir, 'tsconfig.json')], { cwd: dir, timeout: 120_000 });
    } catch (e) {
      assert.fail(`type check failed:\n${(e as { stdout?: string }).stdout ?? String(e)}`);
    }
  });

  test('an extension importing the package runs in the server, loaded by path and by package name', async () => {
    const byPath = join(dir, 'hello.mjs');
    writeFileSync(
      byPath,
      `import { definePresenceExtension, LEAVE_REASONS } from '@presenced/extension-api';
export default definePresenceExtension({
  name: 'hello',
  async onSessionClosed(session, reason, user, ctx) {
    if (LEAVE_REASONS.includes(reason)) await ctx.kv.set('bye:' + user.jid, reason + ' ' + session.resource + ' ' + session.protocol);
  },
});
`,
    );
    const data = mkdtempSync(join(tmpdir(), 'presenced-ext-pkg-'));
    // An extension published as a package, installed next to the server's extensions.
    const pkgDir = join(data, 'extensions', 'node_modules', 'presenced-ext-greeter');
    mkdirSync(join(pkgDir, 'dist'), { recursive: true });
    writeFileSync(join(pkgDir, 'package.json'), JSON.stringify({ name: 'presenced-ext-greeter', type: 'module', exports: { '.': { import: './dist/index.js' } } }));
    writeFileSync(join(pkgDir, 'dist', 'index.js'), `export default { name: 'greeter', async onUserPresence(user, change, ctx) { if (change.type === 'connect') await ctx.kv.set('hi', user.jid); } };\n`);
    const t = await startTestServer({ extensions_list: { hello: { module: byPath }, greeter: { module: 'presenced-ext-greeter' } } }, data);
    try {
      assert.deepEqual(
        extensionsOf(t.server.engine)!.list().map((e) => [e.name, e.state]),
        [
          ['greeter', 'running'],
          ['hello', 'running'],
        ],
      );
      await t.createAccount('alice@localhost');
      const { client } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'cli' });
      await client.request('bye');
      const db = t.server.engine.store.featureStorage().db;
      const kv = async (ext: string, key: string) => (await db.selectFrom('extension_kv').select('value').where('extension', '=', ext).where('key', '=', key).executeTakeFirst())?.value;
      await eventually(async () => assert.equal(await kv('hello', 'bye:alice@localhost'), JSON.stringify('graceful cli native')));
      await eventually(async () => assert.equal(await kv('greeter', 'hi'), JSON.stringify('alice@localhost')));
      // Each extension's keys are its own.
      assert.equal(await kv('greeter', 'bye:alice@localhost'), undefined);
    } finally {
      await t.destroy();
    }
  });
});
