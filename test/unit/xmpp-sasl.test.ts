import assert from 'node:assert/strict';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { deriveCredentials, verifyPasswordWithScram } from '../../src/engine/credentials.js';
import type { ScramKeys } from '../../src/ports/store.js';
import { SaslFailure, ScramMechanism, type SaslBackend } from '../../src/protocols/xmpp/sasl.js';

/** The client side of RFC 5802, written from the RFC, to check the server mechanism against. */
function scramClient(algo: 'sha1' | 'sha256', user: string, password: string) {
  const cnonce = randomBytes(12).toString('base64');
  const first = `n=${user},r=${cnonce}`;
  return {
    first: `n,,${first}`,
    final(serverFirst: string): { message: string; serverSignature: string } {
      const a = Object.fromEntries(serverFirst.split(',').map((p) => [p[0], p.slice(2)]));
      assert.ok(String(a.r).startsWith(cnonce));
      const salted = pbkdf2Sync(password, Buffer.from(String(a.s), 'base64'), Number(a.i), algo === 'sha1' ? 20 : 32, algo);
      const clientKey = createHmac(algo, salted).update('Client Key').digest();
      const storedKey = createHash(algo).update(clientKey).digest();
      const withoutProof = `c=biws,r=${a.r}`;
      const authMessage = `${first},${serverFirst},${withoutProof}`;
      const sig = createHmac(algo, storedKey).update(authMessage).digest();
      const proof = Buffer.from(clientKey.map((b, i) => b ^ (sig[i] as number)));
      const serverKey = createHmac(algo, salted).update('Server Key').digest();
      return { message: `${withoutProof},p=${proof.toString('base64')}`, serverSignature: createHmac(algo, serverKey).update(authMessage).digest('base64') };
    },
  };
}

async function backendFor(password: string): Promise<SaslBackend> {
  const creds = await deriveCredentials(password);
  return {
    domain: 'localhost',
    checkPassword: async () => 'alice@localhost',
    scramKeys: async (jid, algo): Promise<ScramKeys | null> => (jid === 'alice@localhost' ? (algo === 'sha1' ? creds.scramSha1 : creds.scramSha256) : null),
    fakeSalt: () => randomBytes(16).toString('base64'),
  };
}

describe('SCRAM (RFC 5802, RFC 7677) against the stored keys', () => {
  for (const algo of ['sha1', 'sha256'] as const) {
    test(`SCRAM-${algo.toUpperCase()}: the right password succeeds and the server proves itself`, async () => {
      const mech = new ScramMechanism(await backendFor('pässword'), algo);
      const c = scramClient(algo, 'alice', 'pässword');
      const s1 = await mech.step(Buffer.from(c.first));
      assert.equal(s1.done, false);
      const f = c.final((s1 as { challenge: string }).challenge);
      const s2 = await mech.step(Buffer.from(f.message));
      assert.ok(s2.done);
      assert.equal(s2.jid, 'alice@localhost');
      assert.equal(s2.additional, `v=${f.serverSignature}`);
    });

    test(`SCRAM-${algo.toUpperCase()}: a wrong password and an unknown user both fail with not-authorized`, async () => {
      for (const [user, pw] of [['alice', 'wrong'], ['nobody', 'pässword']] as const) {
        const mech = new ScramMechanism(await backendFor('pässword'), algo);
        const c = scramClient(algo, user, pw);
        const s1 = await mech.step(Buffer.from(c.first));
        const f = c.final((s1 as { challenge: string }).challenge);
        await assert.rejects(mech.step(Buffer.from(f.message)), (e: unknown) => e instanceof SaslFailure && e.condition === 'not-authorized');
      }
    });
  }

  test('channel binding (p=) and malformed messages are refused', async () => {
    const backend = await backendFor('pw');
    await assert.rejects(new ScramMechanism(backend, 'sha256').step(Buffer.from('p=tls-unique,,n=alice,r=abc')), (e: unknown) => e instanceof SaslFailure && e.condition === 'malformed-request');
    await assert.rejects(new ScramMechanism(backend, 'sha256').step(Buffer.from('garbage')), (e: unknown) => e instanceof SaslFailure && e.condition === 'malformed-request');
  });
});

describe('verifyPasswordWithScram (PLAIN checked against the SCRAM keys)', () => {
  test('accepts the password the keys were made from, refuses others', async () => {
    const creds = await deriveCredentials('Ünïcode pw');
    for (const algo of ['sha1', 'sha256'] as const) {
      const keys = (algo === 'sha1' ? creds.scramSha1 : creds.scramSha256) as ScramKeys;
      assert.equal(await verifyPasswordWithScram('Ünïcode pw', keys, algo), true);
      assert.equal(await verifyPasswordWithScram('Ünïcode pw ', keys, algo), false);
    }
  });
});
