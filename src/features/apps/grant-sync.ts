import type { EventEmitter } from 'node:events';
import type { GrantIndex } from './grant-index.js';
import type { GrantRecord, GrantRepository } from './grant-repository.js';
import type { GrantEvents } from './grant-service.js';

const keyOf = (appId: string, account: string): string => `${appId}\u0000${account}`;

/**
 * Keeps a node's GrantIndex in line with the database when grants also change on other nodes (a
 * cluster): the other nodes only say which grant changed, and this reads it again; the webhook worker
 * and the bulk presence query ask for the users they are about to answer for (`confirm`); after
 * messages may have been missed, everything is read again (`reload`).
 *
 * Reads run one at a time, in the order they were asked for, so a later read (which sees a later
 * state of the database) is applied after an earlier one. A grant changed on this node while a read
 * is under way keeps the change (made through GrantService, it is newer than what the read saw).
 */
export class GrantSync {
  #queue: Promise<void> = Promise.resolve();
  /** Grants (and whole apps) changed on this node since the read under way began; null when none is under way. */
  #touched: Set<string> | null = null;
  #touchedApps: Set<string> | null = null;

  constructor(
    private readonly index: GrantIndex,
    private readonly repo: Pick<GrantRepository, 'getGrant' | 'grantsByUid' | 'activeGrants'>,
    events: EventEmitter<GrantEvents>,
  ) {
    events.on('grant.created', ({ appId, account }) => this.#touched?.add(keyOf(appId, account)));
    events.on('grant.revoked', ({ appId, account }) => this.#touched?.add(keyOf(appId, account)));
  }

  /** An app deleted here or elsewhere: gone from the index, and no read under way brings its grants back. */
  dropApp(appId: string): void {
    this.#touchedApps?.add(appId);
    this.index.dropApp(appId);
  }

  /** Resolves once every read asked for so far is applied. */
  settled(): Promise<void> {
    return this.#queue;
  }

  /** Reads the grant of `account` to `appId` again (another node changed it). */
  refresh(appId: string, account: string): Promise<void> {
    return this.#run(
      () => this.repo.getGrant(appId, account),
      (g) => this.#apply(appId, account, g),
    );
  }

  /** Reads the grants behind these pairwise ids of the app (before anything about them goes to the app). */
  confirm(appId: string, uids: readonly string[]): Promise<void> {
    const wanted = [...new Set(uids)];
    if (wanted.length === 0) return this.#queue;
    return this.#run(
      () => this.repo.grantsByUid(appId, wanted),
      (rows) => {
        const found = new Set<string>();
        for (const g of rows) {
          if (g.uid !== null) found.add(g.uid);
          this.#apply(appId, g.account, g);
        }
        for (const uid of wanted) {
          if (found.has(uid)) continue;
          const account = this.index.accountOf(appId, uid);
          if (account !== undefined) this.#apply(appId, account, undefined);
        }
      },
    );
  }

  /** Reads every active grant again; resolves with the grants that were not in the index before. */
  reload(): Promise<Array<{ readonly appId: string; readonly account: string }>> {
    let added: Array<{ readonly appId: string; readonly account: string }> = [];
    return this.#run(
      () => this.repo.activeGrants(),
      (rows) => {
        const active = new Set<string>();
        added = [];
        for (const g of rows) {
          active.add(keyOf(g.appId, g.account));
          if (this.index.grantFor(g.appId, g.account) === undefined) added.push({ appId: g.appId, account: g.account });
          this.#apply(g.appId, g.account, g);
        }
        for (const { account, app } of [...this.index.all()]) if (!active.has(keyOf(app.appId, account))) this.#apply(app.appId, account, undefined);
        added = added.filter((a) => this.index.grantFor(a.appId, a.account) !== undefined);
      },
    ).then(() => added);
  }

  #apply(appId: string, account: string, g: GrantRecord | undefined): void {
    if (this.#touched?.has(keyOf(appId, account)) || this.#touchedApps?.has(appId)) return;
    this.index.reflect(appId, account, g === undefined || g.revokedAt !== null ? null : g.scopes);
  }

  #run<T>(read: () => Promise<T>, apply: (v: T) => void): Promise<void> {
    const run = this.#queue.then(async () => {
      this.#touched = new Set();
      this.#touchedApps = new Set();
      try {
        apply(await read());
      } finally {
        this.#touched = null;
        this.#touchedApps = null;
      }
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }
}
