import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { grantRepository, type GrantRepository, type TokenRecord } from '../../src/features/apps/grant-repository.js';
import { APP_MIGRATIONS } from '../../src/features/apps/migrations.js';
import { appRepository, type AppRecord, type AppRepository } from '../../src/features/apps/repository.js';
import { contextCall } from '../../src/features/extensions/context.js';
import { EXTENSION_MIGRATIONS } from '../../src/features/extensions/migrations.js';
import { featureDb, type Dialect, type FeatureDb } from '../helpers/feature-db.js';
import { stopAllPrivateServices } from '../helpers/private-services.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The apps feature's repositories (apps, grants, codes, tokens) and the extensions' key-value store,
 * call by call on SQLite and on PostgreSQL: the same kysely code runs on both, so what differs is the
 * database (column types, foreign keys, text order).
 */

const T0 = 1_700_000_000_000;

const app = (id: string, owner: string, createdAt: number): AppRecord => ({
  id,
  owner,
  name: `App ${id}`,
  description: '',
  homepage: 'https://app.example/',
  iconUrl: null,
  redirectUris: ['https://app.example/cb'],
  webhookUrl: null,
  webhookFormat: 'extended',
  webhookEveryTransition: false,
  clientSecretHash: 'h',
  webhookSecret: 'whsec_x',
  domainKey: 'k',
  verifiedDomain: null,
  verifiedAt: null,
  createdAt,
  updatedAt: createdAt,
});

const token = (tokenHash: string, kind: TokenRecord['kind'], appId: string, account: string, family: string, expiresAt: number): TokenRecord => ({
  tokenHash,
  kind,
  appId,
  account,
  scopes: ['presence', 'presence.status'],
  family,
  expiresAt,
  usedAt: null,
});

let server: TestServer | undefined;
after(async () => {
  await server?.destroy();
  await stopAllPrivateServices();
});

