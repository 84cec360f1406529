import { Counter, Gauge } from 'prom-client';
import type { FeatureContext } from '../../feature.js';
import type { AppService } from '../app-service.js';
import type { AppLog } from '../log-hub.js';
import type { GrantedAudience } from '../webhooks/presence-source.js';
import type { WebhookStore } from '../webhooks/store.js';
import { END_REASONS, StreamRegistry } from './app-stream.js';
import { apiStreamRoutes, rootStreamRoutes } from './routes.js';

export interface StreamDepsOfFeature {
  readonly service: AppService;
  readonly store: WebhookStore;
  readonly audience: GrantedAudience;
  readonly hub: AppLog;
}

/**
 * Held-open presence streams of apps (docs/apps.md, "Presence stream") and the presence of many users
 * in one call: routes at `/:appid/presence.json` and under `/api/v1/apps`, metrics, and shutdown.
 */
export function startStreams(ctx: FeatureContext, deps: StreamDepsOfFeature): StreamRegistry {
  const c = ctx.config;
  const registers = [ctx.metrics.registry];
  const lines = new Counter({ name: 'presenced_app_stream_lines_total', help: 'Lines written to app presence streams, by type (presence, keepalive, end, ...).', labelNames: ['type'], registers });
  const lagCuts = new Counter({ name: 'presenced_app_stream_lag_cuts_total', help: 'App presence streams ended because their consumer fell too far behind (stream_max_lag_bytes).', registers });
  const registry = new StreamRegistry({
    store: deps.store,
    audience: deps.audience,
    hub: deps.hub,
    apps: deps.service.repo,
    log: ctx.log.child({ part: 'streams' }),
    opts: { retentionMs: c.stream_retention_ms, keepaliveMs: c.stream_keepalive_ms, maxLagBytes: c.stream_max_lag_bytes },
    countLine: (type, n) => lines.inc({ type }, n),
    countLagCut: () => lagCuts.inc(),
  });
  new Gauge({
    name: 'presenced_app_stream_open',
    help: 'App presence streams whose connection is open.',
    registers,
    collect() {
      this.set(registry.size);
    },
  });
  new Gauge({
    name: 'presenced_app_stream_buffered_bytes',
    help: 'Bytes written to app presence streams that their consumers have not taken yet (each stream is bounded by stream_max_lag_bytes).',
    registers,
    collect() {
      this.set(registry.bufferedBytes);
    },
  });
  const routeDeps = { service: deps.service, registry, store: deps.store, audience: deps.audience };
  const root = rootStreamRoutes(routeDeps);
  // Streams end before the HTTP server waits for its connections to close (preClose), or it would wait for ever.
  ctx.http(async (app) => {
    app.addHook('preClose', () => registry.endAll(END_REASONS.shutdown));
    await root(app);
  }, { prefix: '/' });
  ctx.http(apiStreamRoutes(routeDeps), { prefix: '/api/v1/apps' });
  // If the HTTP server never listened, its preClose did not run.
  ctx.onStop(() => registry.endAll(END_REASONS.shutdown));
  return registry;
}
