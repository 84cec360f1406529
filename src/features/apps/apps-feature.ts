import { configSwitch, defineFeature } from '../feature.js';
import { AppService } from './app-service.js';
import { APP_MIGRATIONS } from './migrations.js';
import { appRepository } from './repository.js';
import { appRoutes } from './routes.js';
import { SessionCodec } from './consent-session.js';
import { grantRepository } from './grant-repository.js';
import { GrantService } from './grant-service.js';
import { oauthRootRoutes, oauthRoutes } from './oauth-routes.js';
import { connectedApps, myAppsRoutes, revokeApp } from './user-apps.js';
import { APPS_SECRET_FILE, deriveKeys } from './secrets.js';
import { startWebhooks, type Webhooks } from './webhooks/index.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { GrantIndex } from './grant-index.js';
import { GrantSync } from './grant-sync.js';
import { AppLogHub, type AppLog } from './log-hub.js';
import { ClusterAppLog } from './log-feed.js';
import { joinAppsPeers } from './peers.js';
import { appUpdateOf, reconcileApps, registryVersions, type GrantedAudience } from './webhooks/presence-source.js';
import { webhookStore } from './webhooks/store.js';
import { startStreams } from './stream/index.js';
import type { StreamRegistry } from './stream/app-stream.js';

/**
 * Third-party apps (docs/apps.md): registration, secrets, domain proof and pairwise ids; consent,
 * grants and OAuth tokens (`grants.events` tells the feature's other parts of grants and revocations).
 * Webhooks and streams plug in here too. In a cluster, the feature on each node hears of the others'
 * changes (peers.ts).
 */
/** The parts of a running apps feature, for its routes and for tests. */
export interface AppsRuntime {
  readonly service: AppService;
  readonly grants: GrantService;
  readonly index: GrantIndex;
  readonly log: AppLog;
  readonly webhooks: Webhooks;
}

// Deliberately exposed for tests and benches: the apps feature of a running server, by its engine.
const running = new WeakMap<PresenceEngine, AppsRuntime>();
export function appsOf(engine: PresenceEngine): AppsRuntime | undefined {
  return running.get(engine);
}