for (const dialect of ['sqlite', 'postgres'] as const satisfies readonly Dialect[]) {
  describe(`apps and grants repositories (${dialect})`, () => {
    let d: FeatureDb;
    let apps: AppRepository;
    let grants: GrantRepository;
    before(async () => {
      d = await featureDb(dialect, [['apps', APP_MIGRATIONS]]);
      apps = appRepository(d.storage);
      grants = grantRepository(d.storage);
    });
    after(() => d.close());

    test('apps: create, list in order, update, delete by owner; millisecond times kept exactly', async () => {
      await apps.create(app('b', 'ann@x', T0 + 1));
      await apps.create(app('a', 'ann@x', T0 + 1));
      await apps.create(app('c', 'admin', T0));
      assert.deepEqual((await apps.list('ann@x')).map((a) => a.id), ['a', 'b']);
      assert.deepEqual((await apps.list(null)).map((a) => a.id), ['c', 'a', 'b']);
      const changed = await apps.update('a', { name: 'Renamed', redirectUris: ['https://a/1', 'https://a/2'], webhookEveryTransition: true, verifiedAt: T0 + 5, verifiedDomain: 'a' }, T0 + 9);
      assert.deepEqual(
        [changed?.name, changed?.redirectUris, changed?.webhookEveryTransition, changed?.verifiedAt, changed?.updatedAt, changed?.createdAt],
        ['Renamed', ['https://a/1', 'https://a/2'], true, T0 + 5, T0 + 9, T0 + 1],
      );
      assert.equal(await apps.update('nothing', { name: 'x' }, T0), undefined);
      assert.equal(await apps.delete('c'), true);
      assert.equal(await apps.delete('c'), false);
      assert.equal(await apps.deleteByOwner('ann@x'), 2);
      assert.deepEqual(await apps.list(null), []);
    });

    test('grants, codes and tokens: revoking and deleting an account take their codes and tokens; a deleted app takes its grants', async () => {
      await apps.create(app('g', 'admin', T0));
      await grants.upsertGrant('g', 'ann@x', ['presence'], T0);
      await grants.upsertGrant('g', 'bob@x', ['presence', 'presence.status'], T0 + 1);
      assert.deepEqual((await grants.grantsOfApp('g')).map((g) => [g.account, g.scopes]), [['ann@x', ['presence']], ['bob@x', ['presence', 'presence.status']]]);
      await grants.saveCode({ codeHash: 'c1', appId: 'g', account: 'ann@x', scopes: ['presence'], redirectUri: 'https://app.example/cb', codeChallenge: 'ch', codeChallengeMethod: 'S256', expiresAt: T0 + 60_000, usedAt: null });
      assert.equal(await grants.useCode('c1', T0 + 10), true);
      assert.equal(await grants.useCode('c1', T0 + 11), false, 'a code is used once');
      assert.equal((await grants.getCode('c1'))?.usedAt, T0 + 10);
      await grants.saveTokens([token('at1', 'access', 'g', 'ann@x', 'c1', T0 + 3_600_000), token('rt1', 'refresh', 'g', 'ann@x', 'c1', T0 + 86_400_000)]);
      assert.equal(await grants.useToken('rt1', T0 + 20), true);
      assert.equal(await grants.useToken('rt1', T0 + 21), false, 'a refresh token rotates once');
      assert.equal(await grants.revokeFamily('c1', T0 + 22), 2);
      assert.equal(await grants.saveTokens([token('at9', 'access', 'g', 'ann@x', 'c1', T0 + 3_600_000)]), false, 'a revoked family issues nothing more');
      assert.equal(await grants.getToken('at9'), undefined);
      // A save racing a revocation of its family (the request that won a replay race): whichever runs
      // first, no token of the family is left once both are done.
      for (let i = 0; i < 20; i++) {
        const fam = `race${i}`;
        await Promise.all([grants.saveTokens([token(`rat${i}`, 'access', 'g', 'ann@x', fam, T0 + 3_600_000), token(`rrt${i}`, 'refresh', 'g', 'ann@x', fam, T0 + 86_400_000)]), grants.revokeFamily(fam, T0 + 23)]);
        assert.equal(await grants.getToken(`rat${i}`), undefined, `family ${fam}: access token left after the revocation`);
        assert.equal(await grants.getToken(`rrt${i}`), undefined, `family ${fam}: refresh token left after the revocation`);
      }
      await grants.saveTokens([token('at2', 'access', 'g', 'ann@x', 'c2', T0 + 5), token('at3', 'access', 'g', 'bob@x', 'c3', T0 + 3_600_000)]);
      await grants.purgeExpired(T0 + 6);
      assert.equal(await grants.getToken('at2'), undefined);
      assert.equal((await grants.getToken('at3'))?.expiresAt, T0 + 3_600_000);
      await grants.markDelivered('g', 'bob@x', T0 + 30);
      assert.equal((await grants.getGrant('g', 'bob@x'))?.lastDeliveryAt, T0 + 30);
      assert.equal(await grants.revokeGrant('g', 'bob@x', T0 + 40), true);
      assert.equal(await grants.revokeGrant('g', 'bob@x', T0 + 41), false);
      assert.equal(await grants.getToken('at3'), undefined, 'revoking takes the tokens');
      assert.equal((await grants.getGrant('g', 'bob@x'))?.revokedAt, T0 + 40);
      assert.deepEqual((await grants.activeGrants()).map((g) => g.account), ['ann@x']);
      // Granting again clears the revocation.
      await grants.upsertGrant('g', 'bob@x', ['presence'], T0 + 50);
      assert.deepEqual((await grants.grantsOfAccount('bob@x')).map((g) => [g.appId, g.revokedAt]), [['g', null]]);
      assert.deepEqual(await grants.deleteAccount('bob@x'), ['g']);
      assert.equal(await grants.getGrant('g', 'bob@x'), undefined);
      await apps.delete('g');
      assert.deepEqual(await grants.activeGrants(), [], 'the app\'s grants went with it (foreign key)');
    });
  });

  describe(`extension key-value store (${dialect})`, () => {
    let d: FeatureDb;
    before(async () => {
      // PostgreSQL: a database whose text order is not byte order (ICU en-US puts 'a' before 'A').
      d = await featureDb(dialect, [['extensions', EXTENSION_MIGRATIONS]], { icuLocale: 'en-US' });
      // The key-value calls touch only the database; the engine is a real one, for the call's signature.
      server ??= await startTestServer();
    });
    after(() => d.close());

    test('each extension sees its own keys; list is in byte order from a prefix, whatever the collation', async () => {
      const call = (name: string, op: string, args: unknown) => contextCall({ engine: server!.server.engine, db: d.storage.db }, name, op, args);
      for (const key of ['b', 'a-b', 'ab', 'a', 'A', 'a/b']) await call('one', 'kv.set', { key, value: { key } });
      await call('two', 'kv.set', { key: 'a', value: 2 });
      assert.deepEqual(await call('one', 'kv.get', { key: 'a-b' }), { key: 'a-b' });
      assert.equal(await call('two', 'kv.get', { key: 'a' }), 2);
      assert.deepEqual(await call('one', 'kv.list', { prefix: 'a' }), ['a', 'a-b', 'a/b', 'ab']);
      assert.deepEqual(await call('one', 'kv.list', {}), ['A', 'a', 'a-b', 'a/b', 'ab', 'b']);
      await call('one', 'kv.set', { key: 'a', value: [1, 2] });
      assert.deepEqual(await call('one', 'kv.get', { key: 'a' }), [1, 2]);
      assert.equal(await call('one', 'kv.delete', { key: 'a' }), true);
      assert.equal(await call('one', 'kv.delete', { key: 'a' }), false);
      assert.equal(await call('one', 'kv.get', { key: 'a' }), undefined);
      const { rows } = await sql<{ updated_at: number }>`SELECT updated_at FROM extension_kv WHERE extension = 'two'`.execute(d.storage.db);
      assert.ok(rows[0]!.updated_at > T0, 'the write time is a millisecond epoch');
    });
  });
}
