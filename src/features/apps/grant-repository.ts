import type { FeatureStorage } from '../../ports/store.js';
import { SqlGrantRepository } from './sql-grant-repository.js';

/** What a user allowed an app: the scopes, since when; a revoked grant keeps its row with revokedAt. */
export interface GrantRecord {
  readonly appId: string;
  readonly account: string;
  readonly scopes: readonly string[];
  readonly grantedAt: number;
  readonly lastDeliveryAt: number | null;
  readonly revokedAt: number | null;
  /** The account's pairwise id in the app (null for a grant written before APP_MIGRATIONS 9, until the start fills it). */
  readonly uid: string | null;
}

/** An authorization code as stored (by the SHA-256 of its value). */
export interface CodeRecord {
  readonly codeHash: string;
  readonly appId: string;
  readonly account: string;
  readonly scopes: readonly string[];
  readonly redirectUri: string;
  readonly codeChallenge: string;
  readonly codeChallengeMethod: string;
  readonly expiresAt: number;
  readonly usedAt: number | null;
}

export type TokenKind = 'access' | 'refresh';

/** An access or refresh token as stored (by the SHA-256 of its value). */
export interface TokenRecord {
  readonly tokenHash: string;
  readonly kind: TokenKind;
  readonly appId: string;
  readonly account: string;
  readonly scopes: readonly string[];
  /** Hash of the authorization code the token descends from. */
  readonly family: string;
  readonly expiresAt: number;
  readonly usedAt: number | null;
}

/** The storage port of grants, codes and tokens: one implementation per database dialect. */
export interface GrantRepository {
  /** Creates or renews the grant (clearing a revocation); `uid` is the account's pairwise id in the app. */
  upsertGrant(appId: string, account: string, scopes: readonly string[], now: number, uid?: string): Promise<void>;
  getGrant(appId: string, account: string): Promise<GrantRecord | undefined>;
  /** The grants (active or revoked) of the app's users with these pairwise ids. */
  grantsByUid(appId: string, uids: readonly string[]): Promise<GrantRecord[]>;
  /** Records the pairwise ids of grants that have none yet. */
  setUids(rows: ReadonlyArray<{ readonly appId: string; readonly account: string; readonly uid: string }>): Promise<void>;
  /** Active grants of an account, or of an app; oldest first. */
  grantsOfAccount(account: string): Promise<GrantRecord[]>;
  grantsOfApp(appId: string): Promise<GrantRecord[]>;
  /** Every active grant (read once at start, to build the in-memory index). */
  activeGrants(): Promise<GrantRecord[]>;
  /**
   * Marks the grant revoked and deletes every code and token of that app for that account, in one
   * transaction; false when there was no active grant.
   */
  revokeGrant(appId: string, account: string, now: number): Promise<boolean>;
  /** Deletes every grant, code and token of an account (deleted); the apps whose grant was active. */
  deleteAccount(account: string): Promise<string[]>;
  markDelivered(appId: string, account: string, at: number): Promise<void>;

  saveCode(code: CodeRecord): Promise<void>;
  getCode(codeHash: string): Promise<CodeRecord | undefined>;
  /** Marks a code used; false when it was already used (or is gone). */
  useCode(codeHash: string, now: number): Promise<boolean>;

  /**
   * Stores the tokens of one grant exchange or refresh; false (nothing stored) when their family was
   * revoked meanwhile: a replay detected by a concurrent request must also end the tokens that the
   * request which won the race is about to issue.
   */
  saveTokens(tokens: readonly TokenRecord[]): Promise<boolean>;
  getToken(tokenHash: string): Promise<TokenRecord | undefined>;
  /** Marks a refresh token used (rotated); false when it was already used. */
  useToken(tokenHash: string, now: number): Promise<boolean>;
  /** Deletes every token of a family and remembers that it is revoked (saveTokens refuses it from then on); how many. */
  revokeFamily(family: string, now: number): Promise<number>;
  /** Forgets codes and tokens expired before `before`. */
  purgeExpired(before: number): Promise<void>;
}

export function grantRepository(storage: FeatureStorage): GrantRepository {
  switch (storage.dialect) {
    // Plain queries through kysely: the same on both. The one-winner updates (useCode, useToken) are a
    // conditional UPDATE of one row, which PostgreSQL re-checks after waiting for a concurrent writer.
    case 'sqlite':
    case 'postgres':
      return new SqlGrantRepository(storage.db, storage.dialect);
  }
}
