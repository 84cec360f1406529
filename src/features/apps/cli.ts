import { readFileSync, statSync } from 'node:fs';
import type { Config } from '../../config.js';
import { PresenceError } from '../../core/errors.js';
import { featureSecret } from '../feature-secrets.js';
import { runFeatureMigrations } from '../migrations.js';
import type { Store } from '../../ports/store.js';
import { isManifest, manifestFields, MAX_MANIFEST_BYTES, registrationFields, WEBHOOK_FORMATS } from './app-input.js';
import { ADMIN_OWNER, appView, AppService } from './app-service.js';
import { APP_MIGRATIONS } from './migrations.js';
import { appRepository } from './repository.js';
import { APPS_SECRET_FILE, deriveKeys } from './secrets.js';

export interface AppCliOptions {
  readonly name?: string | undefined;
  readonly description?: string | undefined;
  readonly homepage?: string | undefined;
  readonly 'icon-url'?: string | undefined;
  readonly 'redirect-uri'?: string[] | undefined;
  readonly 'webhook-url'?: string | undefined;
  readonly 'webhook-format'?: string | undefined;
  readonly manifest?: string | undefined;
}

export const APP_USAGE = `  presenced app add --name N --homepage URL --redirect-uri URL [--redirect-uri URL ...]
                    [--description D] [--icon-url URL] [--webhook-url URL] [--webhook-format pairs|extended]
  presenced app add --manifest FILE                    register from a web app manifest (with a "presence" member)
  presenced app list                                   list every app
  presenced app show <id>                              show an app (as JSON)
  presenced app remove <id>                            delete an app`;

/** Thrown for a command line that makes no sense (exit 2, with usage). */
export class AppUsageError extends Error {}

/**
 * `presenced app ...`: the operator's app commands, owned by `admin`. They work on the database
 * directly whether or not a server runs: app rows have no copy in a running server's memory (each
 * request reads them), and SQLite serialises the writers (WAL, busy timeout).
 */
export async function appCommand(config: Config, store: Store, sub: string | undefined, args: string[], opts: AppCliOptions, out: (line: string) => void): Promise<number> {
  if (!config.apps) throw new PresenceError('not-allowed', 'the apps feature is turned off on this server (apps: false)');
  const storage = store.featureStorage();
  await runFeatureMigrations(storage.db, 'apps', APP_MIGRATIONS);
  const service = new AppService(appRepository(storage), deriveKeys(await featureSecret(storage, config.data_dir, APPS_SECRET_FILE)), { allowPrivate: config.webhooks_allow_private });
  const view = (a: Parameters<typeof appView>[0]) => appView(a, config.webhooks_allow_private);
  const oneId = (): string => {
    if (args.length !== 1 || !args[0]) throw new AppUsageError(`app ${sub} needs exactly one app id`);
    return args[0];
  };
  switch (sub) {
    case 'add': {
      if (args.length) throw new AppUsageError(`unexpected argument "${args[0]}" (give the name with --name)`);
      let fields;
      if (opts.manifest !== undefined) {
        if (opts.name ?? opts.homepage ?? opts['redirect-uri'] ?? opts['webhook-url'] ?? opts.description ?? opts['icon-url'] ?? opts['webhook-format']) {
          throw new AppUsageError('--manifest takes all fields from the manifest; give no other field option');
        }
        fields = manifestFields(readManifest(opts.manifest), service.rules);
      } else {
        if (opts['webhook-format'] !== undefined && !WEBHOOK_FORMATS.includes(opts['webhook-format'] as never)) throw new AppUsageError('--webhook-format must be pairs or extended');
        const input: Record<string, unknown> = {};
        if (opts.name !== undefined) input.name = opts.name;
        if (opts.description !== undefined) input.description = opts.description;
        if (opts.homepage !== undefined) input.homepage = opts.homepage;
        if (opts['icon-url'] !== undefined) input.iconUrl = opts['icon-url'];
        if (opts['redirect-uri'] !== undefined) input.redirectUris = opts['redirect-uri'];
        if (opts['webhook-url'] !== undefined) input.webhookUrl = opts['webhook-url'];
        if (opts['webhook-format'] !== undefined) input.webhookFormat = opts['webhook-format'];
        fields = registrationFields(input, service.rules);
      }
      const { app, clientSecret } = await service.register(ADMIN_OWNER, fields);
      out(`created app ${app.id} (${app.name})`);
      out(`client secret:  ${clientSecret}   (shown only now; rotate it over REST if lost)`);
      out(`webhook secret: ${app.webhookSecret}`);
      const proof = (view(app).domain as { proofUrl: string | null }).proofUrl;
      out(`domain proof:   serve "${app.domainKey}" at ${proof ?? `https://${new URL(app.homepage).hostname}/__presence`}`);
      return 0;
    }
    case 'list': {
      if (args.length) throw new AppUsageError(`unexpected argument "${args[0]}"`);
      for (const a of await service.list(null)) out(`${a.id}  ${a.owner}  ${a.verifiedDomain === null ? 'unverified' : `verified ${a.verifiedDomain}`}  ${a.name}`);
      return 0;
    }
    case 'show':
      out(JSON.stringify(view(await service.find(null, oneId())), null, 2));
      return 0;
    case 'remove': {
      const id = oneId();
      if (!(await service.remove(id))) throw new PresenceError('not-found', `no app ${id}`);
      out(`removed app ${id}`);
      return 0;
    }
    default:
      throw new AppUsageError(sub ? `unknown app command "${sub}"` : 'app needs a command: add, list, show, remove');
  }
}

function readManifest(file: string): Record<string, unknown> {
  let text: string;
  try {
    if (statSync(file).size > MAX_MANIFEST_BYTES) throw new PresenceError('bad-request', `manifest ${file} is larger than ${MAX_MANIFEST_BYTES} bytes`);
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if (e instanceof PresenceError) throw e;
    throw new PresenceError('bad-request', `cannot read manifest ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : (e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new PresenceError('bad-request', `manifest ${file} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PresenceError('bad-request', `manifest ${file} must hold a JSON object`);
  if (!isManifest(v as Record<string, unknown>)) throw new PresenceError('bad-request', `manifest ${file} has no "presence" member`);
  return v as Record<string, unknown>;
}
