import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { PresenceEngine } from './engine/engine.js';

/**
 * Prometheus metrics. A registry per server (not prom-client's global one) so several servers in one
 * process, as in the tests, do not share or double-register metrics.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly errors: Counter<'code'>;
  readonly authFailures: Counter;
  readonly httpRequests: Counter<'status'>;

  constructor(engine: PresenceEngine, connections: () => Record<string, number>, restingParsers: () => number = () => 0) {
    collectDefaultMetrics({ register: this.registry, prefix: 'presenced_process_' });
    const reg = [this.registry];
    new Gauge({
      name: 'presenced_connections',
      help: 'Open client connections by protocol.',
      labelNames: ['protocol'],
      registers: reg,
      collect() {
        for (const [protocol, n] of Object.entries(connections())) this.set({ protocol }, n);
      },
    });
    new Gauge({
      name: 'presenced_xmpp_parsers_resting',
      help: 'XMPP TCP streams quiet long enough to have given their XML parser back (xmpp_parser_rest_ms).',
      registers: reg,
      collect() {
        this.set(restingParsers());
      },
    });
    new Gauge({
      name: 'presenced_sessions_online',
      help: 'Sessions held by this node (lingering ones in their grace period included).',
      registers: reg,
      collect() {
        this.set(engine.localSessionCount());
      },
    });
    new Gauge({
      name: 'presenced_accounts_online',
      help: 'Accounts with at least one session (cluster-wide with the Redis bus).',
      registers: reg,
      async collect() {
        this.set((await engine.bus.counts()).accounts);
      },
    });
    new Counter({
      name: 'presenced_presence_changes_total',
      help: 'Changes of account presence visible to watchers.',
      registers: reg,
      collect() {
        this.reset();
        this.inc(engine.stats.presenceChanges);
      },
    });
    new Counter({
      name: 'presenced_deliveries_total',
      help: 'Updates handed to client sessions (presence, roster, subscription).',
      registers: reg,
      collect() {
        this.reset();
        this.inc(engine.stats.deliveries);
      },
    });
    new Counter({
      name: 'presenced_login_throttled_total',
      help: 'Login attempts refused because their account or address failed too often recently, by front door.',
      labelNames: ['door'],
      registers: reg,
      collect() {
        this.reset();
        for (const [door, n] of engine.loginThrottle.throttled) this.inc({ door }, n);
      },
    });
    const passwords = engine.passwords;
    new Gauge({
      name: 'presenced_password_queue',
      help: 'Password derivations (scrypt, PBKDF2) waiting for the password pool, and running in it (label state).',
      labelNames: ['state'],
      registers: reg,
      collect() {
        this.set({ state: 'waiting' }, passwords.pool.queued);
        this.set({ state: 'running' }, passwords.pool.busy);
      },
    });
    new Counter({
      name: 'presenced_password_derivations_total',
      help: 'Password derivations run by the password pool (logins that sent a password, registrations, password changes).',
      registers: reg,
      collect() {
        this.reset();
        this.inc(passwords.pool.stats.derivations);
      },
    });
    new Counter({
      name: 'presenced_password_dropped_total',
      help: 'Queued password checks dropped at their turn without a derivation (their connection went, or the login throttle refused them meanwhile).',
      registers: reg,
      collect() {
        this.reset();
        this.inc(passwords.pool.stats.dropped);
      },
    });
    new Counter({
      name: 'presenced_password_cache_hits_total',
      help: 'Passwords sent in clear recognised by the verified-password cache, without a derivation.',
      registers: reg,
      collect() {
        this.reset();
        this.inc(passwords.stats.cacheHits);
      },
    });
    new Counter({
      name: 'presenced_account_loads_total',
      help: 'Account states read from the store into the cache (anonymous questions about accounts that are not public never cause one).',
      registers: reg,
      collect() {
        this.reset();
        this.inc(engine.stats.accountLoads);
      },
    });
    const bus = engine.bus.stats;
    if (bus !== undefined) {
      const counter = (name: string, help: string, read: () => number): void => {
        new Counter({
          name,
          help,
          registers: reg,
          collect() {
            this.reset();
            this.inc(read());
          },
        });
      };
      counter('presenced_bus_batches_sent_total', 'Delivery batches written to other nodes (one per destination node per event-loop tick, or more for large fan-outs).', () => bus.batchesSent);
      counter('presenced_bus_remote_deliveries_total', 'Deliveries (recipient x update) sent to sessions on other nodes.', () => bus.remoteDeliveries);
      counter('presenced_bus_remote_deliveries_queued_total', 'Deliveries (recipient x update) handed to the bus for sessions on other nodes; minus presenced_bus_remote_deliveries_total, those waiting to leave (e.g. while Redis is unreachable).', () => bus.remoteQueued);
      counter('presenced_bus_deliveries_received_total', 'Deliveries received from other nodes for sessions on this one.', () => bus.deliveriesReceived);
      counter('presenced_bus_lease_renew_failures_total', 'Lease renewals of this node that failed (Redis unreachable or too slow, or the lease was lost).', () => bus.leaseRenewFailures);
      counter('presenced_bus_fenced_total', 'Times this node found itself declared dead (paused or cut off past its lease) and dropped every connection.', () => bus.fenced);
      counter('presenced_bus_writes_refused_total', 'Registry writes of this node refused because its epoch was fenced off.', () => bus.writesRefused);
      counter('presenced_bus_nodes_declared_down_total', 'Dead nodes whose sessions this node declared offline.', () => bus.nodesDeclaredDown);
      counter('presenced_bus_sessions_declared_offline_total', 'Sessions of dead nodes this node declared offline (reason node_down).', () => bus.sessionsDeclaredOffline);
      counter('presenced_bus_resyncs_total', "Rebuilds of this node's replica of the session registry (start, Redis reconnects).", () => bus.resyncs);
      new Gauge({
        name: 'presenced_bus_connected',
        help: 'Whether this node reaches Redis and holds its lease (1) or not (0).',
        registers: reg,
        collect() {
          this.set(bus.connected);
        },
      });
    }
    this.errors = new Counter({ name: 'presenced_errors_total', help: 'Errors answered to clients, by code.', labelNames: ['code'], registers: reg });
    this.authFailures = new Counter({ name: 'presenced_auth_failures_total', help: 'Failed logins.', registers: reg });
    this.httpRequests = new Counter({ name: 'presenced_http_requests_total', help: 'HTTP requests by status code.', labelNames: ['status'], registers: reg });
  }
}
