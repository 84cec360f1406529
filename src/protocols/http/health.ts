import { isPresenceError } from '../../core/errors.js';
import type { PresenceBus } from '../../ports/bus.js';
import type { Store } from '../../ports/store.js';

/** How long the health check waits for the database before calling it unavailable. */
const STORE_CHECK_MS = 2_000;

export interface HealthProblems {
  /** Why the bus cannot serve (Redis unreachable, node declared down, joining, shutting down). */
  bus?: string;
  /** Why the store cannot serve. */
  store?: string;
}

/**
 * What GET /healthz reports: whether this node can take new connections. A load balancer polls it and
 * stops sending new clients to a node that answers 503, so the reasons are the ones that make logins
 * fail here: its bus lost Redis or was fenced, or its database does not answer. Causes (addresses,
 * server messages) stay in the log: the endpoint needs no token.
 */
export class NodeHealth {
  /** The database round trip in flight: checks coming while it hangs wait on it instead of piling up queries. */
  #ping: Promise<void> | null = null;

  constructor(
    private readonly store: Store,
    private readonly bus: PresenceBus,
  ) {}

  /** Empty when healthy. */
  async problems(): Promise<HealthProblems> {
    const out: HealthProblems = {};
    const bus = this.bus.health();
    if (bus !== null) out.bus = bus;
    const store = await this.storeProblem();
    if (store !== null) out.store = store;
    return out;
  }

  private async storeProblem(): Promise<string | null> {
    const ping = (this.#ping ??= this.store.ping().finally(() => (this.#ping = null)));
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), STORE_CHECK_MS);
      timer.unref();
    });
    try {
      if ((await Promise.race([ping, late])) === 'late') return `the database did not answer within ${STORE_CHECK_MS / 1000} s`;
      return null;
    } catch (err) {
      return isPresenceError(err) && err.code === 'unavailable' ? 'the database is unavailable' : 'the database check failed';
    } finally {
      clearTimeout(timer);
    }
  }
}
