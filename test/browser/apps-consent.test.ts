import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as oauth from 'oauth4webapi';
import type { Browser, Page } from 'playwright-core';
import { pairwiseId } from '../../src/features/apps/secrets.js';
import { launchBrowser } from '../helpers/browser.js';
import { registerApp, type RegisteredApp } from '../helpers/consent-flow.js';
import { appsKeysOf } from '../helpers/secrets.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** Generous: two cores shared with other test runs. Every wait ends on the page's state, not a clock. */
const WAIT = { timeout: 30_000 };

/**
 * The app's side: a local HTTP server with the redirect URI (each arrival resolves the next waiter)
 * and a page that tries to frame our consent page.
 */
class AppSite {
  private waiters: Array<(u: URL) => void> = [];
  framed = '';
  readonly server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', this.origin);
    if (url.pathname === '/cb') {
      this.waiters.shift()?.(url);
      res.writeHead(200, { 'content-type': 'text/html' }).end('<p id="done">back at the app</p>');
      return;
    }
    if (url.pathname === '/frame') {
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<iframe id="f" src="${this.framed}" width="600" height="400"></iframe>`);
      return;
    }
    res.writeHead(404).end();
  });
  origin = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  nextCallback(): Promise<URL> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }
}

describe('the consent page in Chromium, with oauth4webapi as the app', () => {
  let t: TestServer;
  let browser: Browser;
  let site: AppSite;
  let app: RegisteredApp;
  let as: oauth.AuthorizationServer;
  let client: oauth.Client;
  const redirectUri = () => `${site.origin}/cb`;
  const insecure = { [oauth.allowInsecureRequests]: true };

  before(async () => {
    t = await startTestServer();
    await t.createAccount('dev@localhost', 'dev-pw');
    await t.createAccount('alice@localhost', 'alice-pw');
    site = new AppSite();
    await site.start();
    app = await registerApp(t, 'dev@localhost', 'dev-pw', [redirectUri()], 'Chess <b>Club</b>');
    // The app configures itself from our RFC 8414 metadata.
    const issuer = new URL(t.url);
    as = await oauth.processDiscoveryResponse(issuer, await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure }));
    client = { client_id: app.id };
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await new Promise((r) => site?.server.close(r));
    await t?.destroy();
  });

  async function startFlow(page: Page, scope: string): Promise<{ verifier: string; state: string }> {
    const verifier = oauth.generateRandomCodeVerifier();
    const state = oauth.generateRandomState();
    const url = new URL(as.authorization_endpoint as string);
    url.search = new URLSearchParams({
      client_id: app.id,
      redirect_uri: redirectUri(),
      response_type: 'code',
      scope,
      state,
      code_challenge: await oauth.calculatePKCECodeChallenge(verifier),
      code_challenge_method: 'S256',
    }).toString();
    await page.goto(url.href);
    await page.fill('#signin input[name=jid]', 'alice@localhost');
    await page.fill('#signin input[name=password]', 'alice-pw');
    await Promise.all([page.waitForURL(/\/oauth\/authorize\?/, WAIT), page.click('#signin button[type=submit]')]);
    await page.waitForSelector('#consent', WAIT);
    return { verifier, state };
  }

  test('sign in, Allow, and the app exchanges the code for its pairwise id of the user', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      const { verifier, state } = await startFlow(page, 'presence presence.status');
      // The app's name is shown as text, never as markup; an unverified app says so.
      assert.equal(await page.textContent('#ask'), 'Chess <b>Club</b> wants to see when you are online, away or busy, and your status text and last seen');
      assert.equal(await page.$('#ask b'), null);
      assert.match((await page.textContent('#domain')) ?? '', /unverified/);
      const back = site.nextCallback();
      await page.click('#allow');
      await page.waitForSelector('#done', WAIT);
      const callback = await back;

      const params = oauth.validateAuthResponse(as, client, callback, state);
      const res = await oauth.authorizationCodeGrantRequest(as, client, oauth.ClientSecretBasic(app.clientSecret), params, redirectUri(), verifier, insecure);
      const tokens = await oauth.processAuthorizationCodeResponse(as, client, res);
      assert.equal(tokens.token_type, 'bearer');
      assert.equal(tokens.scope, 'presence presence.status');
      const keys = appsKeysOf(t);
      assert.equal(tokens.presence_uid, pairwiseId(keys.pairwise, app.id, 'alice@localhost'));
      assert.deepEqual(errors, []);
    } finally {
      await context.close();
    }
  });

  test('Deny sends the browser back to the app with access_denied and the state', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      const { state } = await startFlow(page, 'presence');
      assert.equal(await page.textContent('#ask'), 'Chess <b>Club</b> wants to see when you are online, away or busy');
      const back = site.nextCallback();
      await page.click('#deny');
      await page.waitForSelector('#done', WAIT);
      const callback = await back;
      assert.equal(callback.searchParams.get('error'), 'access_denied');
      assert.equal(callback.searchParams.get('state'), state);
      assert.equal(callback.searchParams.get('code'), null);
      assert.throws(() => oauth.validateAuthResponse(as, client, callback, state), (e: unknown) => e instanceof oauth.AuthorizationResponseError && e.error === 'access_denied');
    } finally {
      await context.close();
    }
  });

  test('the consent page refuses to be framed by another site', async () => {
    const url = `${t.url}/oauth/authorize?${new URLSearchParams({ client_id: app.id, redirect_uri: redirectUri(), response_type: 'code', code_challenge: 'x'.repeat(43), code_challenge_method: 'S256' })}`;
    const direct = await fetch(url);
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get('x-frame-options'), 'DENY');
    const csp = direct.headers.get('content-security-policy') ?? '';
    assert.match(csp, /frame-ancestors 'none'/);
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /form-action 'self'/);
    assert.doesNotMatch(csp, /script-src/);

    site.framed = url;
    const context = await browser.newContext();
    const page = await context.newPage();
    try {
      // Chromium reports the refusal on the console; wait for that, then look inside the frame.
      const refused = page.waitForEvent('console', { predicate: (m) => /frame-ancestors|X-Frame-Options/i.test(m.text()), ...WAIT });
      await page.goto(`${site.origin}/frame`);
      await refused;
      const frame = page.frames().find((f) => f !== page.mainFrame());
      assert.ok(frame);
      assert.equal(await frame.$('#signin'), null);
      assert.equal(await frame.$('#consent'), null);
    } finally {
      await context.close();
    }
  });
});
