import { configSwitch, defineFeature } from '../feature.js';
import { AppService } from './app-service.js';
import { APP_MIGRATIONS } from './migrations.js';
import { appRepository } from './repository.js';
import { appRoutes } from './routes.js';
import { APPS_SECRET_FILE, deriveKeys } from './secrets.js';
import { startWebhooks } from './webhooks/index.js';

/**
 * Third-party apps (docs/apps.md). This part: registration, secrets, domain proof and pairwise ids.
 * Consent, tokens, webhooks and streams plug in here later.
 */
export const appsFeature = defineFeature({
  name: 'apps',
  enabled: configSwitch('apps'),
  migrations: APP_MIGRATIONS,
  async setup(ctx) {
    const service = new AppService(appRepository(ctx.storage), deriveKeys(ctx.secret(APPS_SECRET_FILE)), { allowPrivate: ctx.config.webhooks_allow_private });
    // An account's apps go with it. Accounts removed while this server was not running (CLI on the
    // database) are caught by the sweep below at the next start.
    ctx.engine.events.on('account.deleted', ({ jid }) => {
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
    // Until grants exist (the consent part) no account has an audience: webhooks deliver nothing yet.
    const webhooks = startWebhooks(ctx, service.repo);
    ctx.http(
      appRoutes(ctx.engine, service, { adminToken: ctx.config.admin_token, registration: ctx.config.app_registration === 'admin' ? 'admin' : 'accounts', extraRoutes: [webhooks.routes] }),
      { prefix: '/api/v1/apps' },
    );
  },
});
