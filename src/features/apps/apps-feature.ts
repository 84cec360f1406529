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
import { startWebhooks } from './webhooks/index.js';

/**
 * Third-party apps (docs/apps.md): registration, secrets, domain proof and pairwise ids; consent,
 * grants and OAuth tokens (`grants.events` tells the feature's other parts of grants and revocations).
 * Webhooks and streams plug in here too.
 */
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
    // Until grants feed it (the next part) no account has an audience: webhooks deliver nothing yet.
    const webhooks = startWebhooks(ctx, service.repo);
    ctx.http(oauthRoutes({ engine: ctx.engine, apps: service, grants, repo: grants.repo, sessions: new SessionCodec(ctx.secret('apps-cookie-secret')) }), { prefix: '/oauth' });
    ctx.http(oauthRootRoutes(service), { prefix: '/' });
    ctx.http(myAppsRoutes(ctx.engine, service, grants, ctx.config.admin_token), { prefix: '/api/v1/me/apps' });
    ctx.native.handle('apps.list', async ({ jid }) => ({ apps: await connectedApps(service, grants, jid) }));
    ctx.native.handle('apps.revoke', ({ jid, body }) => revokeApp(grants, jid, body.app));
    ctx.http(
      appRoutes(ctx.engine, service, { adminToken: ctx.config.admin_token, registration: ctx.config.app_registration === 'admin' ? 'admin' : 'accounts', extraRoutes: [webhooks.routes] }),
      { prefix: '/api/v1/apps' },
    );
  },
});
