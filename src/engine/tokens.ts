import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Bearer tokens the REST API issues so a client can log in without holding the password.
 * Stateless (HMAC-SHA256 over the claims with a server secret) so any node of a cluster sharing the
 * secret verifies them without a lookup; `iat` lets a password change revoke every earlier token, and
 * `acc` ties the token to one incarnation of the account (see accountGeneration): deleting the account
 * and creating it again under the same JID does not bring its old tokens back to life.
 */
export interface TokenClaims {
  readonly sub: string;
  /** accountGeneration of the account when the token was issued. */
  readonly acc: string;
  readonly iat: number; // epoch ms: finer than seconds so a password change revokes a token issued the same second
  readonly exp: number; // epoch ms
  readonly scope: string;
}

const PREFIX = 'pd1';

function sign(secret: Buffer, body: string): string {
  return createHmac('sha256', secret).update(`${PREFIX}.${body}`).digest('base64url');
}

export function issueToken(secret: Buffer, claims: TokenClaims): string {
  const body = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `${PREFIX}.${body}.${sign(secret, body)}`;
}

/** Returns the claims of a well-signed, unexpired token, or null. Never throws on bad input. */
export function verifyToken(secret: Buffer, token: unknown, nowMs: number): TokenClaims | null {
  if (typeof token !== 'string' || token.length > 4096) return null;
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== PREFIX) return null;
  const body = parts[1] as string;
  const given = Buffer.from(parts[2] as string, 'base64url');
  const expected = Buffer.from(sign(secret, body), 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(body, 'base64url').toString('utf8'));
  } catch {
    return null;
  }
  if (typeof claims !== 'object' || claims === null) return null;
  const c = claims as Record<string, unknown>;
  // Tokens issued before `acc` existed have none and are refused: nothing in them tells which
  // incarnation of the account they were issued for (see docs/rest-api.md, "Tokens").
  if (typeof c.sub !== 'string' || typeof c.acc !== 'string' || typeof c.iat !== 'number' || typeof c.exp !== 'number' || typeof c.scope !== 'string') {
    return null;
  }
  if (c.exp <= nowMs) return null;
  return { sub: c.sub, acc: c.acc, iat: c.iat, exp: c.exp, scope: c.scope };
}

/**
 * What a token names of the account it was issued for: derived (keyed with the token secret) from the
 * stored password hash, whose salt is random for every account created and every password set. A
 * re-created account never shares it; holding a token reveals nothing about the hash.
 */
export function accountGeneration(secret: Buffer, passwordHash: string): string {
  return createHmac('sha256', secret).update(`account-generation.${passwordHash}`).digest().subarray(0, 12).toString('base64url');
}
