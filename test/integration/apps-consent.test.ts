import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pairwiseId } from '../../src/features/apps/secrets.js';
import { authorizeUrl, basic, Browserless, consent, formFields, pkce, registerApp, tokenRequest, type RegisteredApp } from '../helpers/consent-flow.js';
import { appsKeysOf } from '../helpers/secrets.js';
import { startTestServer, type SqlValue, type TestServer } from '../helpers/server.js';
import { TestClient } from '../helpers/ws-client.js';

const CB = 'http://127.0.0.1:8123/cb';
const OTHER_CB = 'https://chess.example/callback';

function serverPairwise(t: TestServer, appId: string, jid: string): string {
  return pairwiseId(appsKeysOf(t).pairwise, appId, jid);
}

async function userinfo(t: TestServer, accessToken: string): Promise<{ status: number; body: any; challenge: string | null }> {
  const res = await fetch(`${t.url}/oauth/userinfo`, { headers: { authorization: `Bearer ${accessToken}` } });
  return { status: res.status, body: await res.json(), challenge: res.headers.get('www-authenticate') };
}

/** The whole flow for `jid`: consent (Allow), then the code exchanged; the token response. */
async function grantAndExchange(t: TestServer, app: RegisteredApp, jid: string, pw: string, scope = 'presence'): Promise<any> {
  const { verifier, challenge } = pkce();
  const back = await consent(new Browserless(t.url), { clientId: app.id, redirectUri: CB, challenge, method: 'S256', scope, state: 'st-1' }, jid, pw);
  assert.equal(back.origin + back.pathname, CB);
  assert.equal(back.searchParams.get('state'), 'st-1');
  const code = back.searchParams.get('code');
  assert.ok(code);
  const tok = await tokenRequest(t, app, { grant_type: 'authorization_code', code, redirect_uri: CB, code_verifier: verifier });
  assert.equal(tok.status, 200, JSON.stringify(tok.body));
  return tok.body;
}

function tableCount(t: TestServer, sql: string, ...args: SqlValue[]): number {
  return (t.sql(sql, ...args)[0] as { n: number }).n;
}

