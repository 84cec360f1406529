import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { loadConfig } from '../../src/config.js';
import { startServer } from '../../src/server.js';
import { defineFeature } from '../../src/features/feature.js';
import { SAMPLE_MIGRATIONS, SAMPLE_NS, sampleFeature } from '../fixtures/sample-feature.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RequestFailed, TestClient } from '../helpers/ws-client.js';
import { XmppTestClient, xml, type Element } from '../helpers/xmpp-client.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = mkdtempSync(join(tmpdir(), 'presenced-features-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const XMPP = { xmpp_port: 0, xmpps_port: -1, xmpp_require_tls: false } as const;

function appliedVersions(dataDir: string, feature: string): number[] {
  const db = new Database(join(dataDir, 'presenced.sqlite'), { readonly: true });
  try {
    // No enabled feature at all: the table was never created.
    if (db.prepare("select 1 from sqlite_master where name = 'feature_migrations'").get() === undefined) return [];
    return (db.prepare('select version from feature_migrations where feature = ? order by version').all(feature) as Array<{ version: number }>).map((r) => r.version);
  } finally {
    db.close();
  }
}

describe('the feature seam with an enabled feature', () => {
  let t: TestServer;
  const stopped = { value: false };

  test('start with the sample feature', async () => {
    t = await startTestServer(XMPP, tempDir(), { features: [sampleFeature({ enabled: true, stopped })] });
    await t.createAccount('alice@localhost');
  });

  test('its migration ran once and its route answers under its prefix', async () => {
    const res = await fetch(`${t.url}/api/v1/sample/notes`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { notes: string[]; created: string[] };
    assert.deepEqual(body.notes, ['from migration 1']);
    // Its listener on the engine's events saw the account being created.
    assert.deepEqual(body.created, ['alice@localhost']);
    assert.deepEqual(appliedVersions(t.dataDir, 'sample'), [1]);
  });

  test('its native request type is answered after auth, with the caller', async () => {
    const { client } = await TestClient.login(t.wsUrl, 'alice@localhost');
    try {
      assert.deepEqual(await client.request('sample.echo', { text: 'hi' }), { jid: 'alice@localhost', echo: 'hi' });
      await assert.rejects(client.request('sample.echo', { text: 5 }), (e: RequestFailed) => e.error.code === 'bad-request');
      await assert.rejects(client.request('sample.nope'), (e: RequestFailed) => e.error.code === 'unknown-type');
      // Built-in types still work next to it.
      assert.ok((await client.request('ping')).time);
    } finally {
      client.ws.close();
    }
  });

  test('a feature request type before auth is not-authenticated', async () => {
    const client = await TestClient.connect(t.wsUrl);
    try {
      await assert.rejects(client.request('sample.echo', { text: 'hi' }), (e: RequestFailed) => e.error.code === 'not-authenticated');
    } finally {
      client.ws.close();
    }
  });

  test('its IQ namespace is answered and appears in the server disco#info', async () => {
    const c = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'alice');
    try {
      const res = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: SAMPLE_NS, q: 'x' })));
      const answer = res.getChild('answer', SAMPLE_NS) as Element;
      assert.deepEqual(answer.attrs, { xmlns: SAMPLE_NS, jid: 'alice@localhost', target: 'server', asked: 'x' });
      await assert.rejects(c.iq(xml('iq', { type: 'set', to: 'localhost' }, xml('query', { xmlns: SAMPLE_NS }))), (e: Error & { condition?: string }) => e.condition === 'bad-request');
      const info = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
      const features = (info.getChild('query') as Element).getChildren('feature').map((f) => f.attrs.var);
      assert.ok(features.includes(SAMPLE_NS));
      assert.ok(features.includes('urn:xmpp:blocking'));
    } finally {
      await c.stop();
    }
  });

  test('restart on the same database does not apply the migration again; stop hook runs', async () => {
    await t.stop();
    assert.equal(stopped.value, true);
    const again = await startTestServer(XMPP, t.dataDir, { features: [sampleFeature({ enabled: true })] });
    try {
      const body = (await (await fetch(`${again.url}/api/v1/sample/notes`)).json()) as { notes: string[] };
      assert.deepEqual(body.notes, ['from migration 1']);
    } finally {
      await again.stop();
    }
  });
});

