import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startTestServer, type TestServer } from '../helpers/server.js';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../..');
const PKG = join(ROOT, 'packages', 'client');

/**
 * The package as an application would install it: a project whose node_modules holds
 * @presenced/client (this folder, built) and ws. The child process is asynchronous: the server runs in
 * this process and must keep answering.
 */
function project(): string {
  const dir = mkdtempSync(join(tmpdir(), 'presenced-client-app-'));
  mkdirSync(join(dir, 'node_modules', '@presenced'), { recursive: true });
  symlinkSync(PKG, join(dir, 'node_modules', '@presenced', 'client'), 'dir');
  symlinkSync(join(ROOT, 'node_modules', 'ws'), join(dir, 'node_modules', 'ws'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  return dir;
}

describe('the client package as published', () => {
  let t: TestServer;
  let dir: string;
  before(async () => {
    t = await startTestServer();
    await t.createAccount('alice@localhost', 'alice-secret');
    await t.createAccount('bob@localhost', 'bob-secret');
    dir = project();
  });
  after(async () => {
    rmSync(dir, { recursive: true, force: true });
    await t.destroy();
  });

  test('builds to ES modules with type declarations behind its exports', () => {
    const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));
    assert.equal(pkg.name, '@presenced/client');
    assert.equal(pkg.type, 'module');
    assert.deepEqual(pkg.dependencies ?? {}, {}, 'no runtime dependencies');
    for (const f of [pkg.exports['.'].import, pkg.exports['.'].types, pkg.types]) assert.ok(existsSync(join(PKG, f)), `${f} is built`);
    assert.match(readFileSync(join(PKG, 'dist', 'index.js'), 'utf8'), /^export \{ PresencedClient \} from '\.\/client\.js';/m);
  });

  test('its declarations type-check in a strict consumer without DOM or Node types', async () => {
    writeFileSync(
      join(dir, 'consumer.ts'),
      `import { PresencedClient, PresencedError, type ContactPresence, type RosterChange } from '@presenced/client';
const c = new PresencedClient({ url: 'ws://127.0.0.1:1/ws', jid: 'a@localhost', password: 'p', reconnect: { initialDelayMs: 100 } });
c.on('presence', (p: ContactPresence) => p.lastSeen?.toISOString());
c.on('roster', (r: RosterChange) => (r.kind === 'removed' ? r.jid : r.item.subscription));
c.on('error', (e: PresencedError) => e.code);
// @ts-expect-error an unknown event name is a type error
c.on('presense', () => {});
export {};
`,
    );
    writeFileSync(
      join(dir, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, noEmit: true, module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', lib: ['ES2022'], types: [] }, files: ['consumer.ts'] }),
    );
    await run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(dir, 'tsconfig.json')], { cwd: dir, timeout: 120_000 });
  });

  test('the README example runs as written', async () => {
    const readme = readFileSync(join(PKG, 'README.md'), 'utf8');
    const example = /## Example[\s\S]*?```js\n([\s\S]*?)```/.exec(readme)?.[1];
    assert.ok(example, 'the README has an example');
    writeFileSync(join(dir, 'example.mjs'), example);
    const { stdout } = await run(process.execPath, ['example.mjs'], { cwd: dir, timeout: 120_000, env: { ...process.env, PRESENCED_URL: t.wsUrl } });
    assert.match(stdout, /^bob@localhost: away lunch$/m);
    assert.match(stdout, /^alice sees bob: dnd, "In a meeting"$/m);
    assert.match(stdout, /^push tokens: unsupported$/m);
    // A second run starts from contacts who already see each other, and works the same.
    const again = await run(process.execPath, ['example.mjs'], { cwd: dir, timeout: 120_000, env: { ...process.env, PRESENCED_URL: t.wsUrl } });
    assert.match(again.stdout, /^alice sees bob: dnd, "In a meeting"$/m);
  });
});
