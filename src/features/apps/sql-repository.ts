import type { Kysely } from 'kysely';
import type { WebhookFormat } from './app-input.js';
import type { AppRecord, AppRepository, AppUpdate } from './repository.js';

interface AppsTable {
  id: string;
  owner: string;
  name: string;
  description: string;
  homepage: string;
  icon_url: string | null;
  redirect_uris: string;
  webhook_url: string | null;
  webhook_format: string;
  /** 0 or 1 (SQLite has no boolean). */
  webhook_every_transition: number;
  client_secret_hash: string;
  webhook_secret: string;
  domain_key: string;
  verified_domain: string | null;
  verified_at: number | null;
  created_at: number;
  updated_at: number;
}

interface Tables {
  apps: AppsTable;
}

function toRecord(r: AppsTable): AppRecord {
  return {
    id: r.id,
    owner: r.owner,
    name: r.name,
    description: r.description,
    homepage: r.homepage,
    iconUrl: r.icon_url,
    redirectUris: JSON.parse(r.redirect_uris) as string[],
    webhookUrl: r.webhook_url,
    webhookFormat: r.webhook_format as WebhookFormat,
    webhookEveryTransition: r.webhook_every_transition === 1,
    clientSecretHash: r.client_secret_hash,
    webhookSecret: r.webhook_secret,
    domainKey: r.domain_key,
    verifiedDomain: r.verified_domain,
    verifiedAt: r.verified_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

const COLUMNS: { [K in keyof AppUpdate]-?: keyof AppsTable } = {
  name: 'name',
  description: 'description',
  homepage: 'homepage',
  iconUrl: 'icon_url',
  redirectUris: 'redirect_uris',
  webhookUrl: 'webhook_url',
  webhookFormat: 'webhook_format',
  webhookEveryTransition: 'webhook_every_transition',
  clientSecretHash: 'client_secret_hash',
  webhookSecret: 'webhook_secret',
  verifiedDomain: 'verified_domain',
  verifiedAt: 'verified_at',
};

export class SqlAppRepository implements AppRepository {
  readonly #db: Kysely<Tables>;

  constructor(db: Kysely<any>) {
    this.#db = db as Kysely<Tables>;
  }

  async create(a: AppRecord): Promise<void> {
    await this.#db
      .insertInto('apps')
      .values({
        id: a.id,
        owner: a.owner,
        name: a.name,
        description: a.description,
        homepage: a.homepage,
        icon_url: a.iconUrl,
        redirect_uris: JSON.stringify(a.redirectUris),
        webhook_url: a.webhookUrl,
        webhook_format: a.webhookFormat,
        webhook_every_transition: a.webhookEveryTransition ? 1 : 0,
        client_secret_hash: a.clientSecretHash,
        webhook_secret: a.webhookSecret,
        domain_key: a.domainKey,
        verified_domain: a.verifiedDomain,
        verified_at: a.verifiedAt,
        created_at: a.createdAt,
        updated_at: a.updatedAt,
      })
      .execute();
  }

  async get(id: string): Promise<AppRecord | undefined> {
    const r = await this.#db.selectFrom('apps').selectAll().where('id', '=', id).executeTakeFirst();
    return r === undefined ? undefined : toRecord(r);
  }

  async list(owner: string | null): Promise<AppRecord[]> {
    let q = this.#db.selectFrom('apps').selectAll();
    if (owner !== null) q = q.where('owner', '=', owner);
    const rows = await q.orderBy('created_at').orderBy('id').execute();
    return rows.map(toRecord);
  }

  async update(id: string, change: AppUpdate, now: number): Promise<AppRecord | undefined> {
    const set: Record<string, unknown> = { updated_at: now };
    for (const [k, v] of Object.entries(change)) {
      if (v === undefined) continue;
      const col = COLUMNS[k as keyof AppUpdate];
      set[col] = k === 'redirectUris' ? JSON.stringify(v) : typeof v === 'boolean' ? (v ? 1 : 0) : v;
    }
    const res = await this.#db.updateTable('apps').set(set as Partial<AppsTable>).where('id', '=', id).executeTakeFirst();
    if (res.numUpdatedRows === 0n) return undefined;
    return this.get(id);
  }

  async delete(id: string): Promise<boolean> {
    const res = await this.#db.deleteFrom('apps').where('id', '=', id).executeTakeFirst();
    return res.numDeletedRows > 0n;
  }

  async deleteByOwner(owner: string): Promise<number> {
    const res = await this.#db.deleteFrom('apps').where('owner', '=', owner).executeTakeFirst();
    return Number(res.numDeletedRows);
  }
}
