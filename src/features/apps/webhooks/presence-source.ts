import type { AccountPresence } from '../../../core/presence.js';
import type { PresenceEngine } from '../../../engine/engine.js';
import type { WebhookUpdate } from './outbox.js';

/**
 * Where webhook updates come from: the engine's presence changes, sent to each app that the account
 * granted. Which apps those are is the grants' business (GrantedAudience), connected by the part that
 * builds consent; until then the audience is empty and no update is produced.
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
}

export const NO_AUDIENCE: GrantedAudience = { appsFor: () => [] };

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
export function appUpdateOf(p: AccountPresence, app: GrantedApp, at: number): WebhookUpdate {
  const u: WebhookUpdate = { appId: app.appId, uid: app.uid, status: appStatusOf(p), at };
  if (!app.scopes.includes('presence.status')) return u;
  return { ...u, ...(p.status !== null ? { statusText: p.status } : {}), ...(p.lastSeen !== null ? { lastSeen: p.lastSeen } : {}) };
}

/**
 * Subscribes to presence changes and enqueues an update for each granted app. Only memory is touched
 * here (the outbox writes later, off this path). Returns the unsubscribe function.
 */
export function feedWebhooks(engine: PresenceEngine, audience: GrantedAudience, sink: { enqueue(updates: readonly WebhookUpdate[]): void }, now: () => number = Date.now): () => void {
  return engine.events.on('presence.changed', ({ jid, presence, previous }) => {
    const apps = audience.appsFor(jid);
    if (apps.length === 0) return;
    // A change an app cannot see (priority, resource; the status text without presence.status) sends it nothing.
    const wordChanged = appStatusOf(presence) !== appStatusOf(previous);
    const textChanged = presence.status !== previous.status || presence.lastSeen !== previous.lastSeen;
    const at = now();
    const updates = apps.filter((a) => wordChanged || (textChanged && a.scopes.includes('presence.status'))).map((a) => appUpdateOf(presence, a, at));
    if (updates.length > 0) sink.enqueue(updates);
  });
}
