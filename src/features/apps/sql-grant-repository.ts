import type { Kysely } from 'kysely';
import { lockKey } from '../../adapters/sql/dialect.js';
import type { SqlDialect } from '../sql-dialect.js';
import type { CodeRecord, GrantRecord, GrantRepository, TokenKind, TokenRecord } from './grant-repository.js';

interface GrantsTable {
  app_id: string;
  account: string;
  scopes: string;
  granted_at: number;
  last_delivery_at: number | null;
  revoked_at: number | null;
  uid: string | null;
}

interface CodesTable {
  code_hash: string;
  app_id: string;
  account: string;
  scopes: string;
  redirect_uri: string;
  code_challenge: string;
  code_challenge_method: string;
  expires_at: number;
  used_at: number | null;
}

interface TokensTable {
  token_hash: string;
  kind: string;
  app_id: string;
  account: string;
  scopes: string;
  family: string;
  expires_at: number;
  used_at: number | null;
}

interface RevokedFamiliesTable {
  family: string;
  revoked_at: number;
}

interface Tables {
  grants: GrantsTable;
  oauth_codes: CodesTable;
  oauth_tokens: TokensTable;
  oauth_revoked_families: RevokedFamiliesTable;
}


const split = (s: string): string[] => s.split(' ').filter((x) => x !== '');

const toGrant = (r: GrantsTable): GrantRecord => ({
  appId: r.app_id,
  account: r.account,
  scopes: split(r.scopes),
  grantedAt: r.granted_at,
  lastDeliveryAt: r.last_delivery_at,
  revokedAt: r.revoked_at,
  uid: r.uid,
});

export class SqlGrantRepository implements GrantRepository {
  readonly #db: Kysely<Tables>;

  constructor(
    db: Kysely<any>,
    private readonly dialect: SqlDialect = 'sqlite',
  ) {
    this.#db = db as Kysely<Tables>;
  }

  async upsertGrant(appId: string, account: string, scopes: readonly string[], now: number, uid?: string): Promise<void> {
    const s = scopes.join(' ');
    const id = uid ?? null;
    await this.#db
      .insertInto('grants')
      .values({ app_id: appId, account, scopes: s, granted_at: now, last_delivery_at: null, revoked_at: null, uid: id })
      .onConflict((oc) => oc.columns(['app_id', 'account']).doUpdateSet(uid === undefined ? { scopes: s, granted_at: now, revoked_at: null } : { scopes: s, granted_at: now, revoked_at: null, uid: id }))
      .execute();
  }

  async grantsByUid(appId: string, uids: readonly string[]): Promise<GrantRecord[]> {
    if (uids.length === 0) return [];
    const rows = await this.#db.selectFrom('grants').selectAll().where('app_id', '=', appId).where('uid', 'in', [...new Set(uids)]).execute();
    return rows.map(toGrant);
  }

  async setUids(rows: ReadonlyArray<{ readonly appId: string; readonly account: string; readonly uid: string }>): Promise<void> {
    for (const r of rows) {
      await this.#db.updateTable('grants').set({ uid: r.uid }).where('app_id', '=', r.appId).where('account', '=', r.account).where('uid', 'is', null).execute();
    }
  }

  async getGrant(appId: string, account: string): Promise<GrantRecord | undefined> {
    const r = await this.#db.selectFrom('grants').selectAll().where('app_id', '=', appId).where('account', '=', account).executeTakeFirst();
    return r === undefined ? undefined : toGrant(r);
  }

  async grantsOfAccount(account: string): Promise<GrantRecord[]> {
    const rows = await this.#db.selectFrom('grants').selectAll().where('account', '=', account).where('revoked_at', 'is', null).orderBy('granted_at').orderBy('app_id').execute();
    return rows.map(toGrant);
  }

  async grantsOfApp(appId: string): Promise<GrantRecord[]> {
    const rows = await this.#db.selectFrom('grants').selectAll().where('app_id', '=', appId).where('revoked_at', 'is', null).orderBy('granted_at').orderBy('account').execute();
    return rows.map(toGrant);
  }

  async activeGrants(): Promise<GrantRecord[]> {
    const rows = await this.#db.selectFrom('grants').selectAll().where('revoked_at', 'is', null).execute();
    return rows.map(toGrant);
  }

