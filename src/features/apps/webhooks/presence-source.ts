import type { AccountPresence } from '../../../core/presence.js';
import type { PresenceEngine } from '../../../engine/engine.js';
import type { StoredBody, WebhookUpdate } from './outbox.js';

/**
 * Where an app's updates come from: the engine's presence changes, for each app that the account
 * granted (GrantedAudience, the in-memory grant index); the current presence when a grant is made; and
 * at start, whatever changed since each app was last told (after a crash: everyone it believed online
 * is now offline).
 */

export type AppScope = 'presence' | 'presence.status';

export interface GrantedApp {
  readonly appId: string;
  /** The account's pairwise id in that app. */
  readonly uid: string;
  readonly scopes: readonly AppScope[];
}

export interface GrantedAudience {
  /** The apps this account granted, answered from memory (it runs on every presence change). */
  appsFor(account: string): readonly GrantedApp[];
  /** The grant behind an app's pairwise id while it is active: checked right before anything is sent to the app. */
  grantOf(appId: string, uid: string): GrantedApp | undefined;
  /** The account behind an app's pairwise id while the grant is active. */
  accountOf(appId: string, uid: string): string | undefined;
  /**
   * In a cluster, where grants also change on other nodes: brings what this audience knows of these
   * users of the app in line with the database, before anything about them goes to the app. Absent
   * where the audience is the whole truth (one process).
   */
  confirm?(appId: string, uids: readonly string[]): Promise<void>;
}

export type AppStatus = 'online' | 'away' | 'dnd' | 'offline';

/** The seed's words: available and chat are online, away and xa away, dnd busy, and offline. */
export function appStatusOf(p: AccountPresence): AppStatus {
  if (!p.online) return 'offline';
  switch (p.show) {
    case 'available':
    case 'chat':
      return 'online';
    case 'away':
    case 'xa':
      return 'away';
    case 'dnd':
      return 'dnd';
    default:
      return 'offline';
  }
}

/** The update one app receives: status text and last seen only with the `presence.status` scope. */
export function appUpdateOf(p: AccountPresence, app: GrantedApp, at: number, version?: number): WebhookUpdate {
  const u: WebhookUpdate = version === undefined ? { appId: app.appId, uid: app.uid, status: appStatusOf(p), at } : { appId: app.appId, uid: app.uid, status: appStatusOf(p), at, version };
  if (!app.scopes.includes('presence.status')) return u;
  return { ...u, ...(p.status !== null ? { statusText: p.status } : {}), ...(p.lastSeen !== null ? { lastSeen: p.lastSeen } : {}) };
}

/**
 * Subscribes to presence changes and enqueues an update for each granted app. Only memory is touched
 * here (the outbox writes later, off this path). Returns the unsubscribe function.
 */
export function feedWebhooks(engine: PresenceEngine, audience: GrantedAudience, sink: { enqueue(updates: readonly WebhookUpdate[]): void }, now: () => number = Date.now): () => void {
  return engine.events.on('presence.changed', ({ jid, presence, previous, version }) => {
    const apps = audience.appsFor(jid);
    if (apps.length === 0) return;
    // A change an app cannot see (priority, resource; the status text without presence.status) sends it nothing.
    const wordChanged = appStatusOf(presence) !== appStatusOf(previous);
    const textChanged = presence.status !== previous.status || presence.lastSeen !== previous.lastSeen;
    const at = now();
    const updates = apps.filter((a) => wordChanged || (textChanged && a.scopes.includes('presence.status'))).map((a) => appUpdateOf(presence, a, at, version));
    if (updates.length > 0) sink.enqueue(updates);
  });
}

/** Whether an app that was last told `last` (a stored body, or nothing) must be told `now`. */
export function differsForApp(last: StoredBody | undefined, now: WebhookUpdate): boolean {
  return last === undefined || last.status !== now.status || last.statusText !== now.statusText || last.lastSeen !== now.lastSeen;
}

/**
 * The accounts' registry versions with a clustered bus (WebhookUpdate.version), read from the node's
 * replica; null with the in-process bus, which has none. An account the replica holds no version of
 * (offline for a while) is left out: its update is logged whatever the log holds.
 */
export async function registryVersions(engine: PresenceEngine, accounts: readonly string[]): Promise<Map<string, number> | null> {
  if (engine.bus.node === 'local') return null;
  const out = new Map<string, number>();
  for (const a of accounts) {
    const v = (await engine.bus.accountSessions(a)).version;
    if (v > 0) out.set(a, v);
  }
  return out;
}

/**
 * At start: every granted user whose presence differs from what the app was last told gets an update
 * (none was ever sent, or the server stopped or crashed while they were online: they are offline now,
 * with their last seen). Runs before the server listens, so no live change can overtake it.
 */
export async function reconcileApps(
  engine: PresenceEngine,
  grants: Iterable<{ readonly account: string; readonly app: GrantedApp }>,
  lastTold: ReadonlyArray<{ readonly appId: string; readonly uid: string; readonly body: string }>,
  sink: { enqueue(updates: readonly WebhookUpdate[]): void },
  now: () => number = Date.now,
): Promise<number> {
  const told = new Map<string, StoredBody>();
  for (const t of lastTold) told.set(`${t.appId}\u0000${t.uid}`, JSON.parse(t.body) as StoredBody);
  const list = [...grants];
  const accounts = [...new Set(list.map((g) => g.account))];
  // In a cluster the versions are read before the presence: a row is never dated later than what it says.
  const versions = await registryVersions(engine, accounts);
  const presence = await engine.presenceOfMany(accounts);
  const at = now();
  const updates: WebhookUpdate[] = [];
  for (const { account, app } of list) {
    const u = appUpdateOf(presence.get(account)!, app, at, versions?.get(account));
    if (differsForApp(told.get(`${app.appId}\u0000${app.uid}`), u)) updates.push(u);
  }
  if (updates.length > 0) sink.enqueue(updates);
  return updates.length;
}
