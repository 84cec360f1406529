import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { PresenceEngine } from '../engine/engine.js';
import type { Metrics } from '../metrics.js';
import type { FeatureStorage } from '../ports/store.js';
import type { Migration } from '../adapters/sqlite/migrations.js';
import type { FeatureCluster } from './peers.js';
import type { NativeRequestRegistry, XmppIqRegistry } from './registries.js';

/**
 * The seam every feature (apps, push, extensions, ...) plugs into, in the manner of a Prosody module or
 * a Fastify plugin: the composition root (server.ts) hands each enabled feature a context, and the
 * feature registers itself: event listeners, HTTP routes, native request types, XMPP IQ handlers,
 * metrics, its migrations and its storage. No protocol code names a feature, and the engine never
 * imports one. See docs/architecture.md, "Features".
 */

/** An HTTP plugin of a feature, registered encapsulated (its hooks and decorations stay inside). */
export type FeatureHttpPlugin = (app: FastifyInstance) => Promise<void>;

export interface FeatureContext {
  readonly config: Config;
  /**
   * The configuration read again from where it came from (file, environment), for a feature that
   * reloads part of itself (the extensions on SIGHUP). Throws ConfigError, with every problem listed,
   * when the source no longer validates. Without a source (embedded, tests), the configuration above.
   */
  rereadConfig(): Config;
  readonly engine: PresenceEngine;
  /** A child of the server's logger, tagged `feature: <name>`. */
  readonly log: Logger;
  /** The server's Prometheus registry (`/metrics`); name metrics `presenced_<feature>_...`. */
  readonly metrics: Metrics;
  /** The database, with its dialect; the feature's migrations have been applied to it. */
  readonly storage: FeatureStorage;
  /** Registers an HTTP plugin under `prefix` (e.g. `/api/v1/apps`). Routes go live when the server listens. */
  http(plugin: FeatureHttpPlugin, opts: { readonly prefix: string }): void;
  readonly native: Pick<NativeRequestRegistry, 'handle'>;
  /**
   * IQ payloads by namespace, features of the account's bare JID, components (`<label>.<domain>`),
   * message and stream hooks, and a view of the streams (client state, held sessions).
   */
  readonly xmpp: Pick<XmppIqRegistry, 'iq' | 'accountFeatures' | 'component' | 'hooks' | 'sessions'>;
  /**
   * A random 32-byte secret generated on first use and the same ever after: in `data_dir/<file>`
   * (mode 0600) with SQLite; in the shared PostgreSQL database (table feature_secrets) otherwise, so
   * that every node of a cluster uses the same one (see feature-secrets.ts).
   */
  secret(file: string): Promise<Buffer>;
  /**
   * The feature's line to itself on the other nodes of a cluster: messages, a lock held by one node at
   * a time, and what to do after messages may have been missed. Inert with the in-process bus.
   */
  readonly cluster: FeatureCluster;
  /** Called at shutdown, in reverse order of setup, after the front doors closed and before the store closes. */
  onStop(fn: () => Promise<void> | void): void;
}

export interface FeatureDefinition {
  /** Lower-case name: the folder under src/features/, the log tag and the migration table's key. */
  readonly name: string;
  /**
   * Whether the configuration turns this feature on. Built-in features each have a boolean key of
   * their name in CONFIG_KEYS (e.g. `apps: true`).
   */
  enabled(config: Config): boolean;
  /** Applied in order at start, each in a transaction, recorded per feature (src/features/migrations.ts). */
  readonly migrations: readonly Migration[];
  setup(ctx: FeatureContext): Promise<void> | void;
}

const NAME = /^[a-z][a-z0-9_]{0,31}$/;

/** Declares a feature (checks its name and the order of its migrations at definition time). */
export function defineFeature(def: FeatureDefinition): FeatureDefinition {
  if (!NAME.test(def.name)) throw new Error(`feature name "${def.name}" must be lower case letters, digits and _`);
  let prev = 0;
  for (const m of def.migrations) {
    if (!Number.isInteger(m.version) || m.version <= prev) throw new Error(`feature ${def.name}: migration "${m.name}" must have an increasing positive integer version`);
    prev = m.version;
  }
  return def;
}

/** The switch of a built-in feature: its boolean configuration key. */
export function configSwitch(key: keyof Config): (config: Config) => boolean {
  return (config) => config[key] === true;
}
