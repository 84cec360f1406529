import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * The apps feature's secrets, all derived from one server secret kept in `data_dir/apps-secret`.
 * Two independent keys are derived from it (HMAC with a label) so that a pairwise id can never be
 * mistaken for, or help compute, a secret hash.
 */

export const APPS_SECRET_FILE = 'apps-secret';
export const PAIRWISE_ID_LENGTH = 22;

export interface AppKeys {
  readonly pairwise: Buffer;
  readonly clientSecret: Buffer;
}

export function deriveKeys(serverSecret: Buffer): AppKeys {
  const derive = (label: string) => createHmac('sha256', serverSecret).update(label).digest();
  return { pairwise: derive('presenced apps: pairwise user id'), clientSecret: derive('presenced apps: client secret hash') };
}

/**
 * The id under which an app knows an account (the seed's Presence-UID, like OpenID Connect's
 * pairwise `sub`): HMAC-SHA256 of the app id and the account under a server key, base64url, 22
 * characters (132 bits). Stable for one app and account, unrelated across apps, and neither
 * reversible nor linkable without the key.
 */
export function pairwiseId(key: Buffer, appId: string, accountJid: string): string {
  // The app id is a fixed alphabet without NUL, so the separator makes the input unambiguous.
  return createHmac('sha256', key).update(`${appId}\u0000${accountJid}`).digest('base64url').slice(0, PAIRWISE_ID_LENGTH);
}

/**
 * A random app id: 16 bytes, base64url (22 characters, URL-safe), never beginning with `-` or `_`:
 * one in 32 ids would otherwise begin with a dash and be read as an option by `presenced app show`.
 */
export function newAppId(): string {
  for (;;) {
    const id = randomBytes(16).toString('base64url');
    if (/^[A-Za-z0-9]/.test(id)) return id;
  }
}

/** The key an app serves at /__presence to prove its domain. */
export function newDomainKey(): string {
  return `presence-verification=${randomBytes(24).toString('base64url')}`;
}

/** A client secret: 32 random bytes, so a keyed hash suffices to store it (no stretching needed). */
export function newClientSecret(): string {
  return `pcs_${randomBytes(32).toString('base64url')}`;
}

/** What is stored of a client secret: HMAC-SHA256 under the derived key, base64url. */
export function hashClientSecret(key: Buffer, secret: string): string {
  return createHmac('sha256', key).update(secret).digest('base64url');
}

export function clientSecretMatches(key: Buffer, secret: string, storedHash: string): boolean {
  const a = Buffer.from(hashClientSecret(key, secret));
  const b = Buffer.from(storedHash);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A Standard Webhooks signing secret: `whsec_` and base64 of 24 random bytes (stored as is: we sign with it). */
export function newWebhookSecret(): string {
  return `whsec_${randomBytes(24).toString('base64')}`;
}
