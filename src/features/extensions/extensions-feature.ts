import { adminOnlyHook } from '../../protocols/http/admin-only.js';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Counter, Gauge, Histogram } from 'prom-client';
import { ConfigError, type Config } from '../../config.js';
import { PresenceError } from '../../core/errors.js';
import { handleControl } from '../../control-channel.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { authHeaders } from '../../protocols/http/schemas.js';
import { configSwitch, defineFeature } from '../feature.js';
import { contextCall, sessionInfo, subscriptionInfo, userOf } from './context.js';
import { discoverExtensions } from './discover.js';
import { EXTENSION_MIGRATIONS } from './migrations.js';
import { ExtensionRunner, type ExtensionError, type ExtensionState, type RunnerOptions } from './runner.js';

/**
 * Server-side presence extensions (docs/extensions.md): operator-supplied modules that the server
 * calls on every connect, disconnect, presence and subscription change, each in a worker thread of its
 * own, behind a bounded queue and a time budget. The engine's events are the only seam: the listeners
 * below only queue, so presence never waits for an extension, however it behaves.
 */

/** One row of `presenced extensions list` and GET /api/v1/extensions. */
export interface ExtensionView {
  readonly name: string;
  readonly module: string;
  readonly source: 'config' | 'folder';
  readonly state: ExtensionState;
  /** Why it is failed or disabled; null otherwise. */
  readonly reason: string | null;
  readonly hooks: readonly string[];
  readonly handled: number;
  readonly failed: number;
  readonly dropped: number;
  readonly restarts: number;
  readonly queueDepth: number;
  readonly lastError: ExtensionError | null;
}

/** How long stopping waits for an extension's queue to drain (shutdown events included) before dropping the rest. */
const DRAIN_BOUND_MS = 3_000;

/** What the manager needs of the configuration and the server, read again at each reload. */
export interface ManagerOptions {
  /** The configuration at start; `reread` gives the one a reload uses. */
  readonly config: Config;
  readonly reread: () => Config;
  readonly runnerOptions: (config: Config) => Omit<RunnerOptions, 'log'>;
}

export class ExtensionManager {
  #runners: ExtensionRunner[] = [];
  #broken: ExtensionView[] = [];
  #reloading: Promise<ExtensionView[]> | null = null;
  #config: Config;

  constructor(
    private readonly log: Logger,
    private readonly opts: ManagerOptions,
  ) {
    this.#config = opts.config;
  }

  /** Whether any extension may take events (the listeners do nothing otherwise). */
  get active(): boolean {
    return this.#runners.length > 0;
  }

