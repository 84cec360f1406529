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
import { AppLogHub } from './log-hub.js';
import { appUpdateOf, reconcileApps } from './webhooks/presence-source.js';
import { startStreams } from './stream/index.js';

/**
 * Third-party apps (docs/apps.md): registration, secrets, domain proof and pairwise ids; consent,
 * grants and OAuth tokens (`grants.events` tells the feature's other parts of grants and revocations).
 * Webhooks and streams plug in here too.
 */
/** The parts of a running apps feature, for its routes and for tests. */
export interface AppsRuntime {
  readonly service: AppService;
  readonly grants: GrantService;
  readonly index: GrantIndex;
  readonly hub: AppLogHub;
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
    const service = new AppService(appRepository(ctx.storage), deriveKeys(ctx.secret(APPS_SECRET_FILE)), { allowPrivate: ctx.config.webhooks_allow_private });
    const grants = new GrantService(grantRepository(ctx.storage));
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
    const index = new GrantIndex((appId, account) => service.pairwiseId(appId, account));
    index.load(await grants.repo.activeGrants());
    index.follow(grants.events);
    service.events.on('app.deleted', ({ appId }) => index.dropApp(appId));
    const hub = new AppLogHub();
    const initial = new Set<string>();
    const webhooks = startWebhooks(ctx, { apps: service.repo, audience: index, hub, markDelivered: (appId, account, at) => grants.repo.markDelivered(appId, account, at),
      onLive: (updates) => {
        if (initial.size > 0) for (const u of updates) initial.delete(`${u.appId}\u0000${u.uid}`);
      },
    });
    // A new grant tells the app where the user stands now, unless a live change (newer) got there first.
    grants.events.on('grant.created', ({ appId, account }) => {
      const key = `${appId}\u0000${service.pairwiseId(appId, account)}`;
      initial.add(key);
      ctx.engine.presenceOf(account).then(
        (p) => {
          const app = index.grantOf(appId, service.pairwiseId(appId, account));
          if (initial.delete(key) && app !== undefined) webhooks.outbox.enqueue([appUpdateOf(p, app, Date.now())]);
        },
        (err: unknown) => ctx.log.error({ err, appId }, 'reading the presence of a new grant failed'),
      );
    });
    running.set(ctx.engine, { service, grants, index, hub, webhooks });
    const told = await reconcileApps(ctx.engine, index.all(), await webhooks.store.newestBodies(), webhooks.outbox);
    if (told > 0) ctx.log.info({ updates: told }, 'apps told of presence that changed while the server was down');
    ctx.http(oauthRoutes({ engine: ctx.engine, apps: service, grants, repo: grants.repo, sessions: new SessionCodec(ctx.secret('apps-cookie-secret')), publicUrl: ctx.config.public_url }), { prefix: '/oauth' });
    ctx.http(oauthRootRoutes(service, ctx.config.public_url), { prefix: '/' });
    ctx.http(myAppsRoutes(ctx.engine, service, grants, ctx.config.admin_token), { prefix: '/api/v1/me/apps' });
    ctx.native.handle('apps.list', async ({ jid }) => ({ apps: await connectedApps(service, grants, jid) }));
    ctx.native.handle('apps.revoke', ({ jid, body }) => revokeApp(grants, jid, body.app));
    ctx.http(
      appRoutes(ctx.engine, service, { adminToken: ctx.config.admin_token, registration: ctx.config.app_registration === 'admin' ? 'admin' : 'accounts', extraRoutes: [webhooks.routes] }),
      { prefix: '/api/v1/apps' },
    );
    startStreams(ctx, { service, store: webhooks.store, audience: index, hub });
  },
});
