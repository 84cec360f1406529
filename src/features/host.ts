import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { PresenceEngine } from '../engine/engine.js';
import type { Metrics } from '../metrics.js';
import type { FeatureStorage } from '../ports/store.js';
import type { FeatureContext, FeatureDefinition, FeatureHttpPlugin } from './feature.js';
import { featureSecret } from './feature-secrets.js';
import { runFeatureMigrations } from './migrations.js';
import { PeerChannels } from './peers.js';
import { NativeRequestRegistry, XmppIqRegistry } from './registries.js';

export interface FeatureHostDeps {
  readonly config: Config;
  /** Reads the configuration again from its source (see FeatureContext.rereadConfig). */
  readonly rereadConfig?: () => Config;
  readonly engine: PresenceEngine;
  readonly log: Logger;
  readonly metrics: Metrics;
  readonly storage: FeatureStorage;
  /** Built-in native request types and XMPP namespaces, which features may not take over. */
  readonly reservedRequestTypes: readonly string[];
  readonly reservedIqNamespaces: readonly string[];
}

export interface StartedFeatures {
  readonly names: readonly string[];
  readonly native: NativeRequestRegistry;
  readonly xmpp: XmppIqRegistry;
  /** HTTP plugins to register before the server listens. */
  readonly http: ReadonlyArray<{ readonly plugin: FeatureHttpPlugin; readonly prefix: string; readonly feature: string }>;
  stop(): Promise<void>;
}

/**
 * Runs the migrations and the setup of every enabled feature, in the order given. A disabled feature
 * is not touched at all: no migration, no route, no request type, no listener.
 */
export async function startFeatures(all: readonly FeatureDefinition[], deps: FeatureHostDeps): Promise<StartedFeatures> {
  const native = new NativeRequestRegistry(deps.reservedRequestTypes);
  const xmpp = new XmppIqRegistry(deps.reservedIqNamespaces);
  const http: Array<{ plugin: FeatureHttpPlugin; prefix: string; feature: string }> = [];
  const stops: Array<() => Promise<void> | void> = [];
  const names: string[] = [];
  const seen = new Set<string>();
  const peers = new PeerChannels(deps.engine.bus, deps.storage, deps.log.child({ component: 'peers' }));
  const stop = async (): Promise<void> => {
    for (const fn of stops.splice(0).reverse()) {
      try {
        await fn();
      } catch (err) {
        deps.log.error({ err }, 'feature stop failed');
      }
    }
  };
  try {
    for (const f of all) {
      if (seen.has(f.name)) throw new Error(`feature ${f.name} is listed twice`);
      seen.add(f.name);
      if (!f.enabled(deps.config)) continue;
      await runFeatureMigrations(deps.storage.db, f.name, f.migrations);
      const ctx: FeatureContext = {
        config: deps.config,
        rereadConfig: deps.rereadConfig ?? (() => deps.config),
        engine: deps.engine,
        log: deps.log.child({ feature: f.name }),
        metrics: deps.metrics,
        storage: deps.storage,
        http: (plugin, opts) => {
          if (!opts.prefix.startsWith('/')) throw new Error(`feature ${f.name}: an HTTP prefix must start with /`);
          http.push({ plugin, prefix: opts.prefix, feature: f.name });
        },
        native: { handle: (type, handler) => native.handle(type, handler) },
        xmpp: {
          iq: (ns, handler, features) => xmpp.iq(ns, handler, features),
          accountFeatures: (features) => xmpp.accountFeatures(features),
          component: (label, c) => xmpp.component(label, c),
          hooks: xmpp.hooks,
          // A getter: the XMPP server starts after the features and sets its view then.
          get sessions() {
            return xmpp.sessions;
          },
        },
        secret: (file) => featureSecret(deps.storage, deps.config.data_dir, file, deps.log.child({ feature: f.name })),
        cluster: peers.forFeature(f.name),
        onStop: (fn) => stops.push(fn),
      };
      await f.setup(ctx);
      names.push(f.name);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { names, native, xmpp, http, stop };
}
