import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { randomBase64 } from './random-ids.js';
import { isPresenceError } from '../../core/errors.js';
import type { ScramKeys } from '../../ports/store.js';

/** RFC 6120 §6.5 SASL failure conditions. */
export type SaslCondition =
  | 'aborted'
  | 'encryption-required'
  | 'incorrect-encoding'
  | 'invalid-authzid'
  | 'invalid-mechanism'
  | 'malformed-request'
  | 'mechanism-too-weak'
  | 'not-authorized'
  | 'temporary-auth-failure';

export class SaslFailure extends Error {
  constructor(
    readonly condition: SaslCondition,
    text?: string,
  ) {
    super(text ?? condition);
  }
}

/** What a mechanism needs from the server: credentials lookups, never the password store itself. */
export interface SaslBackend {
  readonly domain: string;
  /**
   * Resolves with the bare JID, or rejects for wrong credentials (any error; a SaslFailure, such as a
   * throttled or aborted attempt, is passed on as it is).
   */
  checkPassword(jid: string, password: string): Promise<string>;
  /** The stored SCRAM keys of `jid`; null for an unknown account. */
  scramKeys(jid: string, algo: 'sha1' | 'sha256'): Promise<ScramKeys | null>;
  /** A stable fake salt for unknown accounts, so a SCRAM exchange does not reveal who exists. */
  fakeSalt(jid: string): string;
}

export type SaslStep = { readonly done: false; readonly challenge: string } | { readonly done: true; readonly jid: string; readonly additional: string | null };

export interface SaslMechanism {
  /** Handles the initial response or a response to a challenge (raw bytes, already base64-decoded). */
  step(data: Buffer): Promise<SaslStep>;
}

/**
 * RFC 6120 §6.5.9: a database that cannot be reached is a temporary failure ("try again later"), not
 * a wrong password; it must not count against the login throttle either.
 */
function unavailable(e: unknown): SaslFailure | null {
  return isPresenceError(e) && e.code === 'unavailable' ? new SaslFailure('temporary-auth-failure', e.message) : null;
}

function b64(s: string | Buffer): string {
  return Buffer.isBuffer(s) ? s.toString('base64') : Buffer.from(s, 'utf8').toString('base64');
}

/** The account named by a SASL authentication identity: a localpart, or a bare JID of our domain. */
function accountOf(authcid: string, domain: string): string {
  if (authcid.includes('@')) return authcid;
  return `${authcid}@${domain}`;
}

/** RFC 4616 PLAIN: `[authzid] NUL authcid NUL password`. */
export class PlainMechanism implements SaslMechanism {
  constructor(private readonly backend: SaslBackend) {}

  async step(data: Buffer): Promise<SaslStep> {
    const parts = data.toString('utf8').split('\0');
    if (parts.length !== 3) throw new SaslFailure('malformed-request', 'PLAIN response must have three fields');
    const [authzid, authcid, password] = parts as [string, string, string];
    if (authcid === '' || password === '') throw new SaslFailure('malformed-request', 'empty user or password');
    let jid: string;
    try {
      jid = await this.backend.checkPassword(accountOf(authcid, this.backend.domain), password);
    } catch (e) {
      if (e instanceof SaslFailure) throw e;
      throw unavailable(e) ?? new SaslFailure('not-authorized');
    }
    if (authzid !== '' && authzid.toLowerCase() !== jid) throw new SaslFailure('invalid-authzid');
    return { done: true, jid, additional: null };
  }
}

/** Decodes a SCRAM `saslname` (RFC 5802 §5.1): `=2C` is a comma and `=3D` an equals sign. */
function saslName(s: string): string {
  if (/=(?!2C|3D)/.test(s)) throw new SaslFailure('malformed-request', 'bad escape in username');
  return s.replace(/=2C/g, ',').replace(/=3D/g, '=');
}

function attrs(msg: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of msg.split(',')) {
    const eq = part.indexOf('=');
    if (eq !== 1) throw new SaslFailure('malformed-request', 'bad SCRAM attribute');
    out.set(part[0] as string, part.slice(2));
  }
  return out;
}

/**
 * RFC 5802 / RFC 7677 SCRAM without channel binding, checked against the stored keys: the server
 * never sees the password, only proof that the client knows it, and proves itself in return.
 */
