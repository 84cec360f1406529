import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, startTestServer } from '../helpers/server.js';

/**
 * `presenced app ...` run as a child process, from the sources (through tsx), against a real data
 * directory, with and without a server running on it.
 */

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'presenced-appcli-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

function cli(dataDir: string, args: string[]): Promise<Result> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PRESENCED_')) env[k] = v;
  Object.assign(env, { PRESENCED_DATA_DIR: dataDir, PRESENCED_LOG_LEVEL: 'silent' });
  const code = "import { main } from './src/cli.ts'; process.exitCode = await main(process.argv.slice(1));";
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (c) => resolve({ code: c, stdout, stderr }));
  });
}

const show = (r: Result) => `exit ${r.code}\n${r.stdout}\n${r.stderr}`;

describe('presenced app', () => {
  test('add, list, show and remove without a running server; clear errors with a non-zero exit', async () => {
    const dir = tempDir();
    const add = await cli(dir, ['app', 'add', '--name', 'Chess', '--homepage', 'https://chess.example/', '--redirect-uri', 'https://chess.example/cb', '--redirect-uri', 'http://127.0.0.1:9000/cb']);
    assert.equal(add.code, 0, show(add));
    const id = /created app (\S+) \(Chess\)/.exec(add.stdout)?.[1];
    assert.ok(id, show(add));
    assert.match(add.stdout, /client secret: +pcs_\S+ +\(shown only now/);
    assert.match(add.stdout, /webhook secret: whsec_/);
    assert.match(add.stdout, /domain proof: +serve "presence-verification=\S+" at https:\/\/chess.example\/__presence/);

    const list = await cli(dir, ['app', 'list']);
    assert.equal(list.code, 0, show(list));
    assert.match(list.stdout, new RegExp(`^${id}  admin  unverified  Chess$`, 'm'));

    const shown = await cli(dir, ['app', 'show', id]);
    assert.equal(shown.code, 0, show(shown));
    const app = JSON.parse(shown.stdout);
    assert.deepEqual(app.redirectUris, ['https://chess.example/cb', 'http://127.0.0.1:9000/cb']);
    assert.equal(app.owner, 'admin');
    assert.equal(app.clientSecret, undefined);

    const bad = await cli(dir, ['app', 'add', '--name', 'Evil', '--homepage', 'https://e.example/', '--redirect-uri', 'javascript:alert(1)']);
    assert.equal(bad.code, 1, show(bad));
    assert.match(bad.stderr, /redirect URI scheme "javascript:" is not allowed .*\(bad-request\)/);

    const missing = await cli(dir, ['app', 'add', '--name', 'NoRedirect', '--homepage', 'https://e.example/']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /redirectUris is required/);

    const manifest = join(dir, 'manifest.json');
    writeFileSync(manifest, JSON.stringify({ name: 'Go', start_url: 'https://go.example/', presence: { redirect_uris: ['https://go.example/cb'] } }));
    const fromManifest = await cli(dir, ['app', 'add', '--manifest', manifest]);
    assert.equal(fromManifest.code, 0, show(fromManifest));
    assert.match(fromManifest.stdout, /created app \S+ \(Go\)/);
    const noFile = await cli(dir, ['app', 'add', '--manifest', join(dir, 'nope.json')]);
    assert.equal(noFile.code, 1);
    assert.match(noFile.stderr, /cannot read manifest .*file not found/);
    writeFileSync(manifest, '{"name": ');
    const broken = await cli(dir, ['app', 'add', '--manifest', manifest]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /is not valid JSON/);

    const removed = await cli(dir, ['app', 'remove', id]);
    assert.equal(removed.code, 0, show(removed));
    assert.match(removed.stdout, new RegExp(`removed app ${id}`));
    const again = await cli(dir, ['app', 'remove', id]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no app .* \(not-found\)/);
    const showGone = await cli(dir, ['app', 'show', id]);
    assert.equal(showGone.code, 1);
    assert.match(showGone.stderr, /no such app/);

    const usage = await cli(dir, ['app', 'frob']);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /unknown app command "frob"/);
    const noId = await cli(dir, ['app', 'show']);
    assert.equal(noId.code, 2);
    assert.match(noId.stderr, /needs exactly one app id/);
  });

  test('with the server running, an app added by the CLI is there over REST at once', async () => {
    const dir = tempDir();
    const t = await startTestServer({}, dir);
    try {
      const add = await cli(dir, ['app', 'add', '--name', 'Live', '--homepage', 'https://live.example/', '--redirect-uri', 'https://live.example/cb']);
      assert.equal(add.code, 0, show(add));
      const id = /created app (\S+)/.exec(add.stdout)?.[1];
      const res = await fetch(`${t.url}/api/v1/apps/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(res.status, 200);
      assert.equal(((await res.json()) as { name: string }).name, 'Live');
    } finally {
      await t.stop();
    }
  });

  test('apps of an account removed while the server was stopped are deleted at the next start', async () => {
    const dir = tempDir();
    let t = await startTestServer({}, dir);
    await t.createAccount('carol@localhost');
    const res = await fetch(`${t.url}/api/v1/apps`, {
      method: 'POST',
      headers: { authorization: `Basic ${Buffer.from('carol@localhost:secret-pw').toString('base64')}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'Carol app', homepage: 'https://carol.example/', redirectUris: ['https://carol.example/cb'] }),
    });
    assert.equal(res.status, 201);
    const { id } = (await res.json()) as { id: string };
    await t.stop();
    const rm = await cli(dir, ['account', 'remove', 'carol@localhost']);
    assert.equal(rm.code, 0, show(rm));
    assert.match((await cli(dir, ['app', 'list'])).stdout, /Carol app/, 'still there before the server starts');
    t = await startTestServer({}, dir);
    try {
      const gone = await fetch(`${t.url}/api/v1/apps/${id}`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
      assert.equal(gone.status, 404);
    } finally {
      await t.stop();
    }
  });

  test('with apps: false the commands say the feature is off', async () => {
    const dir = tempDir();
    const env = await new Promise<Result>((resolve, reject) => {
      const code = "import { main } from './src/cli.ts'; process.exitCode = await main(process.argv.slice(1));";
      const e: NodeJS.ProcessEnv = {};
      for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('PRESENCED_')) e[k] = v;
      Object.assign(e, { PRESENCED_DATA_DIR: dir, PRESENCED_APPS: 'false' });
      const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, 'app', 'list'], { cwd: ROOT, env: e, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.on('error', reject);
      child.on('close', (c) => resolve({ code: c, stdout: '', stderr }));
    });
    assert.equal(env.code, 1);
    assert.match(env.stderr, /apps feature is turned off/);
  });
});
