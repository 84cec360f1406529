import type { FeatureContext } from '../feature.js';
import type { AppService } from './app-service.js';
import type { GrantSync } from './grant-sync.js';
import type { ClusterAppLog } from './log-feed.js';
import type { StreamRegistry } from './stream/app-stream.js';

/**
 * The apps feature across the nodes of a cluster (docs/cluster.md, "Features across nodes"). What one
 * node changes, the others hear of, on three topics:
 *
 * - `grants` {a: app, u: account}: a grant was made or revoked here. Each node reads that grant again
 *   from the database (so the order in which such messages arrive does not matter) before it
 *   acknowledges; the node that made the change answers its caller only after every node
 *   acknowledged (or a bound passed), so a revocation answered is in force on every node.
 * - `apps` {a: app}: an app was deleted or its client secret replaced: each node drops the app's
 *   grants if it is gone, and ends the streams opened with a secret that no longer holds.
 * - `logged` {h: [[app, id], ...]}: this node wrote each app's log up to id (ClusterAppLog).
 *
 * The feature's messages are handled one at a time in arrival order (FeatureContext.cluster), so a
 * row read after a grant message is judged by that grant.
 */
const RETRY_MS = 1_000;

export interface AppsPeersDeps {
  readonly service: AppService;
  readonly sync: GrantSync;
  readonly log: ClusterAppLog;
  /** The streams of this node, once they exist. */
  readonly streams: () => StreamRegistry | null;
}

export function joinAppsPeers(ctx: FeatureContext, deps: AppsPeersDeps): void {
  const { cluster } = ctx;
  const { service, sync, log } = deps;
  /**
   * The database could not be read (PostgreSQL restarting, or out of this node's reach): tried again
   * until it can, so the node does not keep what it had. Nothing leaves this node for the app meanwhile
   * anyway: the log it would send is in that database too.
   */
  const untilDone = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
    } catch (err) {
      ctx.log.warn({ err, what }, 'reading the database after another node\'s message failed; trying again');
      const t = setTimeout(() => void untilDone(what, fn), RETRY_MS);
      t.unref();
    }
  };
  cluster.subscribe('grants', async (p) => {
    const m = p as { a?: unknown; u?: unknown };
    if (typeof m.a !== 'string' || typeof m.u !== 'string') return;
    const [appId, account] = [m.a, m.u];
    await untilDone('grant', () => sync.refresh(appId, account));
  });
  cluster.subscribe('apps', async (p) => {
    const appId = (p as { a?: unknown }).a;
    if (typeof appId !== 'string') return;
    await untilDone('app', async () => {
      if ((await service.repo.get(appId)) === undefined) sync.dropApp(appId);
      await deps.streams()?.recheckApp(appId);
    });
  });
  cluster.subscribe('logged', (p) => {
    const heads = (p as { h?: unknown }).h;
    if (!Array.isArray(heads)) return;
    for (const h of heads) if (Array.isArray(h) && typeof h[0] === 'string' && typeof h[1] === 'number') log.advance(h[0], h[1]);
  });
}