export class ScramMechanism implements SaslMechanism {
  private stage: 'first' | 'final' | 'done' = 'first';
  private gs2Header = '';
  private clientFirstBare = '';
  private serverFirst = '';
  private nonce = '';
  private jid = '';
  private keys: ScramKeys | null = null;

  constructor(
    private readonly backend: SaslBackend,
    private readonly algo: 'sha1' | 'sha256',
  ) {}

  async step(data: Buffer): Promise<SaslStep> {
    const msg = data.toString('utf8');
    if (this.stage === 'first') return this.first(msg);
    if (this.stage === 'final') return this.final(msg);
    throw new SaslFailure('malformed-request', 'exchange already finished');
  }

  private async first(msg: string): Promise<SaslStep> {
    // gs2-header: cbind-flag "," [authzid] ","
    const m = /^([ny]|p=[^,]*),(a=[^,]*)?,(.*)$/s.exec(msg);
    if (!m) throw new SaslFailure('malformed-request', 'bad GS2 header');
    if ((m[1] as string).startsWith('p=')) throw new SaslFailure('malformed-request', 'channel binding is not supported');
    this.gs2Header = `${m[1]},${m[2] ?? ''},`;
    this.clientFirstBare = m[3] as string;
    const a = attrs(this.clientFirstBare);
    if (a.has('m')) throw new SaslFailure('malformed-request', 'mandatory extensions are not supported');
    const user = a.get('n');
    const cnonce = a.get('r');
    if (!user || !cnonce) throw new SaslFailure('malformed-request', 'missing username or nonce');
    this.jid = accountOf(saslName(user), this.backend.domain).toLowerCase();
    const authzid = m[2]?.slice(2);
    if (authzid && saslName(authzid).toLowerCase() !== this.jid) throw new SaslFailure('invalid-authzid');
    try {
      this.keys = await this.backend.scramKeys(this.jid, this.algo);
    } catch (e) {
      throw unavailable(e) ?? e;
    }
    const salt = this.keys?.salt ?? this.backend.fakeSalt(this.jid);
    const iterations = this.keys?.iterations ?? 4096;
    this.nonce = cnonce + randomBase64(18);
    this.serverFirst = `r=${this.nonce},s=${salt},i=${iterations}`;
    this.stage = 'final';
    return { done: false, challenge: this.serverFirst };
  }

  private async final(msg: string): Promise<SaslStep> {
    this.stage = 'done';
    const p = msg.lastIndexOf(',p=');
    if (p < 0) throw new SaslFailure('malformed-request', 'missing proof');
    const withoutProof = msg.slice(0, p);
    const a = attrs(withoutProof);
    if (a.get('c') !== b64(this.gs2Header)) throw new SaslFailure('malformed-request', 'channel binding data does not match');
    if (a.get('r') !== this.nonce) throw new SaslFailure('malformed-request', 'nonce mismatch');
    const proof = Buffer.from(msg.slice(p + 3), 'base64');
    const keys = this.keys;
    if (!keys) throw new SaslFailure('not-authorized');
    const authMessage = `${this.clientFirstBare},${this.serverFirst},${withoutProof}`;
    const storedKey = Buffer.from(keys.storedKey, 'base64');
    const clientSignature = createHmac(this.algo, storedKey).update(authMessage).digest();
    if (proof.length !== clientSignature.length) throw new SaslFailure('not-authorized');
    const clientKey = Buffer.alloc(proof.length);
    for (let i = 0; i < proof.length; i++) clientKey[i] = (proof[i] as number) ^ (clientSignature[i] as number);
    const candidate = createHash(this.algo).update(clientKey).digest();
    if (!timingSafeEqual(candidate, storedKey)) throw new SaslFailure('not-authorized');
    const serverSignature = createHmac(this.algo, Buffer.from(keys.serverKey, 'base64')).update(authMessage).digest();
    return { done: true, jid: this.jid, additional: `v=${serverSignature.toString('base64')}` };
  }
}

export const MECHANISMS = ['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'] as const;
export type MechanismName = (typeof MECHANISMS)[number];

export function createMechanism(name: MechanismName, backend: SaslBackend): SaslMechanism {
  switch (name) {
    case 'PLAIN':
      return new PlainMechanism(backend);
    case 'SCRAM-SHA-1':
      return new ScramMechanism(backend, 'sha1');
    case 'SCRAM-SHA-256':
      return new ScramMechanism(backend, 'sha256');
  }
}
