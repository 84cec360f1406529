import { Counter, Gauge } from 'prom-client';
import type { PresenceEngine } from '../../../engine/engine.js';
import type { FeatureContext } from '../../feature.js';
import type { AppRepository } from '../repository.js';
import { WebhookOutbox, type WebhookUpdate } from './outbox.js';
import { feedWebhooks, type GrantedAudience } from './presence-source.js';
import type { AppLog } from '../log-hub.js';
import { webhookRoutes } from './routes.js';
import { webhookStore, type WebhookStore } from './store.js';
import { WebhookWorker } from './worker.js';

/** How long shutdown waits for webhook requests under way before cutting them (they are retried after the restart). */
export const STOP_BOUND_MS = 5_000;

export interface Webhooks {
  readonly store: WebhookStore;
  readonly outbox: WebhookOutbox;
  readonly worker: WebhookWorker;
  /** Owner routes, mounted by the apps routes under /api/v1/apps. */
  readonly routes: ReturnType<typeof webhookRoutes>;
}

// Deliberately exposed for tests (and later parts of the feature): the webhooks of a running server, by its engine.
const running = new WeakMap<PresenceEngine, Webhooks>();
export function webhooksOf(engine: PresenceEngine): Webhooks | undefined {
  return running.get(engine);
}

export interface WebhookDeps {
  readonly apps: AppRepository;
  /** The outbox's store (made here when not given). */
  readonly store?: WebhookStore;
  /** Who granted which app (the in-memory grant index). */
  readonly audience: GrantedAudience;
  /** Where written updates go next (the apps' streams). */
  readonly hub: AppLog;
  /** A grant's "last delivery" (shown to the user), after a successful request. */
  readonly markDelivered: (appId: string, account: string, at: number) => Promise<void>;
  /** Sees each live presence update before it is enqueued. */
  readonly onLive?: (updates: readonly WebhookUpdate[]) => void;
}

/** Keeps a grant's last delivery time current to this precision, not one write per request. */
const MARK_DELIVERED_EVERY_MS = 60_000;

/** Starts durable webhook delivery for the apps feature: outbox, worker, owner routes, metrics, and the presence feed. */
export function startWebhooks(ctx: FeatureContext, deps: WebhookDeps): Webhooks {
  const { apps, audience, hub } = deps;
  const c = ctx.config;
  const log = ctx.log.child({ part: 'webhooks' });
  const store = deps.store ?? webhookStore(ctx.storage, { backlogCountCap: c.webhook_batch_max });
  const deliveries = new Counter({ name: 'presenced_webhook_deliveries_total', help: 'Webhook requests by result (delivered, failed, refused by the SSRF rule).', labelNames: ['result'], registers: [ctx.metrics.registry] });
  let worker: WebhookWorker | null = null;
  const outbox = new WebhookOutbox(store, { flushMs: c.webhook_flush_ms, writeRetryMs: c.webhook_backoff_base_ms, log, onWritten: (logged) => {
    hub.written(logged);
    worker?.noteWritten(logged);
  } });
  const marked = new Map<string, number>();
  worker = new WebhookWorker(store, apps, {
    batchMax: c.webhook_batch_max,
    batchMs: c.webhook_batch_ms,
    timeoutMs: c.webhook_timeout_ms,
    retryWindowMs: c.webhook_retry_window_ms,
    backoffBaseMs: c.webhook_backoff_base_ms,
    backoffCapMs: c.webhook_backoff_cap_ms,
    // Streams resume from the same log: nothing younger than their retention is purged.
    retentionMs: Math.max(c.webhook_retention_ms, c.stream_retention_ms),
    audience,
    onDelivered: (appId, uids, at) => {
      for (const uid of uids) {
        // The time test first: it skips nearly every user of a busy app, without the grant lookup.
        const key = `${appId}\u0000${uid}`;
        if (at - (marked.get(key) ?? -Infinity) < MARK_DELIVERED_EVERY_MS) continue;
        const account = audience.accountOf(appId, uid);
        if (account === undefined) continue;
        marked.set(key, at);
        deps.markDelivered(appId, account, at).catch((err: unknown) => log.warn({ err, appId }, 'recording a grant\'s last delivery failed'));
      }
    },
    allowPrivate: c.webhooks_allow_private,
    log,
    count: (result) => deliveries.inc({ result }),
  });
  new Gauge({
    name: 'presenced_webhook_pending',
    help: 'Webhook updates not yet delivered (in the outbox, or in memory about to be written).',
    registers: [ctx.metrics.registry],
    async collect() {
      this.set((await store.pendingCount(null)) + outbox.buffered);
    },
  });
  const w = worker;
  const unsubscribe = feedWebhooks(ctx.engine, audience, {
    enqueue(updates) {
      deps.onLive?.(updates);
      outbox.enqueue(updates);
    },
  });
  // Rows a crashed process had claimed become due again when their lease runs out: the worker sees them in its backlog.
  w.start();
  // Stops run in reverse: first the worker (requests under way get a bound), then the last updates are written.
  ctx.onStop(async () => {
    unsubscribe();
    await outbox.close();
  });
  ctx.onStop(() => w.stop(STOP_BOUND_MS));
  const hooks: Webhooks = { store, outbox, worker: w, routes: webhookRoutes({ store, wake: () => w.wake(), now: Date.now }) };
  running.set(ctx.engine, hooks);
  return hooks;
}
