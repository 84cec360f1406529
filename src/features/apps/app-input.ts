import { PresenceError } from '../../core/errors.js';

/**
 * What a developer gives to register or change an app, checked here once for the REST API, the CLI
 * and (later) anything else: the fields, their limits and the rules for each kind of URL.
 */

export const WEBHOOK_FORMATS = ['pairs', 'extended'] as const;
export type WebhookFormat = (typeof WEBHOOK_FORMATS)[number];

export interface AppFields {
  name: string;
  description: string;
  homepage: string;
  iconUrl: string | null;
  redirectUris: string[];
  webhookUrl: string | null;
  webhookFormat: WebhookFormat;
  /** Keep every update while the endpoint is failing, instead of collapsing each user's pending updates to the newest. */
  webhookEveryTransition: boolean;
}

export const LIMITS = { name: 100, description: 1000, url: 2048, redirectUris: 10 } as const;
/** Largest registration body, manifest form included. */
export const MAX_MANIFEST_BYTES = 64 * 1024;

export interface UrlRules {
  /** webhooks_allow_private: plain http webhooks (and local domain proof) allowed. */
  readonly allowPrivate: boolean;
}

const bad = (message: string): PresenceError => new PresenceError('bad-request', message);

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

function parseUrl(field: string, raw: unknown): URL {
  if (typeof raw !== 'string' || raw.length === 0) throw bad(`${field} must be a non-empty string`);
  if (raw.length > LIMITS.url) throw bad(`${field} is longer than ${LIMITS.url} characters`);
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw bad(`${field} must be an absolute URL (got ${JSON.stringify(raw.slice(0, 100))})`);
  }
  if (u.username !== '' || u.password !== '') throw bad(`${field} must not carry credentials`);
  // A fragment is not sent to servers, and RFC 6749 §3.1.2 forbids it in redirect URIs.
  if (raw.includes('#')) throw bad(`${field} must not have a fragment (#...)`);
  return u;
}

/** RFC 8252 / RFC 9700: https anywhere, http only to the loopback interface of a native app; no other scheme. */
export function checkRedirectUri(raw: unknown): string {
  const u = parseUrl('redirect URI', raw);
  if (u.protocol === 'https:') return raw as string;
  if (u.protocol === 'http:' && LOOPBACK_HOSTS.has(u.hostname)) return raw as string;
  if (u.protocol === 'http:') throw bad('redirect URI must use https (http is allowed only for localhost, 127.0.0.1 or [::1])');
  throw bad(`redirect URI scheme ${JSON.stringify(u.protocol)} is not allowed (https, or http for localhost)`);
}

/** Homepage and icon: shown to users, so http(s) only. */
export function checkWebUrl(field: string, raw: unknown): string {
  const u = parseUrl(field, raw);
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw bad(`${field} must be an http or https URL`);
  return raw as string;
}

/** Syntax only here; the address it resolves to is checked against SSRF when deliveries are made. */
export function checkWebhookUrl(raw: unknown, rules: UrlRules): string {
  const u = parseUrl('webhookUrl', raw);
  if (u.protocol === 'https:') return raw as string;
  if (u.protocol === 'http:' && rules.allowPrivate) return raw as string;
  throw bad(u.protocol === 'http:' ? 'webhookUrl must use https (http only when webhooks_allow_private is set)' : 'webhookUrl must be an https URL');
}

function text(field: string, raw: unknown, max: number, required: boolean): string {
  if (typeof raw !== 'string') throw bad(`${field} must be a string`);
  const v = raw.trim();
  if (required && v.length === 0) throw bad(`${field} must not be empty`);
  if (v.length > max) throw bad(`${field} is longer than ${max} characters`);
  // Shown on the consent page: control characters have no business there.
  if (/[\u0000-\u001f\u007f]/.test(v.replace(/[\n\t]/g, ''))) throw bad(`${field} contains control characters`);
  return v;
}

function redirectUris(raw: unknown): string[] {
  if (!Array.isArray(raw) || raw.length === 0 || raw.length > LIMITS.redirectUris) {
    throw bad(`redirectUris must be an array of 1 to ${LIMITS.redirectUris} URLs`);
  }
  return [...new Set(raw.map(checkRedirectUri))];
}

function webhookFormat(raw: unknown): WebhookFormat {
  if (!WEBHOOK_FORMATS.includes(raw as WebhookFormat)) throw bad(`webhookFormat must be one of ${WEBHOOK_FORMATS.join(', ')}`);
  return raw as WebhookFormat;
}

function flag(field: string, raw: unknown): boolean {
  if (typeof raw !== 'boolean') throw bad(`${field} must be true or false`);
  return raw;
}

