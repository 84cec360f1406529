import type { FeatureStorage } from '../../ports/store.js';
import type { AppFields } from './app-input.js';
import { SqlAppRepository } from './sql-repository.js';

/** An app as stored. `owner` is an account's bare JID, or `admin` for apps the operator registered. */
export interface AppRecord extends AppFields {
  readonly id: string;
  readonly owner: string;
  /** HMAC-SHA256 of the client secret (src/features/apps/secrets.ts); the secret itself is never stored. */
  readonly clientSecretHash: string;
  /** Standard Webhooks secret (`whsec_...`), kept as is because the server signs with it. */
  readonly webhookSecret: string;
  /** What the app must serve at https://<homepage host>/__presence. */
  readonly domainKey: string;
  /** The host proven, and when; null until proven (and again after the homepage's host changes). */
  readonly verifiedDomain: string | null;
  readonly verifiedAt: number | null;
  readonly createdAt: number;
  readonly updatedAt: number;
}

export type AppUpdate = Partial<AppFields & Pick<AppRecord, 'clientSecretHash' | 'webhookSecret' | 'verifiedDomain' | 'verifiedAt'>>;

/** The apps feature's storage port: one implementation per database dialect. */
export interface AppRepository {
  create(app: AppRecord): Promise<void>;
  get(id: string): Promise<AppRecord | undefined>;
  /** Apps of one owner, or every app when `owner` is null; oldest first. */
  list(owner: string | null): Promise<AppRecord[]>;
  /** Applies the change and sets updatedAt; undefined when no such app. */
  update(id: string, change: AppUpdate, now: number): Promise<AppRecord | undefined>;
  delete(id: string): Promise<boolean>;
  /** Removes every app of an owner (its account was deleted); how many. */
  deleteByOwner(owner: string): Promise<number>;
}

export function appRepository(storage: FeatureStorage): AppRepository {
  switch (storage.dialect) {
    // Plain queries through kysely: the same on both (times are bigint columns on PostgreSQL, read as numbers).
    case 'sqlite':
    case 'postgres':
      return new SqlAppRepository(storage.db);
  }
}
