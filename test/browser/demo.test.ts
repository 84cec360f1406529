import assert from 'node:assert/strict';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser, Page } from 'playwright-core';
import { launchBrowser } from '../helpers/browser.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const OUT = join(process.cwd(), 'test-output');
/** Generous: two cores shared with other test runs. Every wait ends on the page's state, not a clock. */
const WAIT = { timeout: 30_000 };

async function signIn(page: Page, url: string, jid: string, password: string): Promise<void> {
  await page.goto(`${url}/demo`);
  await page.fill('#login-form input[name=jid]', jid);
  await page.fill('#login-form input[name=password]', password);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#app:not([hidden])', WAIT);
  assert.equal(await page.textContent('#me-jid'), jid);
}

describe('the live demo page in Chromium', () => {
  let t: TestServer;
  let browser: Browser;
  before(async () => {
    t = await startTestServer();
    await t.createAccount('alice@localhost', 'alice-pw');
    await t.createAccount('bob@localhost', 'bob-pw');
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    await t?.destroy();
  });

  test('the page and the SDK are served with UTF-8 content types', async () => {
    const page = await fetch(`${t.url}/demo`);
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('content-type'), 'text/html; charset=utf-8');
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'self'/);
    const sdk = await fetch(`${t.url}/demo/sdk/index.js`);
    assert.equal(sdk.status, 200);
    assert.equal(sdk.headers.get('content-type'), 'text/javascript; charset=utf-8');
    assert.match(await sdk.text(), /PresencedClient/);
    assert.equal((await fetch(`${t.url}/demo/demo.css`)).headers.get('content-type'), 'text/css; charset=utf-8');
    assert.equal((await fetch(`${t.url}/demo/..%2Fdemo-page.ts`)).status, 404);
    assert.equal((await fetch(`${t.url}/demo/sdk/index.d.ts`)).status, 404);
  });

  test('two people become contacts through the UI and see each other change live', async () => {
    const errors: string[] = [];
    const open = async () => {
      const context = await browser.newContext({ viewport: { width: 1100, height: 720 } });
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error') errors.push(m.text());
      });
      return page;
    };
    const alice = await open();
    const bob = await open();
    await signIn(alice, t.url, 'alice@localhost', 'alice-pw');
    await signIn(bob, t.url, 'bob@localhost', 'bob-pw');

    // Alice adds bob; bob sees the request and approves it.
    await alice.fill('#add-form input[name=jid]', 'bob@localhost');
    await alice.click('#add-form button[type=submit]');
    await alice.waitForSelector('#contacts li[data-jid="bob@localhost"][data-show="pending"]', WAIT);
    await bob.click('#requests li[data-jid="alice@localhost"] button.approve', WAIT);
    await bob.waitForSelector('#requests-card[hidden]', { ...WAIT, state: 'attached' });

    // Alice now sees bob online, with a green dot.
    const bobRow = '#contacts li[data-jid="bob@localhost"]';
    await alice.waitForSelector(`${bobRow}[data-show="available"]`, WAIT);
    const green = await alice.$eval(`${bobRow} .dot`, (e) => getComputedStyle(e).backgroundColor);
    assert.equal(green, 'rgb(45, 164, 78)');

    // Bob changes his presence; alice's page follows without a reload.
    await bob.selectOption('#presence-form select[name=show]', 'dnd');
    await bob.fill('#presence-form input[name=status]', 'In a meeting ☕');
    await bob.click('#presence-form button[type=submit]');
    await bob.waitForSelector('#my-dot.dnd', WAIT);
    await alice.waitForSelector(`${bobRow}[data-show="dnd"]`, WAIT);
    assert.equal(await alice.textContent(`${bobRow} .status-text`), 'In a meeting ☕');
    const red = await alice.$eval(`${bobRow} .dot`, (e) => getComputedStyle(e).backgroundColor);
    assert.equal(red, 'rgb(209, 36, 47)');

    mkdirSync(OUT, { recursive: true });
    await alice.screenshot({ path: join(OUT, 'demo-alice.png'), fullPage: true });
    await bob.screenshot({ path: join(OUT, 'demo-bob.png'), fullPage: true });

    // Bob signs out: alice sees him go grey at once (the client says goodbye).
    await bob.click('#sign-out');
    await alice.waitForSelector(`${bobRow}[data-show="offline"]`, WAIT);
    assert.match((await alice.textContent(`${bobRow} .status-text`)) ?? '', /In a meeting ☕ · last seen/);

    assert.deepEqual(errors, []);
  });

  test('a wrong password shows an error on the page', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${t.url}/demo`);
    await page.fill('#login-form input[name=jid]', 'alice@localhost');
    await page.fill('#login-form input[name=password]', 'nope');
    await page.click('#login-form button[type=submit]');
    await page.waitForSelector('#login-error:not([hidden])', WAIT);
    assert.equal(await page.textContent('#login-error'), 'Wrong account or password.');
    await context.close();
  });
});