/** The REST field names (camelCase) and their checks; any other key is an error. */
const CHECKS: Record<keyof AppFields, (v: unknown, rules: UrlRules) => unknown> = {
  name: (v) => text('name', v, LIMITS.name, true),
  description: (v) => text('description', v, LIMITS.description, false),
  homepage: (v) => checkWebUrl('homepage', v),
  iconUrl: (v) => (v === null ? null : checkWebUrl('iconUrl', v)),
  redirectUris: (v) => redirectUris(v),
  webhookUrl: (v, r) => (v === null ? null : checkWebhookUrl(v, r)),
  webhookFormat: (v) => webhookFormat(v),
  webhookEveryTransition: (v) => flag('webhookEveryTransition', v),
};

function checked(input: Record<string, unknown>, rules: UrlRules, where: string): Partial<AppFields> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(input)) {
    const check = CHECKS[k as keyof AppFields];
    if (check === undefined || !Object.hasOwn(CHECKS, k)) throw bad(`unknown field "${k.slice(0, 64)}"${where} (known: ${Object.keys(CHECKS).join(', ')})`);
    if (v === undefined) continue;
    out[k] = check(v, rules);
  }
  return out as Partial<AppFields>;
}

/** A complete registration in the REST form. */
export function registrationFields(input: Record<string, unknown>, rules: UrlRules): AppFields {
  const f = checked(input, rules, '');
  if (f.name === undefined) throw bad('name is required');
  if (f.homepage === undefined) throw bad('homepage is required');
  if (f.redirectUris === undefined) throw bad('redirectUris is required');
  return {
    name: f.name,
    description: f.description ?? '',
    homepage: f.homepage,
    iconUrl: f.iconUrl ?? null,
    redirectUris: f.redirectUris,
    webhookUrl: f.webhookUrl ?? null,
    webhookFormat: f.webhookFormat ?? 'pairs',
    webhookEveryTransition: f.webhookEveryTransition ?? false,
  };
}

/** A change (PATCH): only the fields given; null clears an optional one. */
export function patchFields(input: Record<string, unknown>, rules: UrlRules): Partial<AppFields> {
  const f = checked(input, rules, '');
  if (Object.keys(f).length === 0) throw bad('nothing to change');
  return f;
}

/** The `presence` member of a web app manifest uses the manifest's snake_case spelling. */
const MANIFEST_NAMES: Record<string, keyof AppFields> = {
  name: 'name',
  description: 'description',
  homepage: 'homepage',
  icon_url: 'iconUrl',
  redirect_uris: 'redirectUris',
  webhook_url: 'webhookUrl',
  webhook_format: 'webhookFormat',
  webhook_every_transition: 'webhookEveryTransition',
};

/** Whether a registration body is a W3C web app manifest (it has a `presence` member). */
export function isManifest(body: Record<string, unknown>): boolean {
  return Object.hasOwn(body, 'presence');
}

/**
 * A registration given as the app's web app manifest: the fields come from its `presence` member,
 * and where that leaves name, description or icon out, from the manifest's own `name` (or
 * `short_name`), `description` and first absolute `icons[].src`; the homepage may come from an
 * absolute `start_url`. Other manifest members are the app's business and are ignored.
 */
export function manifestFields(manifest: Record<string, unknown>, rules: UrlRules): AppFields {
  const p = manifest.presence;
  if (typeof p !== 'object' || p === null || Array.isArray(p)) throw bad('the manifest\'s "presence" member must be an object');
  const input: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(p as Record<string, unknown>)) {
    const name = Object.hasOwn(MANIFEST_NAMES, k) ? MANIFEST_NAMES[k] : undefined;
    if (name === undefined) throw bad(`unknown field "${k.slice(0, 64)}" in the manifest's "presence" member (known: ${Object.keys(MANIFEST_NAMES).join(', ')})`);
    input[name] = v;
  }
  input.name ??= manifest.name ?? manifest.short_name;
  if (input.description === undefined && typeof manifest.description === 'string') input.description = manifest.description;
  if (input.homepage === undefined && typeof manifest.start_url === 'string' && /^https?:\/\//i.test(manifest.start_url)) input.homepage = manifest.start_url;
  if (input.iconUrl === undefined && Array.isArray(manifest.icons)) {
    const icon = manifest.icons.find((i): i is { src: string } => typeof i === 'object' && i !== null && typeof (i as { src?: unknown }).src === 'string' && /^https?:\/\//i.test((i as { src: string }).src));
    if (icon) input.iconUrl = icon.src;
  }
  if (input.name === undefined) throw bad('the manifest has no name (give "name" in it or in its "presence" member)');
  return registrationFields(input, rules);
}