export const appsFeature = defineFeature({
  name: 'apps',
  enabled: configSwitch('apps'),
  migrations: APP_MIGRATIONS,
  async setup(ctx) {
    const { cluster } = ctx;
    const service = new AppService(appRepository(ctx.storage), deriveKeys(await ctx.secret(APPS_SECRET_FILE)), { allowPrivate: ctx.config.webhooks_allow_private });
    const grants = new GrantService(grantRepository(ctx.storage), { pairwise: (appId, account) => service.pairwiseId(appId, account) });
    // An account's apps go with it. Accounts removed while this server was not running (CLI on the
    // database) are caught by the sweep below at the next start.
    ctx.engine.events.on('account.deleted', ({ jid }) => {
      // Grants first (they emit grant.revoked for the account's apps); an app's own rows go with it by cascade.
      grants.removeAccount(jid).then(
        (n) => n > 0 && ctx.log.info({ jid, grants: n }, 'grants of a deleted account removed'),
        (err: unknown) => ctx.log.error({ err, jid }, 'removing the grants of a deleted account failed'),
      );
      service.removeOwnedBy(jid).then(
        (n) => n > 0 && ctx.log.info({ jid, apps: n }, 'apps of a deleted account removed'),
        (err: unknown) => ctx.log.error({ err, jid }, 'removing the apps of a deleted account failed'),
      );
    });
    for (const owner of new Set((await service.list(null)).map((a) => a.owner))) {
      if (owner !== 'admin' && !(await ctx.engine.accountExists(owner))) {
        ctx.log.info({ owner, apps: await service.removeOwnedBy(owner) }, 'apps of a removed account deleted');
      }
    }
    // Grants of accounts removed while this server was not running (CLI on the database) go too.
    const grantRecords = await grants.repo.activeGrants();
    for (const account of new Set(grantRecords.map((g) => g.account))) {
      if (!(await ctx.engine.accountExists(account))) ctx.log.info({ account, grants: await grants.removeAccount(account) }, 'grants of a removed account deleted');
    }
    // Grants made before their pairwise ids were kept (APP_MIGRATIONS 9) get them now.
    const withoutUid = grantRecords.filter((g) => g.uid === null && g.revokedAt === null);
    if (withoutUid.length > 0) await grants.repo.setUids(withoutUid.map((g) => ({ appId: g.appId, account: g.account, uid: service.pairwiseId(g.appId, g.account) })));

    const index = new GrantIndex((appId, account) => service.pairwiseId(appId, account));
    index.follow(grants.events);
    const sync = new GrantSync(index, grants.repo, grants.events);
    const store = webhookStore(ctx.storage, { backlogCountCap: ctx.config.webhook_batch_max });
    let streams: StreamRegistry | null = null;
    let setUp!: () => void;
    const started = new Promise<void>((resolve) => (setUp = resolve));
    let log: AppLog;
    let audience: GrantedAudience = index;
    if (cluster.clustered) {
      const clusterLog = new ClusterAppLog({
        store,
        announce: (heads) => void cluster.publish('logged', { h: heads }),
        beforeHanding: () => sync.settled(),
        log: ctx.log.child({ part: 'log-feed' }),
      });
      log = clusterLog;
      // Subscribed before the first read of the grants: a change announced meanwhile is read after it.
      joinAppsPeers(ctx, { service, sync, log: clusterLog, streams: () => streams });
      audience = {
        appsFor: (account) => index.appsFor(account),
        grantOf: (appId, uid) => index.grantOf(appId, uid),
        accountOf: (appId, uid) => index.accountOf(appId, uid),
        confirm: (appId, uids) => sync.confirm(appId, uids),
      };
      cluster.onLost(() => clusterLog.pause());
      // Users of grants made elsewhere while this node could not hear of them: their changes here meanwhile were not logged.
      const unreconciled: Array<{ readonly appId: string; readonly account: string }> = [];
      const resync = async (): Promise<void> => {
        try {
          unreconciled.push(...(await sync.reload()));
          clusterLog.resume();
          if (unreconciled.length > 0) {
            await reconcileUnder([...unreconciled]);
            unreconciled.length = 0;
          }
        } catch (err) {
          // The streams stay paused until the grants could be read again.
          ctx.log.warn({ err }, 'reading the grants again after messages of other nodes may have been missed failed; trying again');
          setTimeout(() => void resync(), 1_000).unref();
        }
      };
      cluster.onResync(async () => {
        await started;
        await resync();
      });
    } else {
      log = new AppLogHub();
    }
    await sync.reload();
    service.events.on('app.deleted', (e) => sync.dropApp(e.appId));
    // The caller (DELETE, secret rotation) is answered once every node dropped the app's grants and
    // ended the streams the old secret opened: an app deleted on one node sends nothing from another.
    service.afterChange = async ({ appId }) => {
      await Promise.all([
        streams?.recheckApp(appId).catch((err: unknown) => ctx.log.warn({ err, appId }, 'ending the streams of a changed app failed')),
        cluster.publish('apps', { a: appId }, { acknowledged: true }),
      ]);
    };

    const initial = new Set<string>();
    const webhooks = startWebhooks(ctx, { apps: service.repo, store, audience, hub: log, markDelivered: (appId, account, at) => grants.repo.markDelivered(appId, account, at),
      onLive: (updates) => {
        if (initial.size > 0) for (const u of updates) initial.delete(`${u.appId}\u0000${u.uid}`);
      },
    });
    // A new grant tells the app where the user stands now, unless a live change (newer) got there
    // first. Read once every node knows of the grant (afterChange, below): from then on every node logs
    // the user's changes.
    grants.events.on('grant.created', ({ appId, account }) => initial.add(`${appId}\u0000${service.pairwiseId(appId, account)}`));
    grants.afterChange = async ({ kind, appId, account }) => {
      await cluster.publish('grants', { a: appId, u: account }, { acknowledged: true });
      if (kind !== 'granted') return;
      const key = `${appId}\u0000${service.pairwiseId(appId, account)}`;
      try {
        // Versioned (in a cluster): a change another node logs meanwhile is newer, and this one is not logged after it.
        const version = (await registryVersions(ctx.engine, [account]))?.get(account);
        const p = await ctx.engine.presenceOf(account);
        const app = index.grantOf(appId, service.pairwiseId(appId, account));
        if (initial.delete(key) && app !== undefined) webhooks.outbox.enqueue([appUpdateOf(p, app, Date.now(), version)]);
      } catch (err) {
        ctx.log.error({ err, appId }, 'reading the presence of a new grant failed');
      }
    };
    /**
     * Apps told of presence that changed while nothing logged it: at start (the server was down), and
     * in a cluster for grants a node did not hear of. One node at a time, each seeing what the previous
     * one wrote, so several nodes starting together correct each user once; presence is the cluster's
     * (users online on another node are online).
     */
    const reconcileUnder = (only: ReadonlyArray<{ readonly appId: string; readonly account: string }> | null): Promise<number> =>
      cluster.exclusive('reconcile', async () => {
        const pairs = only === null ? [...index.all()] : only.flatMap(({ appId, account }) => {
          const app = index.grantFor(appId, account);
          return app === undefined ? [] : [{ account, app }];
        });
        const told = only === null ? await store.newestBodies() : (await Promise.all([...new Set(pairs.map((p) => p.app.appId))].map((a) => store.newestOfUsers(a, pairs.filter((p) => p.app.appId === a).map((p) => p.app.uid))))).flat();
        const n = await reconcileApps(ctx.engine, pairs, told, webhooks.outbox);
        await webhooks.outbox.flush();
        return n;
      });
    running.set(ctx.engine, { service, grants, index, log, webhooks });
    const told = await reconcileUnder(null);
    if (told > 0) ctx.log.info({ updates: told }, 'apps told of presence that changed while the server was down');
    ctx.http(oauthRoutes({ engine: ctx.engine, apps: service, grants, repo: grants.repo, sessions: new SessionCodec(await ctx.secret('apps-cookie-secret')), publicUrl: ctx.config.public_url }), { prefix: '/oauth' });
    ctx.http(oauthRootRoutes(service, ctx.config.public_url), { prefix: '/' });
    ctx.http(myAppsRoutes(ctx.engine, service, grants, ctx.config.admin_token), { prefix: '/api/v1/me/apps' });
    ctx.native.handle('apps.list', async ({ jid }) => ({ apps: await connectedApps(service, grants, jid) }));
    ctx.native.handle('apps.revoke', ({ jid, body }) => revokeApp(grants, jid, body.app));
    ctx.http(
      appRoutes(ctx.engine, service, { adminToken: ctx.config.admin_token, registration: ctx.config.app_registration === 'admin' ? 'admin' : 'accounts', extraRoutes: [webhooks.routes] }),
      { prefix: '/api/v1/apps' },
    );
    streams = startStreams(ctx, { service, store: webhooks.store, audience, hub: log });
    setUp();
  },
});
