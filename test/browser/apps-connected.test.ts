import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { appsOf, type AppsRuntime } from '../../src/features/apps/apps-feature.js';
import { launchBrowser } from '../helpers/browser.js';
import { Browserless, formFields, registerApp, type RegisteredApp } from '../helpers/consent-flow.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Generous: two cores shared with other test runs. Every wait ends on the page's state, not a clock. */
const WAIT = { timeout: 30_000 };

/** Another site: a page that frames ours, and a page that posts a revocation to us without the CSRF token. */
class OtherSite {
  framed = '';
  revokeTarget = '';
  appId = '';
  readonly server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', this.origin);
    if (url.pathname === '/frame') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<iframe id="f" src="${this.framed}" width="600" height="400"></iframe>`);
      return;
    }
    if (url.pathname === '/attack') {
      // A classic CSRF: a form of this site, submitted by its own script, aimed at our revoke route.
      res
        .writeHead(200, { 'content-type': 'text/html' })
        .end(
          `<form id="f" method="post" action="${this.revokeTarget}"><input type="hidden" name="app" value="${this.appId}">` +
            `<input type="hidden" name="csrf" value="${url.searchParams.get('csrf') ?? ''}"></form><script>document.getElementById('f').submit()</script>`,
        );
      return;
    }
    res.writeHead(404).end();
  });
  origin = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }
}

describe('the connected apps page in Chromium', () => {
  let t: TestServer;
  let rt: AppsRuntime;
  let browser: Browser;
  let site: OtherSite;
  let chess: RegisteredApp;
  let go: RegisteredApp;
  let chat: RegisteredApp;

  before(async () => {
    t = await startTestServer();
    await t.createAccount('dev@localhost', 'dev-pw');
    await t.createAccount('alice@localhost', 'alice-pw');
    site = new OtherSite();
    await site.start();
    // App names are chosen by whoever registers the app: this one tries markup.
    chess = await registerApp(t, 'dev@localhost', 'dev-pw', ['https://chess.example/cb'], 'Chess <b>Club</b><img src=x>');
    go = await registerApp(t, 'dev@localhost', 'dev-pw', ['https://go.example/cb'], 'Go Club');
    chat = await registerApp(t, 'dev@localhost', 'dev-pw', ['https://chat.example/cb'], 'Chat & "Co"');
    rt = appsOf(t.server.engine)!;
    await rt.grants.grant(chess.id, 'alice@localhost', ['presence', 'presence.status']);
    await rt.grants.grant(go.id, 'alice@localhost', ['presence']);
    await rt.grants.grant(chat.id, 'alice@localhost', ['presence']);
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await new Promise((r) => site?.server.close(r));
    await t?.destroy();
  });

  /** Opens the page signed out, signs in there, and is back on the list. */
  async function signIn(context: BrowserContext): Promise<Page> {
    const page = await context.newPage();
    await page.goto(`${t.url}/oauth/apps`);
    await page.waitForSelector('#signin', WAIT);
    await page.fill('#signin input[name=jid]', 'alice@localhost');
    await page.fill('#signin input[name=password]', 'alice-pw');
    await Promise.all([page.waitForURL(`${t.url}/oauth/apps`, WAIT), page.click('#signin button[type=submit]')]);
    await page.waitForSelector('#who', WAIT);
    return page;
  }

  const row = (id: string) => `li.app[data-app="${id}"]`;

  test('a signed-out visit signs in and comes back; the list shows each app, escaped; Revoke removes it and stops the grant', async () => {
    const context = await browser.newContext();
    const errors: string[] = [];
    try {
      const page = await signIn(context);
      page.on('pageerror', (e) => errors.push(e.message));
      assert.equal(await page.textContent('#who'), 'alice@localhost');
      assert.equal(await page.locator('li.app').count(), 3);

      // The hostile name is text: no <b> and no <img> from it anywhere on the page.
      assert.equal(await page.textContent(`${row(chess.id)} .name`), 'Chess <b>Club</b><img src=x>');
      assert.equal(await page.$('li.app b'), null);
      assert.equal(await page.$('img'), null);
      assert.equal(await page.textContent(`${row(chat.id)} .name`), 'Chat & "Co"');
      assert.match((await page.textContent(`${row(chess.id)} .domain-line`)) ?? '', /unverified/i);
      assert.equal(await page.textContent(`${row(chess.id)} .scopes`), 'Sees when you are online, away or busy, and your status text and last seen');
      assert.equal(await page.textContent(`${row(go.id)} .scopes`), 'Sees when you are online, away or busy');
      const granted = await page.getAttribute(`${row(go.id)} .granted time`, 'datetime');
      assert.ok(granted !== null && Math.abs(Date.parse(granted) - Date.now()) < 120_000, `granted at ${granted}`);
      assert.match((await page.textContent(`${row(go.id)} .granted`)) ?? '', /^Allowed \d{4}-\d\d-\d\d \d\d:\d\d UTC$/);
      assert.equal(await page.textContent(`${row(go.id)} .delivery`), 'Last update sent: never');

      await Promise.all([page.waitForURL(/\/oauth\/apps\?revoked=/, WAIT), page.click(`${row(chess.id)} button[type=submit]`)]);
      await page.waitForSelector('#done', WAIT);
      assert.equal(await page.textContent('#done'), 'Chess <b>Club</b><img src=x> can no longer see your presence.');
      assert.equal(await page.$(row(chess.id)), null);
      assert.ok(await page.$(row(go.id)));
      assert.equal(await rt.grants.isGranted(chess.id, 'alice@localhost', 'presence'), false);
      assert.equal(await rt.grants.isGranted(go.id, 'alice@localhost', 'presence'), true);
      // The pairwise id is out of the index the webhooks and streams deliver from.
      assert.equal(rt.index.grantOf(chess.id, rt.service.pairwiseId(chess.id, 'alice@localhost')), undefined);

      // The same revocation again (a second tab, a double click) is a plain page, and nothing changes.
      // (The page's CSP allows no fetch from it: replay its form from here with the browser's cookie.)
      const csrf = (await page.getAttribute('input[name=csrf]', 'value')) as string;
      const cookie = (await context.cookies(`${t.url}/oauth/apps`)).map((c) => `${c.name}=${c.value}`).join('; ');
      const again = await fetch(`${t.url}/oauth/apps/revoke`, { method: 'POST', redirect: 'manual', headers: { cookie, 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ csrf, app: chess.id }).toString() });
      assert.equal(again.status, 404);
      assert.match(await again.text(), /no access to your presence/);

      // Reloading the confirmation URL still lists what is left; a crafted ?revoked= of a granted app says nothing.
      await page.goto(`${t.url}/oauth/apps?revoked=${encodeURIComponent(go.id)}`);
      assert.equal(await page.$('#done'), null);
      assert.ok(await page.$(row(go.id)));
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });

  test('another site cannot revoke: its POST carries the cookie (same site) but not the CSRF token, and is refused', async () => {
    const context = await browser.newContext();
    try {
      const page = await signIn(context);
      assert.ok(await page.$(row(go.id)));
      site.revokeTarget = `${t.url}/oauth/apps/revoke`;
      site.appId = go.id;
      for (const csrf of ['', 'forged-token']) {
        await page.goto(`${site.origin}/attack?csrf=${csrf}`);
        await page.waitForSelector('#error', WAIT);
        assert.equal(new URL(page.url()).pathname, '/oauth/apps/revoke');
        assert.match((await page.textContent('#error')) ?? '', /did not come from this site/);
        assert.equal(await rt.grants.isGranted(go.id, 'alice@localhost', 'presence'), true);
      }

      // Without a browser too: the right cookie with no token, or a token from another session.
      const b = new Browserless(t.url);
      const signInForm = formFields(await (await b.get('/oauth/apps')).text());
      assert.equal(signInForm.next, 'apps');
      // A wrong password gets the form again, still leading back to the list.
      const wrong = await b.post('/oauth/login', { ...signInForm, jid: 'alice@localhost', password: 'nope' });
      assert.equal(wrong.status, 401);
      const retry = await wrong.text();
      assert.match(retry, /wrong address or password/);
      assert.equal(formFields(retry).next, 'apps');
      const signed = await b.post('/oauth/login', { ...signInForm, jid: 'alice@localhost', password: 'alice-pw' });
      assert.equal(signed.status, 303);
      assert.equal(signed.headers.get('location'), '/oauth/apps');
      assert.equal((await b.post('/oauth/apps/revoke', { app: go.id })).status, 403);
      const other = new Browserless(t.url);
      const otherForm = formFields(await (await other.get('/oauth/apps')).text());
      assert.equal((await b.post('/oauth/apps/revoke', { app: go.id, csrf: otherForm.csrf as string })).status, 403);
      // Signed out, even with a valid token of that signed-out session.
      assert.equal((await other.post('/oauth/apps/revoke', { app: go.id, csrf: otherForm.csrf as string })).status, 403);
      assert.equal(await rt.grants.isGranted(go.id, 'alice@localhost', 'presence'), true);
    } finally {
      await context.close();
    }
  });

  test('sign out ends the session: the page asks to sign in again', async () => {
    const context = await browser.newContext();
    try {
      const page = await signIn(context);
      await Promise.all([page.waitForSelector('#signin', WAIT), page.click('#signout button[type=submit]')]);
      assert.equal(new URL(page.url()).pathname, '/oauth/apps');
      assert.equal(await page.$('#who'), null);
    } finally {
      await context.close();
    }
  });

  test('the page refuses to be framed by another site', async () => {
    const direct = await fetch(`${t.url}/oauth/apps`);
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('x-frame-options'), 'DENY');
    const csp = direct.headers.get('content-security-policy') ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /form-action 'self'/);
    assert.doesNotMatch(csp, /script-src/);

    const context = await browser.newContext();
    try {
      // Signed in, so the frame would show the list and its Revoke buttons if it were allowed.
      const page = await signIn(context);
      site.framed = `${t.url}/oauth/apps`;
      const refused = page.waitForEvent('console', { predicate: (m) => /frame-ancestors|X-Frame-Options/i.test(m.text()), ...WAIT });
      await page.goto(`${site.origin}/frame`);
      await refused;
      const frame = page.frames().find((f) => f !== page.mainFrame());
      assert.ok(frame);
      assert.equal(await frame.$('#apps'), null);
      assert.equal(await frame.$('#signin'), null);
    } finally {
      await context.close();
    }
  });
});
