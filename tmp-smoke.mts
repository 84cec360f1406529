import { startPostgres, stopAllPrivateServices } from './test/helpers/private-services.js';
import { PostgresStore } from './src/adapters/postgres/postgres-store.js';
const pg = await startPostgres();
try {
  const s = PostgresStore.open({ url: pg.url, node: 'n1' });
  await s.migrate();
  await s.migrate();
  await s.createAccount({ jid: 'a@x', passwordHash: 'h', scramSha1: null, scramSha256: null, createdAt: Date.now() });
  try { await s.createAccount({ jid: 'a@x', passwordHash: 'h', scramSha1: null, scramSha256: null, createdAt: Date.now() }); } catch (e) { console.log('dup:', (e as Error).message); }
  console.log(await s.getAccount('a@x'), await s.countAccounts(), await s.listAccounts({ limit: 10, domain: 'x' }));
  console.log(await s.updateSettings('a@x', { publicPresence: true }), await s.listPublicPresenceChoices());
  await s.putRosterItems([{ owner: 'a@x', contact: 'b@x', name: null, groups: ['g'], state: { to: true, from: false, pendingOut: false, pendingIn: false, preApproved: false } }]);
  console.log(await s.getRoster('a@x'), await s.getRosterVersion('a@x'));
  console.log(await s.addOfflineMessageIfRoom({ to: 'a@x', from: 'b@x', xml: '<m/>', at: Date.now() }, 1), await s.addOfflineMessageIfRoom({ to: 'a@x', from: 'b@x', xml: '<m/>', at: Date.now() }, 1));
  console.log(await s.getOfflineMessages('a@x', 10));
  await s.writePresenceCheckpoints([{ jid: 'a@x', onlineSince: Date.now(), lastHeard: Date.now(), status: null }], []);
  console.log(await s.getPresenceCheckpoints(), await s.getPresenceCheckpoints('other'));
  await s.setLastSeenMany([{ jid: 'a@x', lastSeen: { at: 1, status: 'x' } }, { jid: 'a@x', lastSeen: { at: 2, status: 'y' } }]);
  console.log(await s.getLastSeenMany(['a@x']));
  console.log(pg.psql('presenced', "select table_name, column_name, data_type, collation_name from information_schema.columns where table_schema='public' order by 1,2"));
  console.log(await s.deleteAccount('a@x'));
  await s.close();
} finally { await stopAllPrivateServices(); }