  revokeGrant(appId: string, account: string, now: number): Promise<boolean> {
    return this.#db.transaction().execute(async (trx) => {
      const res = await trx
        .updateTable('grants')
        .set({ revoked_at: now })
        .where('app_id', '=', appId)
        .where('account', '=', account)
        .where('revoked_at', 'is', null)
        .executeTakeFirst();
      await trx.deleteFrom('oauth_tokens').where('app_id', '=', appId).where('account', '=', account).execute();
      await trx.deleteFrom('oauth_codes').where('app_id', '=', appId).where('account', '=', account).execute();
      return res.numUpdatedRows > 0n;
    });
  }

  deleteAccount(account: string): Promise<string[]> {
    return this.#db.transaction().execute(async (trx) => {
      const active = await trx.selectFrom('grants').select('app_id').where('account', '=', account).where('revoked_at', 'is', null).execute();
      await trx.deleteFrom('oauth_tokens').where('account', '=', account).execute();
      await trx.deleteFrom('oauth_codes').where('account', '=', account).execute();
      await trx.deleteFrom('grants').where('account', '=', account).execute();
      return active.map((r) => r.app_id);
    });
  }

  async markDelivered(appId: string, account: string, at: number): Promise<void> {
    await this.#db.updateTable('grants').set({ last_delivery_at: at }).where('app_id', '=', appId).where('account', '=', account).execute();
  }

  async saveCode(c: CodeRecord): Promise<void> {
    await this.#db
      .insertInto('oauth_codes')
      .values({
        code_hash: c.codeHash,
        app_id: c.appId,
        account: c.account,
        scopes: c.scopes.join(' '),
        redirect_uri: c.redirectUri,
        code_challenge: c.codeChallenge,
        code_challenge_method: c.codeChallengeMethod,
        expires_at: c.expiresAt,
        used_at: c.usedAt,
      })
      .execute();
  }

  async getCode(codeHash: string): Promise<CodeRecord | undefined> {
    const r = await this.#db.selectFrom('oauth_codes').selectAll().where('code_hash', '=', codeHash).executeTakeFirst();
    if (r === undefined) return undefined;
    return {
      codeHash: r.code_hash,
      appId: r.app_id,
      account: r.account,
      scopes: split(r.scopes),
      redirectUri: r.redirect_uri,
      codeChallenge: r.code_challenge,
      codeChallengeMethod: r.code_challenge_method,
      expiresAt: r.expires_at,
      usedAt: r.used_at,
    };
  }

  async useCode(codeHash: string, now: number): Promise<boolean> {
    const res = await this.#db.updateTable('oauth_codes').set({ used_at: now }).where('code_hash', '=', codeHash).where('used_at', 'is', null).executeTakeFirst();
    return res.numUpdatedRows > 0n;
  }

  /**
   * Saving and revoking a family take turns (SQLite: one writer; PostgreSQL: an advisory lock on the
   * family), so either the revocation sees the new tokens and deletes them, or the save sees the
   * revocation and stores nothing.
   */
  async #lockFamilies(trx: Kysely<Tables>, families: readonly string[]): Promise<void> {
    if (this.dialect !== 'postgres') return;
    for (const f of [...new Set(families)].sort()) await lockKey(trx, `oauth-family:${f}`);
  }

  async saveTokens(tokens: readonly TokenRecord[]): Promise<boolean> {
    if (tokens.length === 0) return true;
    const families = tokens.map((t) => t.family);
    return this.#db.transaction().execute(async (trx) => {
      await this.#lockFamilies(trx, families);
      const revoked = await trx.selectFrom('oauth_revoked_families').select('family').where('family', 'in', families).executeTakeFirst();
      if (revoked !== undefined) return false;
      await this.#saveTokens(trx, tokens);
      return true;
    });
  }

  async #saveTokens(trx: Kysely<Tables>, tokens: readonly TokenRecord[]): Promise<void> {
    await trx
      .insertInto('oauth_tokens')
      .values(
        tokens.map((t) => ({
          token_hash: t.tokenHash,
          kind: t.kind,
          app_id: t.appId,
          account: t.account,
          scopes: t.scopes.join(' '),
          family: t.family,
          expires_at: t.expiresAt,
          used_at: t.usedAt,
        })),
      )
      .execute();
  }

  async getToken(tokenHash: string): Promise<TokenRecord | undefined> {
    const r = await this.#db.selectFrom('oauth_tokens').selectAll().where('token_hash', '=', tokenHash).executeTakeFirst();
    if (r === undefined) return undefined;
    return {
      tokenHash: r.token_hash,
      kind: r.kind as TokenKind,
      appId: r.app_id,
      account: r.account,
      scopes: split(r.scopes),
      family: r.family,
      expiresAt: r.expires_at,
      usedAt: r.used_at,
    };
  }

  async useToken(tokenHash: string, now: number): Promise<boolean> {
    const res = await this.#db.updateTable('oauth_tokens').set({ used_at: now }).where('token_hash', '=', tokenHash).where('used_at', 'is', null).executeTakeFirst();
    return res.numUpdatedRows > 0n;
  }

  async revokeFamily(family: string, now: number): Promise<number> {
    return this.#db.transaction().execute(async (trx) => {
      await this.#lockFamilies(trx, [family]);
      await trx.insertInto('oauth_revoked_families').values({ family, revoked_at: now }).onConflict((oc) => oc.column('family').doNothing()).execute();
      const res = await trx.deleteFrom('oauth_tokens').where('family', '=', family).executeTakeFirst();
      return Number(res.numDeletedRows);
    });
  }

  async purgeExpired(before: number): Promise<void> {
    await this.#db.deleteFrom('oauth_tokens').where('expires_at', '<', before).execute();
    await this.#db.deleteFrom('oauth_codes').where('expires_at', '<', before).execute();
    // A revocation only has to outlive the requests that read the family before it (they finish in
    // moments); kept as long as used codes and tokens are remembered.
    await this.#db.deleteFrom('oauth_revoked_families').where('revoked_at', '<', before).execute();
  }
}
