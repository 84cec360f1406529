import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { describe, test } from 'node:test';
import { packageRoot } from '../../src/protocols/http/demo-page.js';
import { startTestServer } from '../helpers/server.js';

const ROOT = resolve(import.meta.dirname, '../..');

describe('demo page serving', () => {
  test('the package root is found from the source tree and from the build output', () => {
    assert.equal(packageRoot(), ROOT);
    assert.equal(packageRoot(join(ROOT, 'dist', 'protocols', 'http')), ROOT);
    assert.equal(packageRoot(join(ROOT, 'packages', 'client', 'dist')), ROOT, "the client package's own package.json is skipped");
  });

  test('demo: false serves nothing under /demo', async () => {
    const t = await startTestServer({ demo: false });
    try {
      assert.equal((await fetch(`${t.url}/demo`)).status, 404);
      assert.equal((await fetch(`${t.url}/demo/sdk/index.js`)).status, 404);
    } finally {
      await t.destroy();
    }
  });

  test('files outside the demo folders are not served', async () => {
    const t = await startTestServer();
    try {
      for (const path of ['/demo/%2e%2e%2fdemo-page.ts', '/demo/sdk/..%2F..%2Fpackage.json', '/demo/sdk/index.d.ts', '/demo/.hidden.js']) {
        assert.equal((await fetch(`${t.url}${path}`)).status, 404, path);
      }
    } finally {
      await t.destroy();
    }
  });
});
