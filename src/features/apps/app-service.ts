import { EventEmitter } from 'node:events';
import { PresenceError } from '../../core/errors.js';
import type { AppFields, UrlRules } from './app-input.js';
import { fetchProof, proofDomain, proofUrl, ProofFailed } from './domain-proof.js';
import type { AppRecord, AppRepository } from './repository.js';
import { clientSecretMatches, hashClientSecret, newAppId, newClientSecret, newDomainKey, newWebhookSecret, pairwiseId, type AppKeys } from './secrets.js';

/** Owner of the apps registered by the operator (admin token or CLI). */
export const ADMIN_OWNER = 'admin';

/**
 * The apps feature's operations, shared by the REST routes and the CLI. Who may touch which app is
 * decided here: `viewer` is an account's bare JID, or null for the operator (who sees every app).
 */
export class AppService {
  /**
   * `app.deleted` after an app is gone from the store (its grants went with it), for the parts that
   * keep apps in memory; `app.secret-changed` after its client secret was replaced (streams opened
   * with the old one end).
   */
  readonly events = new EventEmitter<{ 'app.deleted': [{ readonly appId: string }]; 'app.secret-changed': [{ readonly appId: string }] }>();
  /**
   * Awaited after an app was deleted or its client secret replaced (and its event emitted), before the
   * caller is answered: in a cluster the apps feature tells the other nodes there, so that a deletion
   * or a rotation answered is in force on every node (as GrantService.afterChange for revocations).
   */
  afterChange: (change: { readonly kind: 'deleted' | 'secret-changed'; readonly appId: string }) => Promise<void> = async () => {};

  constructor(
    readonly repo: AppRepository,
    private readonly keys: AppKeys,
    readonly rules: UrlRules,
    private readonly now: () => number = Date.now,
  ) {}

  async register(owner: string, fields: AppFields): Promise<{ app: AppRecord; clientSecret: string }> {
    const clientSecret = newClientSecret();
    const t = this.now();
    const app: AppRecord = {
      ...fields,
      id: newAppId(),
      owner,
      clientSecretHash: hashClientSecret(this.keys.clientSecret, clientSecret),
      webhookSecret: newWebhookSecret(),
      domainKey: newDomainKey(),
      verifiedDomain: null,
      verifiedAt: null,
      createdAt: t,
      updatedAt: t,
    };
    await this.repo.create(app);
    return { app, clientSecret };
  }

  /** The app if `viewer` may see it; another owner's app is answered exactly like a missing one. */
  async find(viewer: string | null, id: string): Promise<AppRecord> {
    const app = await this.repo.get(id);
    if (app === undefined || (viewer !== null && app.owner !== viewer)) throw new PresenceError('not-found', 'no such app');
    return app;
  }

  list(viewer: string | null): Promise<AppRecord[]> {
    return this.repo.list(viewer);
  }

  async update(app: AppRecord, change: Partial<AppFields>): Promise<AppRecord> {
    // A proof vouches for one host: moving the homepage elsewhere needs a new one.
    const moved = change.homepage !== undefined && proofDomain(change.homepage) !== proofDomain(app.homepage);
    return this.updated(app.id, moved ? { ...change, verifiedDomain: null, verifiedAt: null } : change);
  }

  async rotateClientSecret(app: AppRecord): Promise<{ app: AppRecord; clientSecret: string }> {
    const clientSecret = newClientSecret();
    const updated = await this.updated(app.id, { clientSecretHash: hashClientSecret(this.keys.clientSecret, clientSecret) });
    this.events.emit('app.secret-changed', { appId: app.id });
    await this.afterChange({ kind: 'secret-changed', appId: app.id });
    return { app: updated, clientSecret };
  }

  rotateWebhookSecret(app: AppRecord): Promise<AppRecord> {
    return this.updated(app.id, { webhookSecret: newWebhookSecret() });
  }

  /** Fetches the app's proof and marks it verified when it holds the key; rejects with ProofFailed otherwise. */
  async verify(app: AppRecord): Promise<AppRecord> {
    const url = proofUrl(app.homepage, this.rules.allowPrivate);
    const body = await fetchProof(url);
    if (body.trim() !== app.domainKey) throw new ProofFailed(`${url.href} does not hold this app's key`);
    return this.updated(app.id, { verifiedDomain: proofDomain(app.homepage), verifiedAt: this.now() });
  }

  async remove(id: string): Promise<boolean> {
    const gone = await this.repo.delete(id);
    if (gone) {
      this.events.emit('app.deleted', { appId: id });
      await this.afterChange({ kind: 'deleted', appId: id });
    }
    return gone;
  }

  async removeOwnedBy(owner: string): Promise<number> {
    const ids = (await this.repo.list(owner)).map((a) => a.id);
    const n = await this.repo.deleteByOwner(owner);
    for (const appId of ids) this.events.emit('app.deleted', { appId });
    await Promise.all(ids.map((appId) => this.afterChange({ kind: 'deleted', appId })));
    return n;
  }

  /** The app whose credentials these are, or null (for the parts that authenticate apps: tokens, streams). */
  async authenticate(id: string, clientSecret: string): Promise<AppRecord | null> {
    const app = await this.repo.get(id);
    if (app === undefined || !clientSecretMatches(this.keys.clientSecret, clientSecret, app.clientSecretHash)) return null;
    return app;
  }

  pairwiseId(appId: string, accountJid: string): string {
    return pairwiseId(this.keys.pairwise, appId, accountJid);
  }

  private async updated(id: string, change: Parameters<AppRepository['update']>[1]): Promise<AppRecord> {
    const app = await this.repo.update(id, change, this.now());
    // Deleted between the lookup and the change.
    if (app === undefined) throw new PresenceError('not-found', 'no such app');
    return app;
  }
}

/** What the owner (or operator) is shown of an app. The client secret is never in it: only its creation or rotation shows it. */
export function appView(app: AppRecord, allowPrivate: boolean): Record<string, unknown> {
  let proof: string | null;
  try {
    proof = proofUrl(app.homepage, allowPrivate).href;
  } catch {
    proof = null;
  }
  return {
    id: app.id,
    owner: app.owner,
    name: app.name,
    description: app.description,
    homepage: app.homepage,
    iconUrl: app.iconUrl,
    redirectUris: app.redirectUris,
    webhookUrl: app.webhookUrl,
    webhookFormat: app.webhookFormat,
    webhookEveryTransition: app.webhookEveryTransition,
    webhookSecret: app.webhookSecret,
    domain: {
      host: proofDomain(app.homepage),
      key: app.domainKey,
      proofUrl: proof,
      verified: app.verifiedDomain !== null,
      verifiedAt: app.verifiedAt === null ? null : new Date(app.verifiedAt).toISOString(),
    },
    createdAt: new Date(app.createdAt).toISOString(),
    updatedAt: new Date(app.updatedAt).toISOString(),
  };
}
