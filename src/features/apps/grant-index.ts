import type { EventEmitter } from 'node:events';
import type { GrantRecord } from './grant-repository.js';
import type { GrantEvents } from './grant-service.js';
import type { AppScope, GrantedApp, GrantedAudience } from './webhooks/presence-source.js';

/**
 * Every active grant in memory, both ways: account → apps (asked on each presence change, so it must
 * not touch the database) and app → pairwise id → account (asked before anything is sent to an app,
 * so that a revoked user is never sent again). Kept current by the GrantService's events, which are
 * emitted after the database changed and before the caller is answered.
 */
export class GrantIndex implements GrantedAudience {
  readonly #byAccount = new Map<string, GrantedApp[]>();
  readonly #byApp = new Map<string, Map<string, { readonly account: string; readonly app: GrantedApp }>>();

  constructor(private readonly pairwise: (appId: string, account: string) => string) {}

  load(grants: readonly GrantRecord[]): void {
    for (const g of grants) this.add(g.appId, g.account, g.scopes);
  }

  follow(events: EventEmitter<GrantEvents>): void {
    events.on('grant.created', ({ appId, account, scopes }) => this.add(appId, account, scopes));
    events.on('grant.revoked', ({ appId, account }) => this.remove(appId, account));
  }

  /** An app deleted: its grants went with it. */
  dropApp(appId: string): void {
    for (const { account } of [...this.usersOf(appId).values()]) this.remove(appId, account);
  }

  add(appId: string, account: string, scopes: readonly string[]): GrantedApp {
    this.remove(appId, account);
    const app: GrantedApp = { appId, uid: this.pairwise(appId, account), scopes: scopes.filter((s): s is AppScope => s === 'presence' || s === 'presence.status') };
    // Replaced, never mutated: a presence fan-out iterating the old array is not disturbed.
    this.#byAccount.set(account, [...(this.#byAccount.get(account) ?? []), app]);
    let users = this.#byApp.get(appId);
    if (users === undefined) this.#byApp.set(appId, (users = new Map()));
    users.set(app.uid, { account, app });
    return app;
  }

  remove(appId: string, account: string): void {
    const apps = this.#byAccount.get(account);
    if (apps === undefined) return;
    const rest = apps.filter((a) => a.appId !== appId);
    if (rest.length === apps.length) return;
    if (rest.length === 0) this.#byAccount.delete(account);
    else this.#byAccount.set(account, rest);
    const users = this.#byApp.get(appId);
    users?.delete(this.pairwise(appId, account));
    if (users?.size === 0) this.#byApp.delete(appId);
  }

  /** The account's grant of the app, while active. */
  grantFor(appId: string, account: string): GrantedApp | undefined {
    return this.#byAccount.get(account)?.find((a) => a.appId === appId);
  }

  /** Brings one grant in line with its row in the database (active, revoked or gone); unchanged grants are left as they are. */
  reflect(appId: string, account: string, scopes: readonly string[] | null): void {
    if (scopes === null) return this.remove(appId, account);
    const cur = this.grantFor(appId, account);
    const want = scopes.filter((s): s is AppScope => s === 'presence' || s === 'presence.status');
    if (cur !== undefined && cur.scopes.length === want.length && cur.scopes.every((s, i) => s === want[i])) return;
    this.add(appId, account, scopes);
  }

  appsFor(account: string): readonly GrantedApp[] {
    return this.#byAccount.get(account) ?? [];
  }

  /** The account behind an app's pairwise id, while the grant is active. */
  accountOf(appId: string, uid: string): string | undefined {
    return this.#byApp.get(appId)?.get(uid)?.account;
  }

  /** The grant of an app's user, while active. */
  grantOf(appId: string, uid: string): GrantedApp | undefined {
    return this.#byApp.get(appId)?.get(uid)?.app;
  }

  /** The users of an app (pairwise id → account). */
  usersOf(appId: string): ReadonlyMap<string, { readonly account: string; readonly app: GrantedApp }> {
    return this.#byApp.get(appId) ?? new Map();
  }

  /** Every active grant. */
  *all(): IterableIterator<{ readonly account: string; readonly app: GrantedApp }> {
    for (const users of this.#byApp.values()) yield* users.values();
  }

  get size(): number {
    let n = 0;
    for (const m of this.#byApp.values()) n += m.size;
    return n;
  }
}
