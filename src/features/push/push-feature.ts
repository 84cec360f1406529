import { Counter, Gauge, Histogram } from 'prom-client';
import { platformProviderFactories } from './providers/index.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { configSwitch, defineFeature, type FeatureDefinition } from '../feature.js';
import { PUSH_MIGRATIONS } from './migrations.js';
import { nativePushHandlers } from './native.js';
import { notifyRoutes } from './notify-routes.js';
import { providerRoutes } from './provider-routes.js';
import { ProviderConfigError, type ProviderFactory, type PushProvider } from './providers/provider.js';
import { webhookProviderFactory } from './providers/webhook.js';
import { PushService } from './push-service.js';
import { pushRepository, type PushRepository } from './repository.js';
import { PushWorker } from './worker.js';
import { setupXmppPush } from './xmpp/index.js';

/**
 * Push notifications (docs/push.md): device registrations, the policy deciding which devices a push
 * wakes, the durable push queue and its worker, the providers, the native requests and the notify API.
 * Other parts of the server (the XMPP side's XEP-0357, extensions) reach it through `pushOf(engine)`.
 */

/** The parts of a running push feature, for the XMPP side, extensions and tests. */
export interface PushRuntime {
  /** Queues a push for an account's devices (see PushService.enqueue); resolves once it is durable. */
  readonly enqueue: PushService['enqueue'];
  /** The notify API's work: live to connected sessions, by push to the devices the policy picks. */
  readonly notify: PushService['notify'];
  /** Registrations and the queue, as stored (register through `service` to get the limits and the log). */
  readonly registrations: PushRepository;
  readonly service: PushService;
  readonly worker: PushWorker;
  readonly providers: ReadonlyMap<string, PushProvider>;
  /** Resolves once the XMPP triggers fired so far have written their pushes (or found none to write). */
  readonly xmppSettled: () => Promise<void>;
}

const running = new WeakMap<PresenceEngine, PushRuntime>();
export function pushOf(engine: PresenceEngine): PushRuntime | undefined {
  return running.get(engine);
}

/** Accounts whose registrations the push path keeps in memory (about 1 KB each, a few devices). */
const REGISTRATION_CACHE_ACCOUNTS = 10_000;

/** How long shutdown waits for pushes under way before cutting them (they are sent after the restart). */
const STOP_BOUND_MS = 5_000;

/**
 * The push feature with provider factories by type (`fcm`, `apns`, `webpush`); `webhook` is built in.
 * Each entry of push_providers is built at start: a bad entry stops the server with a message naming it.
 */
