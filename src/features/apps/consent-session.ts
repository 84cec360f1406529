import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * The consent pages' session: a cookie holding `{sid, jid, exp}` with an HMAC under a key of ours, so
 * nothing is kept server-side and a forged or altered cookie is just absent. Every visitor gets a
 * session (signed out: jid null) before the first form, so the sign-in form has a CSRF token too;
 * signing in issues a new sid (no fixation). The CSRF token is an HMAC of the sid: a page of another
 * site can neither read the cookie nor compute the token.
 */

export const SESSION_COOKIE = 'presenced_consent';
/** A signed-in session lasts this long; the consent is a one-off, not a place to stay signed in. */
export const SESSION_TTL_MS = 30 * 60_000;
/** A signed-out session (a visitor on the sign-in form). */
const ANON_TTL_MS = 30 * 60_000;

export interface ConsentSession {
  readonly sid: string;
  readonly jid: string | null;
  readonly exp: number;
}

export class SessionCodec {
  private readonly cookieKey: Buffer;
  private readonly csrfKey: Buffer;

  constructor(secret: Buffer) {
    const derive = (label: string) => createHmac('sha256', secret).update(label).digest();
    this.cookieKey = derive('presenced apps: consent session cookie');
    this.csrfKey = derive('presenced apps: consent csrf token');
  }

  create(jid: string | null, now: number): ConsentSession {
    return { sid: randomBytes(18).toString('base64url'), jid, exp: now + (jid === null ? ANON_TTL_MS : SESSION_TTL_MS) };
  }

  encode(s: ConsentSession): string {
    const body = Buffer.from(JSON.stringify({ s: s.sid, j: s.jid, e: s.exp })).toString('base64url');
    return `${body}.${this.mac(body)}`;
  }

  /** The session in a cookie value, or null when absent, malformed, forged or expired. */
  decode(value: string | undefined, now: number): ConsentSession | null {
    if (value === undefined || value.length > 4096) return null;
    const dot = value.indexOf('.');
    if (dot < 0) return null;
    const body = value.slice(0, dot);
    if (!equal(this.mac(body), value.slice(dot + 1))) return null;
    try {
      const o = JSON.parse(Buffer.from(body, 'base64url').toString('utf8')) as { s?: unknown; j?: unknown; e?: unknown };
      if (typeof o.s !== 'string' || (o.j !== null && typeof o.j !== 'string') || typeof o.e !== 'number' || o.e <= now) return null;
      return { sid: o.s, jid: o.j, exp: o.e };
    } catch {
      return null;
    }
  }

  csrfToken(s: ConsentSession): string {
    return createHmac('sha256', this.csrfKey).update(s.sid).digest('base64url');
  }

  csrfMatches(s: ConsentSession, given: unknown): boolean {
    return typeof given === 'string' && equal(this.csrfToken(s), given);
  }

  private mac(body: string): string {
    return createHmac('sha256', this.cookieKey).update(body).digest('base64url');
  }
}

function equal(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** The cookie's value from a Cookie header (no cookie library: one name, read once). */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

export function sessionCookie(value: string, secure: boolean, maxAgeS: number): string {
  return `${SESSION_COOKIE}=${value}; Path=/oauth; HttpOnly; SameSite=Lax; Max-Age=${maxAgeS}${secure ? '; Secure' : ''}`;
}