describe('apps: consent, grants and tokens', () => {
  let t: TestServer;
  let chess: RegisteredApp;
  let go: RegisteredApp;
  before(async () => {
    t = await startTestServer();
    await t.createAccount('dev@localhost', 'dev-pw');
    await t.createAccount('alice@localhost', 'alice-pw');
    await t.createAccount('bob@localhost', 'bob-pw');
    chess = await registerApp(t, 'dev@localhost', 'dev-pw', [CB, OTHER_CB]);
    go = await registerApp(t, 'dev@localhost', 'dev-pw', [CB], 'Go Club');
  });
  after(async () => {
    await t?.destroy();
  });

  test('the metadata (RFC 8414) names the endpoints and S256 only', async () => {
    const res = await fetch(`${t.url}/.well-known/oauth-authorization-server`);
    assert.equal(res.status, 200);
    const m = (await res.json()) as any;
    assert.equal(m.issuer, t.url);
    assert.equal(m.authorization_endpoint, `${t.url}/oauth/authorize`);
    assert.equal(m.token_endpoint, `${t.url}/oauth/token`);
    assert.equal(m.revocation_endpoint, `${t.url}/oauth/revoke`);
    assert.deepEqual(m.code_challenge_methods_supported, ['S256']);
    assert.deepEqual(m.scopes_supported, ['presence', 'presence.status']);
  });

  test('the token carries the pairwise id: different in two apps, the same in one app across two grants', async () => {
    const a1 = await grantAndExchange(t, chess, 'alice@localhost', 'alice-pw');
    const a2 = await grantAndExchange(t, chess, 'alice@localhost', 'alice-pw', 'presence presence.status');
    const b1 = await grantAndExchange(t, go, 'alice@localhost', 'alice-pw');
    assert.equal(a1.token_type, 'Bearer');
    assert.equal(a1.scope, 'presence');
    assert.equal(a2.scope, 'presence presence.status');
    assert.ok(a1.refresh_token);
    assert.equal(a1.presence_uid, a2.presence_uid);
    assert.equal(a1.presence_uid, serverPairwise(t, chess.id, 'alice@localhost'));
    assert.notEqual(b1.presence_uid, a1.presence_uid);
    assert.equal(b1.presence_uid, serverPairwise(t, go.id, 'alice@localhost'));
    assert.equal((await userinfo(t, a1.access_token)).body.presence_uid, a1.presence_uid);
    // Stored hashed: neither the code nor the tokens are in the database as given.
    assert.equal(tableCount(t, 'select count(*) n from oauth_tokens where token_hash = ? or token_hash = ?', a1.access_token, a1.refresh_token), 0);
    assert.ok(tableCount(t, 'select count(*) n from oauth_tokens where app_id = ?', chess.id) >= 4);
  });

  test('refresh tokens rotate, and a rotated one used again ends the whole family', async () => {
    const first = await grantAndExchange(t, chess, 'bob@localhost', 'bob-pw');
    const second = await tokenRequest(t, chess, { grant_type: 'refresh_token', refresh_token: first.refresh_token });
    assert.equal(second.status, 200, JSON.stringify(second.body));
    assert.notEqual(second.body.refresh_token, first.refresh_token);
    assert.equal(second.body.presence_uid, first.presence_uid);
    assert.equal((await userinfo(t, second.body.access_token)).status, 200);
    const replay = await tokenRequest(t, chess, { grant_type: 'refresh_token', refresh_token: first.refresh_token });
    assert.equal(replay.status, 400);
    assert.equal(replay.body.error, 'invalid_grant');
    assert.equal((await userinfo(t, second.body.access_token)).status, 401);
    assert.equal((await tokenRequest(t, chess, { grant_type: 'refresh_token', refresh_token: second.body.refresh_token })).status, 400);
  });

  test('unknown app, and redirect URIs not registered exactly, get our error page and no redirect', async () => {
    const { challenge } = pkce();
    const cases = [
      { clientId: 'no-such-app', redirectUri: CB },
      { clientId: chess.id, redirectUri: 'https://evil.example/cb' },
      { clientId: chess.id, redirectUri: 'http://127.0.0.1:8123/cb/more' },
      { clientId: chess.id, redirectUri: 'http://127.0.0.1:8123/cb#frag' },
      { clientId: chess.id, redirectUri: 'http://127.0.0.1:8123/cb?x=1' },
      { clientId: chess.id, redirectUri: 'http://127.0.0.1:8124/cb' },
      { clientId: chess.id, redirectUri: 'http://127.0.0.1:8123/CB' },
      { clientId: chess.id, redirectUri: '//evil.example/cb' },
    ];
    for (const c of cases) {
      const res = await fetch(`${t.url}${authorizeUrl({ ...c, challenge, method: 'S256' })}`, { redirect: 'manual' });
      assert.equal(res.status, 400, c.redirectUri);
      assert.equal(res.headers.get('location'), null);
      assert.match(res.headers.get('content-type') ?? '', /text\/html/);
      assert.match(await res.text(), c.clientId === 'no-such-app' ? /unknown app/ : /not registered/);
    }
    // The seed's URL shape, with the same rule.
    const seed = await fetch(`${t.url}/${chess.id}/grant?redirect=${encodeURIComponent('https://evil.example/cb')}`, { redirect: 'manual' });
    assert.equal(seed.status, 400);
    assert.equal(seed.headers.get('location'), null);
    assert.equal((await fetch(`${t.url}/nope/grant?redirect=${encodeURIComponent(CB)}`, { redirect: 'manual' })).status, 400);
    const ok = await fetch(`${t.url}/${chess.id}/grant?redirect=${encodeURIComponent(CB)}&state=s&code_challenge=${challenge}&code_challenge_method=S256`, { redirect: 'manual' });
    assert.equal(ok.status, 302);
    const loc = new URL(ok.headers.get('location') as string, t.url);
    assert.equal(loc.pathname, '/oauth/authorize');
    assert.equal(loc.searchParams.get('client_id'), chess.id);
    assert.equal(loc.searchParams.get('redirect_uri'), CB);
    assert.equal(loc.searchParams.get('code_challenge'), challenge);
  });

  test('missing PKCE and plain PKCE are sent back to the app as invalid_request, with the state', async () => {
    for (const p of [{}, { challenge: 'x'.repeat(43), method: 'plain' }, { challenge: 'x'.repeat(43) }]) {
      const res = await fetch(`${t.url}${authorizeUrl({ clientId: chess.id, redirectUri: CB, state: 'st-9', ...p })}`, { redirect: 'manual' });
      assert.equal(res.status, 303);
      const loc = new URL(res.headers.get('location') as string);
      assert.equal(loc.origin + loc.pathname, CB);
      assert.equal(loc.searchParams.get('error'), 'invalid_request');
      assert.equal(loc.searchParams.get('state'), 'st-9');
      assert.equal(loc.searchParams.get('code'), null);
    }
  });

  test('a wrong client secret, a wrong verifier, and a replayed code are refused; the replay revokes what the code gave', async () => {
    const { verifier, challenge } = pkce();
    const p = { clientId: chess.id, redirectUri: CB, challenge, method: 'S256' };
    const code1 = (await consent(new Browserless(t.url), p, 'alice@localhost', 'alice-pw')).searchParams.get('code') as string;
    const wrongSecret = await tokenRequest(t, { id: chess.id, clientSecret: 'pcs_wrong' }, { grant_type: 'authorization_code', code: code1, redirect_uri: CB, code_verifier: verifier });
    assert.equal(wrongSecret.status, 401);
    assert.equal(wrongSecret.body.error, 'invalid_client');
    const otherApp = await tokenRequest(t, go, { grant_type: 'authorization_code', code: code1, redirect_uri: CB, code_verifier: verifier });
    assert.equal(otherApp.body.error, 'invalid_grant');
    const wrongVerifier = await tokenRequest(t, chess, { grant_type: 'authorization_code', code: code1, redirect_uri: CB, code_verifier: pkce().verifier });
    assert.equal(wrongVerifier.status, 400);
    assert.equal(wrongVerifier.body.error, 'invalid_grant');
    // A failed verification consumed the code (no online guessing of verifiers).
    assert.equal((await tokenRequest(t, chess, { grant_type: 'authorization_code', code: code1, redirect_uri: CB, code_verifier: verifier })).body.error, 'invalid_grant');

    const code2 = (await consent(new Browserless(t.url), p, 'alice@localhost', 'alice-pw')).searchParams.get('code') as string;
    const wrongRedirect = await tokenRequest(t, chess, { grant_type: 'authorization_code', code: code2, redirect_uri: OTHER_CB, code_verifier: verifier });
    assert.equal(wrongRedirect.status, 400);
    const code3 = (await consent(new Browserless(t.url), p, 'alice@localhost', 'alice-pw')).searchParams.get('code') as string;
    const first = await tokenRequest(t, chess, { grant_type: 'authorization_code', code: code3, redirect_uri: CB, code_verifier: verifier });
    assert.equal(first.status, 200);
    assert.equal((await userinfo(t, first.body.access_token)).status, 200);
    const replay = await tokenRequest(t, chess, { grant_type: 'authorization_code', code: code3, redirect_uri: CB, code_verifier: verifier });
    assert.equal(replay.status, 400);
    assert.equal(replay.body.error, 'invalid_grant');
    const after = await userinfo(t, first.body.access_token);
    assert.equal(after.status, 401);
    assert.match(after.challenge ?? '', /invalid_token/);
    assert.equal((await tokenRequest(t, chess, { grant_type: 'refresh_token', refresh_token: first.body.refresh_token })).status, 400);
  });

  test('the forms refuse a missing or foreign CSRF token', async () => {
    const { challenge } = pkce();
    const p = { clientId: chess.id, redirectUri: CB, challenge, method: 'S256' };
    const b = new Browserless(t.url);
    const signIn = formFields(await (await b.get(authorizeUrl(p))).text());
    const { csrf: _csrf, ...noCsrf } = signIn;
    assert.equal((await b.post('/oauth/login', { ...noCsrf, jid: 'alice@localhost', password: 'alice-pw' })).status, 403);
    // Another visitor's token does not fit this session.
    const other = new Browserless(t.url);
    const otherFields = formFields(await (await other.get(authorizeUrl(p))).text());
    assert.equal((await b.post('/oauth/login', { ...signIn, csrf: otherFields.csrf as string, jid: 'alice@localhost', password: 'alice-pw' })).status, 403);
    // Signed in, the consent form too.
    const signed = await b.post('/oauth/login', { ...signIn, jid: 'alice@localhost', password: 'alice-pw' });
    assert.equal(signed.status, 303);
    const consentFields = formFields(await (await b.get(signed.headers.get('location') as string)).text());
    const { csrf: _c2, ...consentNoCsrf } = consentFields;
    const res = await b.post('/oauth/authorize', { ...consentNoCsrf, decision: 'allow' });
    assert.equal(res.status, 403);
    assert.equal(res.headers.get('location'), null);
    // The signed-out session's token is not the signed-in session's.
    assert.equal((await b.post('/oauth/authorize', { ...consentNoCsrf, csrf: signIn.csrf as string, decision: 'allow' })).status, 403);
    // Without the cookie at all.
    assert.equal((await new Browserless(t.url).post('/oauth/authorize', { ...consentFields, decision: 'allow' })).status, 403);
  });

  test('a wrong password is answered on the page, and nothing is issued', async () => {
    const { challenge } = pkce();
    const b = new Browserless(t.url);
    const fields = formFields(await (await b.get(authorizeUrl({ clientId: chess.id, redirectUri: CB, challenge, method: 'S256' }))).text());
    const res = await b.post('/oauth/login', { ...fields, jid: 'alice@localhost', password: 'wrong' });
    assert.equal(res.status, 401);
    assert.match(await res.text(), /wrong address or password/);
  });

  test('apps.revoke: answered, then the token is refused at once; apps.list and /api/v1/me/apps show the grants', async () => {
    await t.createAccount('carol@localhost', 'carol-pw');
    const tok = await grantAndExchange(t, chess, 'carol@localhost', 'carol-pw', 'presence.status');
    await grantAndExchange(t, go, 'carol@localhost', 'carol-pw');
    const { client } = await TestClient.login(t.wsUrl, 'carol@localhost', 'carol-pw');
    try {
      const listed = await client.request('apps.list');
      assert.deepEqual(
        listed.apps.map((a: any) => [a.app, a.name, a.verifiedDomain, a.scopes]),
        [
          [chess.id, 'Chess Club', null, ['presence', 'presence.status']],
          [go.id, 'Go Club', null, ['presence']],
        ],
      );
      assert.ok(!Number.isNaN(Date.parse(listed.apps[0].grantedAt)));
      const rest = await fetch(`${t.url}/api/v1/me/apps`, { headers: { authorization: basic('carol@localhost', 'carol-pw') } });
      assert.equal(rest.status, 200);
      assert.equal(((await rest.json()) as any).apps.length, 2);

      assert.equal((await userinfo(t, tok.access_token)).status, 200);
      assert.deepEqual(await client.request('apps.revoke', { app: chess.id }), { app: chess.id, revoked: true });
      assert.equal((await userinfo(t, tok.access_token)).status, 401);
      assert.equal((await tokenRequest(t, chess, { grant_type: 'refresh_token', refresh_token: tok.refresh_token })).status, 400);
      assert.deepEqual((await client.request('apps.list')).apps.map((a: any) => a.app), [go.id]);
      await assert.rejects(client.request('apps.revoke', { app: chess.id }), /not-found|granted/);
      await assert.rejects(client.request('apps.revoke', {}), /bad-request|app id/);

      const del = await fetch(`${t.url}/api/v1/me/apps/${go.id}`, { method: 'DELETE', headers: { authorization: basic('carol@localhost', 'carol-pw') } });
      assert.equal(del.status, 204);
      assert.deepEqual((await client.request('apps.list')).apps, []);
      assert.equal((await fetch(`${t.url}/api/v1/me/apps/${go.id}`, { method: 'DELETE', headers: { authorization: basic('carol@localhost', 'carol-pw') } })).status, 404);
      assert.equal((await fetch(`${t.url}/api/v1/me/apps`)).status, 401);
    } finally {
      await client.close();
    }
  });

  test('RFC 7009 revocation by the app ends the token; another app cannot revoke it', async () => {
    const tok = await grantAndExchange(t, chess, 'bob@localhost', 'bob-pw');
    const revoke = (app: RegisteredApp, token: string) =>
      fetch(`${t.url}/oauth/revoke`, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(app.id, app.clientSecret) },
        body: new URLSearchParams({ token }).toString(),
      });
    assert.equal((await revoke(go, tok.access_token)).status, 200);
    assert.equal((await userinfo(t, tok.access_token)).status, 200);
    assert.equal((await revoke({ id: chess.id, clientSecret: 'pcs_wrong' }, tok.access_token)).status, 401);
    assert.equal((await revoke(chess, tok.refresh_token)).status, 200);
    assert.equal((await userinfo(t, tok.access_token)).status, 401);
    assert.equal((await revoke(chess, 'never-issued')).status, 200);
  });

  test('deleting an account removes its grants and its tokens stop working', async () => {
    await t.createAccount('dave@localhost', 'dave-pw');
    const tok = await grantAndExchange(t, chess, 'dave@localhost', 'dave-pw');
    assert.equal((await t.admin('DELETE', '/accounts/dave@localhost')).status, 204);
    // The removal follows the account.deleted event; wait for its effect, not a clock.
    for (let i = 0; tableCount(t, "select count(*) n from grants where account = 'dave@localhost'") > 0; i++) {
      assert.ok(i < 1000, 'grants still there');
      await new Promise((r) => setImmediate(r));
    }
    assert.equal((await userinfo(t, tok.access_token)).status, 401);
  });

  test('deleting an app deletes its grants and tokens with it', async () => {
    const doomed = await registerApp(t, 'dev@localhost', 'dev-pw', [CB], 'Doomed');
    const tok = await grantAndExchange(t, doomed, 'alice@localhost', 'alice-pw');
    const del = await fetch(`${t.url}/api/v1/apps/${doomed.id}`, { method: 'DELETE', headers: { authorization: basic('dev@localhost', 'dev-pw') } });
    assert.equal(del.status, 204);
    assert.equal(tableCount(t, 'select count(*) n from grants where app_id = ?', doomed.id), 0);
    assert.equal(tableCount(t, 'select count(*) n from oauth_tokens where app_id = ?', doomed.id), 0);
    assert.equal((await userinfo(t, tok.access_token)).status, 401);
  });
});