export function definePushFeature(factories: ReadonlyMap<string, ProviderFactory>): FeatureDefinition {
  return defineFeature({
    name: 'push',
    enabled: configSwitch('push'),
    migrations: PUSH_MIGRATIONS,
    async setup(ctx) {
      const c = ctx.config;
      const log = ctx.log;
      const types = new Map(factories);
      types.set('webhook', webhookProviderFactory({ allowPrivate: c.webhooks_allow_private, timeoutMs: c.push_timeout_ms }));
      const providers = new Map<string, PushProvider>();
      const closeProviders = async () => {
        for (const p of providers.values()) await p.close().catch((err: unknown) => log.warn({ err, provider: p.name }, 'closing a push provider failed'));
      };
      try {
        for (const [name, entry] of Object.entries(c.push_providers)) {
          const type = entry.type;
          const factory = typeof type === 'string' ? types.get(type) : undefined;
          if (factory === undefined) {
            throw new ProviderConfigError(`push_providers.${name}.type must be one of ${[...types.keys()].join(', ')} (got ${JSON.stringify(type)?.slice(0, 40)})`);
          }
          providers.set(name, factory(name, entry, { dataDir: c.data_dir, log: log.child({ provider: name }) }));
        }
      } catch (e) {
        await closeProviders();
        throw e;
      }
      if (providers.size > 0) log.info({ providers: [...providers.values()].map((p) => `${p.name} (${p.type})`) }, 'push providers ready');

      // Registrations are kept in memory for the push path only where no other node changes them.
      const repo = pushRepository(ctx.storage, { cacheAccounts: ctx.cluster.clustered ? 0 : REGISTRATION_CACHE_ACCOUNTS });
      const registry = ctx.metrics.registry;
      const sent = new Counter({ name: 'presenced_push_sent_total', help: 'Pushes the provider accepted, by provider.', labelNames: ['provider'], registers: [registry] });
      const failed = new Counter({
        name: 'presenced_push_failed_total',
        help: 'Push attempts that failed, by provider and outcome: retry (will be tried again) or failed (refused, or given up after push_max_attempts).',
        labelNames: ['provider', 'outcome'],
        registers: [registry],
      });
      const pruned = new Counter({ name: 'presenced_push_pruned_total', help: 'Registrations removed because the provider said their token is dead, by provider.', labelNames: ['provider'], registers: [registry] });
      const latency = new Histogram({
        name: 'presenced_push_latency_seconds',
        help: 'Time from sending a push request to the provider\'s answer, by provider.',
        labelNames: ['provider'],
        buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        registers: [registry],
      });
      new Gauge({
        name: 'presenced_push_pending',
        help: 'Pushes waiting in the queue (to be sent, or to be retried).',
        registers: [registry],
        async collect() {
          this.set(await repo.pendingCount());
        },
      });

      // In a cluster every node's worker counts every device's pushes against push_rate_per_device_per_minute:
      // each node tells the others what it sends, gathered per event-loop turn.
      let counted: string[] = [];
      const worker = new PushWorker(repo, providers, {
        onCount: (registrationId) => {
          if (!ctx.cluster.clustered) return;
          counted.push(registrationId);
          if (counted.length === 1) {
            setImmediate(() => {
              const s = counted;
              counted = [];
              void ctx.cluster.publish('sent', { r: s });
            });
          }
        },
        maxAttempts: c.push_max_attempts,
        maxFailures: c.push_max_failures,
        backoffBaseMs: c.push_backoff_base_ms,
        backoffCapMs: c.push_backoff_cap_ms,
        ratePerMinute: c.push_rate_per_device_per_minute,
        concurrency: c.push_concurrency,
        timeoutMs: c.push_timeout_ms,
        log: log.child({ part: 'queue' }),
        observe: (provider, r) => {
          if (r.outcome === 'pruned') return pruned.inc({ provider });
          if (r.outcome === 'sent') sent.inc({ provider });
          else if (r.outcome === 'retry' || r.outcome === 'failed') failed.inc({ provider, outcome: r.outcome });
          latency.observe({ provider }, r.latencyMs / 1000);
        },
      });
      const service = new PushService(repo, providers, ctx.engine, c, log, () => worker.written());

      // An account's devices go with it; accounts removed while the server was down are swept now.
      ctx.engine.events.on('account.deleted', ({ jid }) => {
        repo.removeAccount(jid).then(
          (n) => n > 0 && log.info({ jid, registrations: n }, 'push registrations of a deleted account removed'),
          (err: unknown) => log.error({ err, jid }, 'removing the push registrations of a deleted account failed'),
        );
      });
      for (const account of await repo.accounts()) {
        if (!(await ctx.engine.accountExists(account))) log.info({ account, registrations: await repo.removeAccount(account) }, 'push registrations of a removed account deleted');
      }

      const native = nativePushHandlers(service, c.webhooks_allow_private);
      ctx.native.handle('push.register', native.register);
      ctx.native.handle('push.unregister', native.unregister);
      ctx.native.handle('push.list', native.list);
      ctx.http(notifyRoutes(ctx.engine, service, c.admin_token), { prefix: '/api/v1/accounts' });
      ctx.http(providerRoutes(providers), { prefix: '/api/v1/push' });
      const xmppTriggers = await setupXmppPush(ctx, service);
      ctx.cluster.subscribe('sent', (p) => {
        const ids = (p as { r?: unknown }).r;
        if (Array.isArray(ids)) for (const id of ids) if (typeof id === 'string') worker.countElsewhere(id);
      });
      // An account enabling XEP-0357 push on one node is pushed for messages handled on any other.
      ctx.cluster.subscribe('enabled', (p) => {
        const account = (p as { u?: unknown }).u;
        if (typeof account === 'string') xmppTriggers.enabledBy(account);
      });
      ctx.cluster.onResync(() => xmppTriggers.load());

      running.set(ctx.engine, {
        enqueue: service.enqueue.bind(service),
        notify: service.notify.bind(service),
        registrations: repo,
        service,
        worker,
        providers,
        xmppSettled: async () => {
          while (xmppTriggers.pending.size > 0) await Promise.allSettled([...xmppTriggers.pending]);
        },
      });
      // Pushes left by a previous run (a crash included) are in the queue: the first pass sends them.
      worker.start(!ctx.cluster.clustered);
      ctx.onStop(closeProviders);
      ctx.onStop(() => worker.stop(STOP_BOUND_MS));
      // Triggers under way finish writing their pushes before the worker and the store go (onStop runs in reverse).
      ctx.onStop(() => running.get(ctx.engine)?.xmppSettled());
    },
  });
}

/** The built-in push feature. FCM, APNs and Web Push factories join here (src/features/push/providers/index.ts). */
export const pushFeature = definePushFeature(platformProviderFactories());
