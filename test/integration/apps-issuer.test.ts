import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';

/** GET of the RFC 8414 metadata with a chosen Host header (fetch would not let a test set it). */
function metadata(t: TestServer, host: string): Promise<{ status: number; body: any }> {
  const u = new URL(t.url);
  return new Promise((resolve, reject) => {
    const req = request({ hostname: u.hostname, port: u.port, path: '/.well-known/oauth-authorization-server', headers: { host } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    req.on('error', reject);
    req.end();
  });
}

const ENDPOINTS = { authorization_endpoint: '/oauth/authorize', token_endpoint: '/oauth/token', revocation_endpoint: '/oauth/revoke', userinfo_endpoint: '/oauth/userinfo' } as const;

describe('the OAuth issuer', () => {
  let configured: TestServer;
  let derived: TestServer;
  before(async () => {
    configured = await startTestServer({ public_url: 'https://presence.example/' });
    derived = await startTestServer();
  });
  after(async () => {
    await configured?.destroy();
    await derived?.destroy();
  });

  test('with public_url, the metadata publishes it as the issuer and the base of every endpoint, whatever Host the request names', async () => {
    for (const host of [new URL(configured.url).host, 'evil.example']) {
      const m = await metadata(configured, host);
      assert.equal(m.status, 200);
      assert.equal(m.body.issuer, 'https://presence.example');
      for (const [k, path] of Object.entries(ENDPOINTS)) assert.equal(m.body[k], `https://presence.example${path}`, `${k} (Host ${host})`);
    }
  });

  test('without it, the issuer is the origin the request reached (development only)', async () => {
    const m = await metadata(derived, 'dev.example:8080');
    assert.equal(m.status, 200);
    assert.equal(m.body.issuer, 'http://dev.example:8080');
    for (const [k, path] of Object.entries(ENDPOINTS)) assert.equal(m.body[k], `http://dev.example:8080${path}`, k);
  });

  test('the session cookie of our pages is Secure when public_url is https, even over a plain-http hop from a proxy', async () => {
    const cookieOf = async (t: TestServer) => (await fetch(`${t.url}/oauth/apps`, { redirect: 'manual' })).headers.get('set-cookie') ?? '';
    assert.match(await cookieOf(configured), /; Secure/);
    assert.doesNotMatch(await cookieOf(derived), /Secure/);
    assert.match(await cookieOf(derived), /HttpOnly; SameSite=Lax/);
  });
});
