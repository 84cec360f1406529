import { EventEmitter } from 'node:events';
import type { GrantRecord, GrantRepository } from './grant-repository.js';

/** The scopes an app may ask for: `presence` (online/away/dnd/offline); `presence.status` adds status text and last seen. */
export const SCOPES = ['presence', 'presence.status'] as const;
export type Scope = (typeof SCOPES)[number];

export function isScope(s: string): s is Scope {
  return (SCOPES as readonly string[]).includes(s);
}

/** The apps feature's in-process events, for its other parts (webhooks, streams) to follow grants. */
export interface GrantEvents {
  'grant.created': [{ readonly appId: string; readonly account: string; readonly scopes: readonly string[] }];
  'grant.revoked': [{ readonly appId: string; readonly account: string }];
}

export interface GrantChange {
  readonly kind: 'granted' | 'revoked';
  readonly appId: string;
  readonly account: string;
}

/**
 * Who allowed which app to see their presence. A revocation takes effect when `revoke` resolves: the
 * grant is marked revoked and the app's codes and tokens for that account are deleted in one
 * transaction, then `grant.revoked` is emitted (synchronously, so listeners stop deliveries before the
 * caller is answered).
 */
export class GrantService {
  readonly events = new EventEmitter<GrantEvents>();
  /**
   * Awaited after each change and its event, before the caller is answered: in a cluster the apps
   * feature tells the other nodes there (so that a revocation answered is a revocation everywhere).
   */
  afterChange: (change: GrantChange) => Promise<void> = async () => {};
  private readonly now: () => number;

  constructor(
    readonly repo: GrantRepository,
    private readonly opts: { readonly pairwise?: (appId: string, account: string) => string; readonly now?: () => number } = {},
  ) {
    this.now = opts.now ?? Date.now;
  }

  async grant(appId: string, account: string, scopes: readonly string[]): Promise<void> {
    await this.repo.upsertGrant(appId, account, normalizeScopes(scopes), this.now(), this.opts.pairwise?.(appId, account));
    this.events.emit('grant.created', { appId, account, scopes: normalizeScopes(scopes) });
    await this.afterChange({ kind: 'granted', appId, account });
  }

  /** True when an active grant was revoked. */
  async revoke(appId: string, account: string): Promise<boolean> {
    const revoked = await this.repo.revokeGrant(appId, account, this.now());
    if (revoked) {
      this.events.emit('grant.revoked', { appId, account });
      await this.afterChange({ kind: 'revoked', appId, account });
    }
    return revoked;
  }

  /** A deleted account: every grant, code and token of it goes. */
  async removeAccount(account: string): Promise<number> {
    const apps = await this.repo.deleteAccount(account);
    for (const appId of apps) this.events.emit('grant.revoked', { appId, account });
    for (const appId of apps) await this.afterChange({ kind: 'revoked', appId, account });
    return apps.length;
  }

  listByAccount(account: string): Promise<GrantRecord[]> {
    return this.repo.grantsOfAccount(account);
  }

  listByApp(appId: string): Promise<GrantRecord[]> {
    return this.repo.grantsOfApp(appId);
  }

  /** Whether `account` lets `appId` see `scope`; `presence.status` includes `presence`. */
  async isGranted(appId: string, account: string, scope: Scope): Promise<boolean> {
    const g = await this.repo.getGrant(appId, account);
    return g !== undefined && g.revokedAt === null && scopeCovers(g.scopes, scope);
  }
}

export function scopeCovers(granted: readonly string[], wanted: string): boolean {
  return granted.includes(wanted) || (wanted === 'presence' && granted.includes('presence.status'));
}

/** Known scopes, each once, in a fixed order; `presence.status` implies `presence`. */
export function normalizeScopes(scopes: readonly string[]): string[] {
  const set = new Set(scopes.filter(isScope));
  if (set.has('presence.status')) set.add('presence');
  return SCOPES.filter((s) => set.has(s));
}