  /** Queues an event for every extension; `args` is built once, when the first extension's turn comes. */
  dispatch(hook: string, args: () => Promise<unknown[]>): void {
    let built: Promise<unknown[]> | null = null;
    const once = () => (built ??= args());
    for (const r of this.#runners) r.enqueue({ hook, args: once });
  }

  /** Discovers and starts every extension. Throws only with extensions_required, listing what failed. */
  async start(): Promise<void> {
    const config = this.#config;
    const { specs, problems } = config.extensions ? discoverExtensions(config) : { specs: [], problems: [] };
    this.#broken = problems.map((p) => ({
      name: p.name,
      module: p.where,
      source: p.source,
      state: 'failed' as const,
      reason: p.message,
      hooks: [],
      handled: 0,
      failed: 0,
      dropped: 0,
      restarts: 0,
      queueDepth: 0,
      lastError: { kind: 'load' as const, message: p.message, hook: null, at: Date.now() },
    }));
    const messages = problems.map((p) => `extension "${p.name}": ${p.message}`);
    const runnerOptions = this.opts.runnerOptions(config);
    const runners = specs.map((s) => new ExtensionRunner(s, { ...runnerOptions, log: this.log }));
    this.#runners = runners;
    const results = await Promise.allSettled(runners.map((r) => r.start()));
    for (const r of results) if (r.status === 'rejected') messages.push((r.reason as Error).message);
    for (const m of messages) this.log.error(m);
    const running = runners.filter((r) => r.state === 'running');
    if (running.length > 0) this.log.info({ extensions: running.map((r) => r.spec.name) }, 'extensions running');
    if (messages.length > 0 && config.extensions_required) {
      await this.stop();
      throw new Error(`extensions_required is on and ${messages.length === 1 ? 'an extension' : `${messages.length} extensions`} could not start:\n  ${messages.join('\n  ')}`);
    }
  }

  /** Stops every extension (each drains its queue for a bounded time, then runs onStop). */
  async stop(): Promise<void> {
    const runners = this.#runners;
    const deadline = Date.now() + DRAIN_BOUND_MS;
    while (runners.some((r) => r.state === 'running' && r.queueDepth > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await Promise.all(runners.map((r) => r.stop()));
  }

  /**
   * Stops them all and starts them again from the folder and the configuration, read again from its
   * source: new code, new settings, fresh workers and counters. A configuration that no longer
   * validates refuses the reload (PresenceError 'bad-request' listing the problems) and leaves the
   * running extensions as they are.
   */
  reload(): Promise<ExtensionView[]> {
    this.#reloading ??= (async () => {
      try {
        try {
          this.#config = this.opts.reread();
        } catch (e) {
          const why = e instanceof ConfigError ? e.problems.join('; ') : (e as Error).message;
          this.log.error({ problems: why }, 'extension reload refused: the configuration does not validate');
          throw new PresenceError('bad-request', `extensions not reloaded: the configuration does not validate: ${why}`);
        }
        const old = this.#runners;
        this.#runners = [];
        await Promise.all(old.map((r) => r.stop()));
        await this.start().catch((e: unknown) => this.log.error({ err: e }, 'extension reload: some extensions could not start'));
        this.log.info({ extensions: this.#runners.length }, 'extensions reloaded');
        return this.list();
      } finally {
        this.#reloading = null;
      }
    })();
    return this.#reloading;
  }

  list(): ExtensionView[] {
    const live = this.#runners.map((r) => ({
      name: r.spec.name,
      module: r.spec.where,
      source: r.spec.source,
      state: r.state,
      reason: r.reason,
      hooks: r.hooks,
      handled: r.handled,
      failed: r.failed,
      dropped: r.dropped,
      restarts: r.restarts,
      queueDepth: r.queueDepth,
      lastError: r.lastError,
    }));
    return [...live, ...this.#broken].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  runners(): readonly ExtensionRunner[] {
    return this.#runners;
  }
}

const running = new WeakMap<PresenceEngine, ExtensionManager>();
/** The extensions of a running server, by its engine (for the CLI's SIGHUP and for tests). */
export function extensionsOf(engine: PresenceEngine): ExtensionManager | undefined {
  return running.get(engine);
}

function adminRoutes(engine: PresenceEngine, manager: ExtensionManager, adminToken: string) {
  return async function register(app: FastifyInstance): Promise<void> {
    app.addHook('onRequest', adminOnlyHook(engine, adminToken));
    // '' (not '/'): the route is the prefix itself, without a second one ending in a slash.
    app.get('', { schema: { headers: authHeaders } }, async () => ({ extensions: manager.list() }));
    app.post('/reload', { schema: { headers: authHeaders } }, async () => ({ extensions: await manager.reload() }));
  };
}

