import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { launchBrowser } from '../helpers/browser.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { TestClient } from '../helpers/ws-client.js';

// The fill colour of each default image, read at a pixel no status mark covers.
const FILL: Record<string, [number, number, number]> = {
  available: [0x2f, 0x9e, 0x44],
  chat: [0x0c, 0xa6, 0x78],
  away: [0xf0, 0x8c, 0x00],
  xa: [0xd9, 0x48, 0x0f],
  dnd: [0xe0, 0x31, 0x31],
  offline: [0x86, 0x8e, 0x96],
  forbidden: [0x49, 0x50, 0x57],
};
const SHOWS = ['available', 'chat', 'away', 'xa', 'dnd'] as const;

interface Drawn {
  id: string;
  complete: boolean;
  naturalWidth: number;
  rgba: number[];
}

/**
 * A page written for Openfire's plugin, served from another origin, with one <img> per status: every
 * icon must draw, in the colour of its status, and change after a presence change.
 */
describe('status images in a real browser', () => {
  let t: TestServer;
  let page: Server;
  let pageUrl: string;
  let browser: Browser;
  const clients: TestClient[] = [];

  const html = (): string => {
    const img = (id: string, jid: string, extra = '') =>
      `<img id="${id}" crossorigin="anonymous" src="${t.url}/plugins/presence/status?jid=${encodeURIComponent(jid)}${extra}">`;
    return (
      '<!doctype html><html><head><meta charset="utf-8"><title>team</title></head><body>' +
      SHOWS.map((s) => img(s, `${s}@localhost`)).join('') +
      img('offline', 'offline@localhost') +
      img('forbidden', 'hidden@localhost') +
      img('png', 'away@localhost', '&format=png') +
      img('png2x', 'away@localhost', '&format=png&scale=2') +
      '</body></html>'
    );
  };

  async function drawAll(): Promise<Map<string, Drawn>> {
    const context = await browser.newContext(); // a fresh HTTP cache, as a later visit after max-age would see
    try {
      const p = await context.newPage();
      await p.goto(pageUrl, { waitUntil: 'load' });
      const drawn = await p.evaluate(() =>
        [...document.images].map((im) => {
          const c = document.createElement('canvas');
          c.width = im.naturalWidth;
          c.height = im.naturalHeight;
          const g = c.getContext('2d')!;
          g.drawImage(im, 0, 0);
          // Pixel (8, 13) of a 16-unit icon: inside the disc, outside every mark.
          const k = im.naturalWidth / 16;
          return { id: im.id, complete: im.complete, naturalWidth: im.naturalWidth, rgba: [...g.getImageData(Math.floor(8 * k), Math.floor(13 * k), 1, 1).data] };
        }),
      );
      return new Map(drawn.map((d) => [d.id, d]));
    } finally {
      await context.close();
    }
  }

  function assertColour(d: Drawn | undefined, word: string): void {
    assert.ok(d, word);
    const [r, g, b, a] = d.rgba;
    const [er, eg, eb] = FILL[word]!;
    assert.equal(a, 255, `${d.id}: opaque`);
    for (const [got, want] of [[r, er], [g, eg], [b, eb]] as const) assert.ok(Math.abs(got! - want) <= 3, `${d.id}: ${d.rgba} is not ${word}'s ${FILL[word]}`);
  }

  before(async () => {
    t = await startTestServer({ public_presence_default: true });
    for (const s of [...SHOWS, 'offline']) await t.createAccount(`${s}@localhost`);
    await t.createAccount('hidden@localhost');
    assert.equal((await t.admin('PATCH', '/accounts/hidden@localhost/settings', { publicPresence: false })).status, 200);
    for (const s of SHOWS) {
      const { client } = await TestClient.login(t.wsUrl, `${s}@localhost`);
      await client.request('presence', { show: s });
      clients.push(client);
    }
    page = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(html());
    });
    await new Promise<void>((resolve) => page.listen(0, '127.0.0.1', resolve));
    pageUrl = `http://127.0.0.1:${(page.address() as AddressInfo).port}/`;
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    await new Promise((resolve) => page?.close(resolve));
    for (const c of clients) await c.close();
    await t?.destroy();
  });

  test('every image renders in the colour of its status, and changes after a presence change', { timeout: 60_000 }, async () => {
    const first = await drawAll();
    assert.equal(first.size, 9);
    for (const d of first.values()) {
      assert.ok(d.complete, d.id);
      assert.ok(d.naturalWidth > 0, `${d.id} did not render`);
    }
    // Chromium asks for SVG, drawn at its 16 CSS pixels; the PNGs are 16 and 32 pixels.
    for (const s of SHOWS) assert.equal(first.get(s)!.naturalWidth, 16);
    assert.equal(first.get('png')!.naturalWidth, 16);
    assert.equal(first.get('png2x')!.naturalWidth, 32);
    for (const word of [...SHOWS, 'offline', 'forbidden']) assertColour(first.get(word), word);
    assertColour(first.get('png'), 'away');
    assertColour(first.get('png2x'), 'away');
    assert.equal(new Set([...SHOWS, 'offline', 'forbidden'].map((w) => first.get(w)!.rgba.join())).size, 7, 'seven distinct colours');

    // "available" goes dnd and "dnd" goes offline; the next load of the same page shows it.
    await clients[0]!.request('presence', { show: 'dnd' });
    const watcher = clients[1]!;
    await watcher.request('subscribe', { jid: 'dnd@localhost' });
    await clients[4]!.request('approve', { jid: 'chat@localhost' });
    await watcher.presenceOf('dnd@localhost', (p) => p.online === true);
    await clients[4]!.close();
    await watcher.presenceOf('dnd@localhost', (p) => p.online === false);
    const second = await drawAll();
    assertColour(second.get('available'), 'dnd');
    assertColour(second.get('dnd'), 'offline');
    assertColour(second.get('away'), 'away');
  });
});
