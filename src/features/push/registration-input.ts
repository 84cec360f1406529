import { isIP } from 'node:net';
import type { WebPushProvider } from './providers/webpush.js';
import { PresenceError } from '../../core/errors.js';
import { refusedAddressKind, RefusedAddress, resolveChecked } from '../apps/webhooks/ssrf.js';
import type { PushProvider } from './providers/provider.js';
import type { WebPushKeys } from './repository.js';

/** Longest token, second token or Web Push endpoint accepted (FCM tokens are ~160 bytes, endpoints a few hundred). */
export const MAX_TOKEN_BYTES = 4096;

/** A device registration as a client asked for it, checked. */
export interface RegistrationInput {
  readonly provider: string;
  readonly token: string;
  readonly secondToken: string | null;
  readonly keys: WebPushKeys | null;
}

const bad = (message: string): PresenceError => new PresenceError('bad-request', message);

function tokenString(v: unknown, field: string): string {
  if (typeof v !== 'string' || v === '') throw bad(`"${field}" must be a non-empty string`);
  if (Buffer.byteLength(v) > MAX_TOKEN_BYTES) throw bad(`"${field}" is longer than ${MAX_TOKEN_BYTES} bytes`);
  // Tokens travel in headers, URLs and JSON: printable ASCII without spaces is what every provider issues.
  if (!/^[\x21-\x7e]+$/.test(v)) throw bad(`"${field}" must be printable ASCII without spaces`);
  return v;
}

function base64url(v: unknown, field: string, bytes: (n: number) => boolean, what: string): string {
  if (typeof v !== 'string' || !/^[A-Za-z0-9_-]+={0,2}$/.test(v) || v.length > 512) throw bad(`"${field}" must be base64url text`);
  const raw = Buffer.from(v.replace(/=+$/, ''), 'base64url');
  if (!bytes(raw.length)) throw bad(`"${field}" must be ${what}`);
  if (field.endsWith('p256dh') && raw[0] !== 0x04) throw bad(`"${field}" must be an uncompressed P-256 public key (65 bytes starting with 0x04)`);
  return v;
}

/**
 * Checks a Web Push endpoint as webhook URLs are checked: https (http only with webhooks_allow_private),
 * and a host resolving to public addresses only, so a registration cannot make this server post into
 * its own network.
 */
export async function checkEndpoint(endpoint: string, allowPrivate: boolean): Promise<void> {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw bad('the Web Push endpoint is not a URL');
  }
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && allowPrivate)) throw bad('the Web Push endpoint must be an https URL');
  if (url.username !== '' || url.password !== '') throw bad('the Web Push endpoint must not carry credentials');
  const host = url.hostname.replace(/^\[|\]$/g, '');
  if (!allowPrivate && isIP(host) !== 0 && refusedAddressKind(host) !== null) throw bad(`the Web Push endpoint's host is a ${refusedAddressKind(host)} address`);
  try {
    await resolveChecked(url.hostname, allowPrivate);
  } catch (e) {
    if (e instanceof RefusedAddress) throw bad(`the Web Push endpoint is refused: ${e.message}`);
    throw bad(`the Web Push endpoint's host ${host.slice(0, 100)} does not resolve`);
  }
}

/**
 * Validates the body of `push.register`: `{provider, token, secondToken?, subscription?}`, where a Web
 * Push client sends its PushSubscription.toJSON() as `subscription` (its endpoint is the token).
 */
export async function registrationInput(b: Record<string, unknown>, providers: ReadonlyMap<string, PushProvider>, allowPrivate: boolean): Promise<RegistrationInput> {
  for (const k of Object.keys(b)) {
    // id and type are the request's own.
    if (!['id', 'type', 'provider', 'token', 'secondToken', 'subscription'].includes(k)) throw bad(`unknown field "${k.slice(0, 64)}" (push.register takes provider, token, secondToken, subscription)`);
  }
  if (typeof b.provider !== 'string' || b.provider === '') throw bad('"provider" must be the name of a configured push provider');
  const provider = providers.get(b.provider);
  if (provider === undefined) {
    const known = [...providers.keys()];
    throw bad(
      known.length === 0
        ? `unknown push provider "${b.provider.slice(0, 64)}": this server has no push provider configured`
        : `unknown push provider "${b.provider.slice(0, 64)}"; this server knows: ${known.join(', ')}`,
    );
  }
  const secondToken = b.secondToken === undefined || b.secondToken === null ? null : tokenString(b.secondToken, 'secondToken');
  if (provider.type !== 'webpush') {
    if (b.subscription !== undefined) throw bad(`"subscription" is for Web Push providers; ${provider.name} is ${provider.type}`);
    const token = tokenString(b.token, 'token');
    if (provider.type === 'apns' && !/^(?:[0-9a-fA-F]{2}){8,256}$/.test(token)) throw bad('an APNs device token must be hexadecimal (an even number of digits)');
    if (secondToken !== null && provider.type === 'apns' && !/^(?:[0-9a-fA-F]{2}){8,256}$/.test(secondToken)) throw bad('an APNs second token must be hexadecimal');
    return { provider: provider.name, token, secondToken, keys: null };
  }
  const s = b.subscription;
  if (typeof s !== 'object' || s === null || Array.isArray(s)) throw bad('a Web Push registration needs "subscription": {endpoint, keys: {p256dh, auth}} (PushSubscription.toJSON())');
  const sub = s as Record<string, unknown>;
  const endpoint = tokenString(sub.endpoint, 'subscription.endpoint');
  if (b.token !== undefined && b.token !== endpoint) throw bad('"token" must be the subscription\'s endpoint (or be left out)');
  const k = sub.keys;
  if (typeof k !== 'object' || k === null || Array.isArray(k)) throw bad('"subscription.keys" must be an object with p256dh and auth');
  const keys = k as Record<string, unknown>;
  const p256dh = base64url(keys.p256dh, 'subscription.keys.p256dh', (n) => n === 65, 'an uncompressed P-256 public key (65 bytes starting with 0x04)');
  const auth = base64url(keys.auth, 'subscription.keys.auth', (n) => n === 16, 'a 16-byte authentication secret');
  await checkEndpoint(endpoint, allowPrivate);
  // The provider's own rule too (its known push-service hosts): refused now rather than at every push.
  const refused = (provider as Partial<Pick<WebPushProvider, 'checkSubscription'>>).checkSubscription?.({ token: endpoint, keys: { p256dh, auth } }) ?? null;
  if (refused !== null) throw bad(`Web Push subscription refused: ${refused}`);
  return { provider: provider.name, token: endpoint, secondToken, keys: { p256dh, auth } };
}