describe('the feature seam with the feature disabled', () => {
  test('registers nothing: routes 404, request types unknown-type, IQ service-unavailable, no migration', async () => {
    const t = await startTestServer(XMPP, tempDir(), { features: [sampleFeature({ enabled: false })] });
    try {
      await t.createAccount('alice@localhost');
      const res = await fetch(`${t.url}/api/v1/sample/notes`);
      assert.equal(res.status, 404);
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'not-found');
      const { client } = await TestClient.login(t.wsUrl, 'alice@localhost');
      try {
        await assert.rejects(client.request('sample.echo', { text: 'hi' }), (e: RequestFailed) => e.error.code === 'unknown-type');
      } finally {
        client.ws.close();
      }
      const c = await XmppTestClient.login(`xmpp://127.0.0.1:${t.server.xmppPort}`, 'alice');
      try {
        await assert.rejects(c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: SAMPLE_NS }))), (e: Error & { condition?: string }) => e.condition === 'service-unavailable');
        const info = await c.iq(xml('iq', { type: 'get', to: 'localhost' }, xml('query', { xmlns: 'http://jabber.org/protocol/disco#info' })));
        assert.ok(!(info.getChild('query') as Element).getChildren('feature').some((f) => f.attrs.var === SAMPLE_NS));
      } finally {
        await c.stop();
      }
      assert.deepEqual(appliedVersions(t.dataDir, 'sample'), []);
    } finally {
      await t.stop();
    }
  });

  test('the built-in apps feature is switched off by `apps: false`', async () => {
    const t = await startTestServer({ apps: false }, tempDir());
    try {
      const res = await fetch(`${t.url}/api/v1/apps`, { headers: { authorization: 'Bearer test-admin-token-0123456789' } });
      assert.equal(res.status, 404);
    } finally {
      await t.stop();
    }
  });
});

describe('per-feature migrations', () => {
  const config = (dir: string) => loadConfig({ env: {}, overrides: { http_port: 0, data_dir: dir, log_level: 'silent', xmpp_port: -1, xmpps_port: -1 } });

  test('a database newer than the feature is refused, naming the feature', async () => {
    const dir = tempDir();
    const v2 = [...SAMPLE_MIGRATIONS, { version: 2, name: 'more', async up() {} }];
    const s = await startServer(config(dir), undefined, { features: [sampleFeature({ enabled: true, migrations: v2 })] });
    await s.stop();
    assert.deepEqual(appliedVersions(dir, 'sample'), [1, 2]);
    await assert.rejects(startServer(config(dir), undefined, { features: [sampleFeature({ enabled: true })] }), /feature sample: .*version 2.*only knows up to 1/);
    // The refusal left the directory usable by the right version.
    const again = await startServer(config(dir), undefined, { features: [sampleFeature({ enabled: true, migrations: v2 })] });
    await again.stop();
  });

  test('a failing migration is rolled back whole and the server does not start', async () => {
    const dir = tempDir();
    const broken = [
      ...SAMPLE_MIGRATIONS,
      {
        version: 2,
        name: 'half done',
        async up(db: import('kysely').Kysely<any>) {
          await db.schema.createTable('sample_half').addColumn('x', 'integer').execute();
          throw new Error('migration bug');
        },
      },
    ];
    await assert.rejects(startServer(config(dir), undefined, { features: [sampleFeature({ enabled: true, migrations: broken })] }), /migration bug/);
    assert.deepEqual(appliedVersions(dir, 'sample'), [1]);
    const db = new Database(join(dir, 'presenced.sqlite'), { readonly: true });
    try {
      assert.equal((db.prepare("select count(*) as n from sqlite_master where name = 'sample_half'").get() as { n: number }).n, 0);
    } finally {
      db.close();
    }
    // After the failed start the data directory is free again (control socket closed, store closed).
    const s = await startServer(config(dir), undefined, { features: [sampleFeature({ enabled: true })] });
    await s.stop();
  });

  test('features may not take over built-in names or be defined badly', () => {
    assert.throws(() => defineFeature({ name: 'Bad Name', enabled: () => true, migrations: [], setup() {} }), /lower case/);
    assert.throws(
      () => defineFeature({ name: 'x', enabled: () => true, migrations: [{ version: 2, name: 'a', async up() {} }, { version: 1, name: 'b', async up() {} }], setup() {} }),
      /increasing/,
    );
  });

  test('a feature registering a built-in request type or namespace stops the start with a clear error', async () => {
    const grabby = defineFeature({ name: 'grabby', enabled: () => true, migrations: [], setup: (ctx) => ctx.native.handle('presence', () => ({})) });
    await assert.rejects(startServer(config(tempDir()), undefined, { features: [grabby] }), /native request type "presence" is built in/);
    const grabbyXmpp = defineFeature({ name: 'grabby', enabled: () => true, migrations: [], setup: (ctx) => ctx.xmpp.iq('jabber:iq:roster', () => null) });
    await assert.rejects(startServer(config(tempDir()), undefined, { features: [grabbyXmpp] }), /handled by the XMPP server itself/);
  });
});
