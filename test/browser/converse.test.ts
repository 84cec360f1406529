import assert from 'node:assert/strict';
import { createReadStream, existsSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { extname, join, normalize } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { launchBrowser } from '../helpers/browser.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { TestClient } from '../helpers/ws-client.js';

/** The slice of Converse.js's API the page exposes as `window.__converse` that this test reads. */
interface ConverseWindow {
  __converse?: {
    api?: { connection?: { connected?(): boolean }; user?: { logout(): unknown } };
    state?: { roster?: { get(jid: string): { getStatus(): string } | undefined } };
  };
}

const DIST = join(import.meta.dirname, '../../node_modules/converse.js/dist');
const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.map': 'application/json; charset=utf-8',
};

function page(websocketUrl: string, jid: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="/dist/converse.min.css"></head><body>
<script type="module">
import '/dist/converse.min.js';
window.converse.plugins.add('presenced-test', { initialize() { window.__converse = this._converse; } });
window.converse.initialize({
  websocket_url: ${JSON.stringify(websocketUrl)},
  jid: ${JSON.stringify(jid)}, password: 'secret-pw', auto_login: true,
  discover_connection_methods: false, assets_path: '/dist/', whitelisted_plugins: ['presenced-test'],
  view_mode: 'fullscreen', play_sounds: false, show_desktop_notifications: false, loglevel: 'error',
  persistent_store: 'IndexedDB', clear_cache_on_logout: true,
});
</script></body></html>`;
}

/** Serves the test page and Converse.js's built files, as a web server in front of presenced would. */
function staticServer(html: string): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] as string;
    if (path === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
      return;
    }
    const file = normalize(join(DIST, path.replace(/^\/dist\//, '')));
    if (!file.startsWith(DIST) || !existsSync(file)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream' });
    createReadStream(file).pipe(res);
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const addr = server.address();
    resolve({ server, url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/` });
  }));
}

describe('Converse.js in Chromium over /xmpp-websocket', () => {
  let t: TestServer;
  let browser: Browser;
  let web: Server;
  let url: string;
  before(async () => {
    t = await startTestServer();
    await t.createAccount('alice@localhost');
    await t.createAccount('bob@localhost');
    // Make them contacts with the native protocol, as two users of another client would.
    const { client: a } = await TestClient.login(t.wsUrl, 'alice@localhost', 'secret-pw', { resource: 'setup' });
    const { client: b } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'setup' });
    await a.request('subscribe', { jid: 'bob@localhost' });
    await b.request('approve', { jid: 'alice@localhost' });
    await b.request('subscribe', { jid: 'alice@localhost' });
    await a.request('approve', { jid: 'bob@localhost' });
    await a.request('bye');
    await b.request('bye');
    ({ server: web, url } = await staticServer(page(`${t.url.replace(/^http/, 'ws')}/xmpp-websocket`, 'alice@localhost')));
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    web?.close();
    await t.destroy();
  });

  test('logs in with SCRAM, sees the presence of a native contact and is seen online by it', async () => {
    const { client: bob } = await TestClient.login(t.wsUrl, 'bob@localhost', 'secret-pw', { resource: 'phone', presence: { show: 'dnd', status: 'In a meeting' } });
    try {
      const ctx = await browser.newContext();
      const tab = await ctx.newPage();
      const errors: string[] = [];
      tab.on('pageerror', (e) => errors.push(String(e)));
      await tab.goto(url);
      await tab.waitForFunction(() => (window as unknown as ConverseWindow).__converse?.api?.connection?.connected?.() === true, undefined, { timeout: 60_000 });
      // Read from Converse's roster model, as its UI does (waitForFunction needs a synchronous predicate).
      const statusOf = (want: string) =>
        tab.waitForFunction((w) => (window as unknown as ConverseWindow).__converse?.state?.roster?.get('bob@localhost')?.getStatus() === w, want, { timeout: 60_000, polling: 100 });
      await statusOf('dnd');
      // Converse sent its initial presence before it could be told bob's: bob has heard alice come online.
      const seen = await bob.presenceOf('alice@localhost', (p) => p.online);
      assert.equal(seen.show, 'available');
      await bob.request('presence', { show: 'away', status: 'lunch' });
      await statusOf('away');
      assert.deepEqual(errors, []);
      // A logout closes the stream cleanly, so the session ends at once (a closed tab would leave it
      // resumable for the stream-management window).
      await tab.evaluate(() => (window as unknown as ConverseWindow).__converse?.api?.user?.logout());
      const off = await bob.presenceOf('alice@localhost', (p) => !p.online);
      assert.equal(off.online, false);
      await ctx.close();
    } finally {
      bob.ws.close();
    }
  });
});
