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
      help: 'Accounts with at least one session.',
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
    this.errors = new Counter({ name: 'presenced_errors_total', help: 'Errors answered to clients, by code.', labelNames: ['code'], registers: reg });
    this.authFailures = new Counter({ name: 'presenced_auth_failures_total', help: 'Failed logins.', registers: reg });
    this.httpRequests = new Counter({ name: 'presenced_http_requests_total', help: 'HTTP requests by status code.', labelNames: ['status'], registers: reg });
  }
}