export const extensionsFeature = defineFeature({
  name: 'extensions',
  enabled: configSwitch('extensions'),
  migrations: EXTENSION_MIGRATIONS,
  async setup(ctx) {
    const { engine, config: c } = ctx;
    const registry = ctx.metrics.registry;
    const events = new Counter({
      name: 'presenced_extension_events_total',
      help: 'Events per extension by outcome: handled, failed (the hook threw, ran past its budget or its worker died), dropped (queue full, disabled, or left at stop).',
      labelNames: ['extension', 'outcome'],
      registers: [registry],
    });
    const restarts = new Counter({ name: 'presenced_extension_restarts_total', help: 'Restarts of an extension after a failure.', labelNames: ['extension'], registers: [registry] });
    const duration = new Histogram({
      name: 'presenced_extension_call_seconds',
      help: 'Time an extension took to handle an event.',
      labelNames: ['extension'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    let manager: ExtensionManager | null = null;
    new Gauge({
      name: 'presenced_extension_queue_depth',
      help: 'Events waiting for an extension.',
      labelNames: ['extension'],
      registers: [registry],
      collect() {
        this.reset();
        for (const r of manager?.runners() ?? []) this.set({ extension: r.spec.name }, r.queueDepth);
      },
    });
    new Gauge({
      name: 'presenced_extension_up',
      help: '1 for an extension that is running, 0 for one starting, restarting, disabled or failed.',
      labelNames: ['extension'],
      registers: [registry],
      collect() {
        this.reset();
        for (const v of manager?.list() ?? []) this.set({ extension: v.name }, v.state === 'running' ? 1 : 0);
      },
    });
    const m = new ExtensionManager(ctx.log, {
      config: c,
      reread: () => ctx.rereadConfig(),
      runnerOptions: (cfg) => ({
        budgetMs: cfg.extension_budget_ms,
        queueMax: cfg.extension_queue_max,
        memoryMb: cfg.extension_memory_mb,
        maxFailures: cfg.extension_max_failures,
        backoffBaseMs: cfg.extension_backoff_base_ms,
        context: (name, op, args) => contextCall({ engine, db: ctx.storage.db }, name, op, args),
        observe: (name, what, seconds) => {
          if (what === 'restart') restarts.inc({ extension: name });
          else events.inc({ extension: name, outcome: what });
          if (what === 'handled' && seconds !== undefined) duration.observe({ extension: name }, seconds);
        },
      }),
    });
    manager = m;

    // The listeners only queue; the user is described when the extension's turn comes.
    const protocols = new Map<string, string>();
    const key = (jid: string, resource: string) => `${jid}\u0000${resource}`;
    engine.events.on('session.opened', ({ jid, session, protocol }) => {
      if (!m.active) return;
      protocols.set(key(jid, session.resource), protocol);
      const at = Date.now();
      m.dispatch('onUserPresence', async () => [await userOf(engine, jid), { type: 'connect', resource: session.resource, protocol, at }]);
    });
    engine.events.on('session.closed', ({ jid, session, reason, protocol: elsewhere }) => {
      const k = key(jid, session.resource);
      const protocol = protocols.get(k) ?? elsewhere;
      protocols.delete(k);
      if (!m.active) return;
      const at = Date.now();
      const info = sessionInfo(session, protocol);
      m.dispatch('onSessionClosed', async () => [info, reason, await userOf(engine, jid)]);
      m.dispatch('onUserPresence', async () => [await userOf(engine, jid), { type: 'disconnect', resource: session.resource, reason, at }]);
    });
    // The engine keeps a taken-over session going (watchers see nothing), but for an extension the old
    // connection ended and a new one began: reported as a disconnect (replaced) then a connect. When
    // the new connection is on another node, that node reports the connect (its session.opened).
    engine.events.on('session.replaced', ({ jid, session, protocol, elsewhere }) => {
      const k = key(jid, session.resource);
      const before = protocols.get(k);
      if (elsewhere) protocols.delete(k);
      else protocols.set(k, protocol);
      if (!m.active) return;
      const at = Date.now();
      const info = sessionInfo(session, before);
      m.dispatch('onSessionClosed', async () => [info, 'replaced', await userOf(engine, jid)]);
      m.dispatch('onUserPresence', async () => [await userOf(engine, jid), { type: 'disconnect', resource: session.resource, reason: 'replaced', at }]);
      if (!elsewhere) m.dispatch('onUserPresence', async () => [await userOf(engine, jid), { type: 'connect', resource: session.resource, protocol, at }]);
    });
    engine.events.on('presence.changed', ({ jid, presence, previous }) => {
      if (!m.active) return;
      const at = Date.now();
      m.dispatch('onUserPresence', async () => [await userOf(engine, jid, presence), { type: 'presence', previous: { online: previous.online, show: previous.show, status: previous.status }, at }]);
    });
    engine.events.on('subscription.changed', ({ owner, contact, state }) => {
      if (!m.active) return;
      const at = Date.now();
      const s = subscriptionInfo(state);
      m.dispatch('onSubscriptionChanged', async () => [{ owner, contact, state: s }]);
      m.dispatch('onUserPresence', async () => [await userOf(engine, owner), { type: 'subscription', contact, state: s, at }]);
    });
    engine.events.on('account.deleted', ({ jid }) => {
      for (const k of protocols.keys()) if (k.startsWith(`${jid}\u0000`)) protocols.delete(k);
    });

    await m.start();
    running.set(engine, m);
    handleControl(engine, 'extensions.list', async () => m.list());
    handleControl(engine, 'extensions.reload', () => m.reload());
    ctx.http(adminRoutes(engine, m, c.admin_token), { prefix: '/api/v1/extensions' });
    ctx.onStop(() => m.stop());
  },
});
