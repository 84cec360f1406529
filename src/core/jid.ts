/**
 * JIDs (RFC 7622) in a practical subset: full PRECIS profiles need Unicode property tables we do not
 * ship, so instead we apply the parts that matter for safety and for comparing addresses: the split
 * rules of §3.1, the 1023-octet limits of §3.2–§3.4, the characters §3.3.1 forbids in localparts,
 * case and width folding so that `Juliet@Example.COM` and `ｊｕｌｉｅｔ@example.com` name one account,
 * and DNS label rules for domains. Everything returned is normalised, so plain string equality is JID
 * equality everywhere else in the code.
 */
import { PresenceError } from './errors.js';

export interface FullJid {
  readonly local: string;
  readonly domain: string;
  readonly resource: string | null;
  readonly bare: string;
  readonly full: string;
}

/** RFC 7622 §3.2, §3.3, §3.4: no part may exceed 1023 octets once encoded as UTF-8. */
const MAX_PART_BYTES = 1023;
/** RFC 1035 §2.3.4 / RFC 5890: a DNS label is at most 63 characters (octets in its A-label form). */
const MAX_LABEL_CHARS = 63;

/** RFC 7622 §3.3.1 excludes these from localparts so that JIDs stay unambiguous and XML-safe. */
const LOCAL_FORBIDDEN = new Set(['"', '&', "'", '/', ':', '<', '>', '@']);

// With the `u` flag a lone surrogate is seen as a code point of category Cs, so this also catches
// strings that are not well-formed UTF-16 and could not be encoded as UTF-8 at all.
const CONTROL_OR_SURROGATE = /[\p{Cc}\p{Cs}]/u;
const WHITESPACE = /\s/u;
const LABEL_CHARS = /^[\p{L}\p{M}\p{Nd}-]+$/u;
// RFC 7622 §3.2.1 (via IDNA2008 / RFC 5895): ideographic and halfwidth full stops separate labels too.
const LABEL_SEPARATORS = /[\u3002\uFF0E\uFF61]/gu;
const IPV4 = /^\d{1,3}(?:\.\d{1,3}){3}$/;

function fail(input: unknown, why: string): never {
  const shown = typeof input === 'string' ? JSON.stringify(input.length > 64 ? `${input.slice(0, 64)}…` : input) : String(typeof input);
  throw new PresenceError('bad-jid', `invalid JID ${shown}: ${why}`);
}

function utf8Length(s: string): number {
  let n = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0) ?? 0;
    n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return n;
}

function describe(ch: string): string {
  const cp = ch.codePointAt(0) ?? 0;
  const hex = `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
  return cp > 0x20 && cp < 0x7f ? `'${ch}' (${hex})` : hex;
}

function checkLength(input: unknown, part: string, value: string): void {
  const bytes = utf8Length(value);
  if (bytes > MAX_PART_BYTES) fail(input, `the ${part} is ${bytes} bytes long in UTF-8, more than the ${MAX_PART_BYTES} allowed`);
}

function normaliseLocal(input: unknown, raw: string): string {
  if (CONTROL_OR_SURROGATE.test(raw)) fail(input, 'the localpart contains a control character or an unpaired surrogate');
  // Width/compatibility folding first, then case folding (RFC 7622 §3.3 via the PRECIS
  // UsernameCaseMapped profile), and only then the character checks: a fullwidth '＠' must be caught
  // as the '@' it becomes, or two different strings would normalise to an ambiguous address.
  const local = raw.normalize('NFKC').toLowerCase();
  for (const ch of local) {
    if (LOCAL_FORBIDDEN.has(ch)) fail(input, `the localpart contains the forbidden character ${describe(ch)} (RFC 7622 §3.3.1)`);
    if (WHITESPACE.test(ch)) fail(input, `the localpart contains whitespace ${describe(ch)}`);
    if (CONTROL_OR_SURROGATE.test(ch)) fail(input, `the localpart contains the control character ${describe(ch)}`);
  }
  checkLength(input, 'localpart', local);
  return local;
}

function isIPv4(s: string): boolean {
  if (!IPV4.test(s)) return false;
  return s.split('.').every((o) => Number(o) <= 255 && (o.length === 1 || !o.startsWith('0')));
}

function isIPv6(s: string): boolean {
  let groups = 0;
  let body = s;
  // An embedded IPv4 tail (RFC 4291 §2.2 form 3) stands for the last two 16-bit groups.
  const lastColon = body.lastIndexOf(':');
  if (lastColon >= 0 && body.slice(lastColon + 1).includes('.')) {
    if (!isIPv4(body.slice(lastColon + 1))) return false;
    body = body.slice(0, lastColon + 1) + '0';
    groups += 1;
  }
  const halves = body.split('::');
  if (halves.length > 2) return false;
  const hex = /^[0-9a-f]{1,4}$/;
  const parts = (h: string): string[] | null => {
    if (h === '') return [];
    const p = h.split(':');
    return p.every((g) => hex.test(g)) ? p : null;
  };
  const head = parts(halves[0] ?? '');
  const tail = halves.length === 2 ? parts(halves[1] ?? '') : [];
  if (head === null || tail === null) return false;
  groups += head.length + tail.length;
  return halves.length === 2 ? groups <= 7 : groups === 8;
}

function normaliseDomain(input: unknown, raw: string): string {
  if (raw === '') fail(input, 'the domainpart is empty');
  if (CONTROL_OR_SURROGATE.test(raw)) fail(input, 'the domainpart contains a control character or an unpaired surrogate');
  if (WHITESPACE.test(raw)) fail(input, 'the domainpart contains whitespace');
  let domain = raw.normalize('NFKC').toLowerCase().replace(LABEL_SEPARATORS, '.');
  // RFC 7622 §3.2: a trailing dot is stripped before comparison, since `example.com.` is the same host.
  if (domain.endsWith('.')) domain = domain.slice(0, -1);
  if (domain === '') fail(input, 'the domainpart is empty');
  checkLength(input, 'domainpart', domain);

  if (domain.startsWith('[')) {
    if (!domain.endsWith(']') || !isIPv6(domain.slice(1, -1))) fail(input, 'the domainpart is not a valid bracketed IPv6 literal');
    return domain;
  }
  if (IPV4.test(domain)) {
    if (!isIPv4(domain)) fail(input, 'the domainpart is not a valid IPv4 address');
    return domain;
  }
  for (const label of domain.split('.')) {
    if (label === '') fail(input, 'the domainpart has an empty label (two dots in a row, or a leading dot)');
    if ([...label].length > MAX_LABEL_CHARS) fail(input, `the domain label "${label.slice(0, 20)}…" is longer than ${MAX_LABEL_CHARS} characters`);
    if (label.startsWith('-') || label.endsWith('-')) fail(input, `the domain label "${label}" starts or ends with a hyphen`);
    if (!LABEL_CHARS.test(label)) {
      const bad = [...label].find((ch) => !LABEL_CHARS.test(ch)) ?? '?';
      fail(input, `the domainpart contains the character ${describe(bad)}; only letters, digits and hyphens are allowed`);
    }
  }
  return domain;
}

function normaliseResource(input: unknown, raw: string): string {
  if (raw === '') fail(input, 'the resourcepart is empty');
  if (CONTROL_OR_SURROGATE.test(raw)) fail(input, 'the resourcepart contains a control character or an unpaired surrogate');
  // RFC 7622 §3.4 (PRECIS OpaqueString): resources keep their case and width; NFC only makes
  // canonically equivalent spellings compare equal.
  const resource = raw.normalize('NFC');
  checkLength(input, 'resourcepart', resource);
  return resource;
}

/**
 * Parse any JID: `domain`, `local@domain`, `domain/resource` or `local@domain/resource`.
 * Throws PresenceError('bad-jid') saying what is wrong.
 */
export function parseJid(input: string): FullJid {
  if (typeof input !== 'string') fail(input, 'a JID must be a string');
  if (input === '') fail(input, 'the JID is empty');
  // RFC 7622 §3.1: the resource is everything after the first '/', so it may itself contain '@'
  // and '/'; the localpart ends at the first '@' before that.
  const slash = input.indexOf('/');
  const beforeResource = slash >= 0 ? input.slice(0, slash) : input;
  const rawResource = slash >= 0 ? input.slice(slash + 1) : null;
  const at = beforeResource.indexOf('@');
  const rawLocal = at >= 0 ? beforeResource.slice(0, at) : null;
  const rawDomain = at >= 0 ? beforeResource.slice(at + 1) : beforeResource;

  if (rawLocal === '') fail(input, "the localpart before '@' is empty");
  if (rawResource === '') fail(input, "the resourcepart after '/' is empty");
  const local = rawLocal === null ? '' : normaliseLocal(input, rawLocal);
  const domain = normaliseDomain(input, rawDomain);
  const resource = rawResource === null ? null : normaliseResource(input, rawResource);
  const bare = local === '' ? domain : `${local}@${domain}`;
  return { local, domain, resource, bare, full: resource === null ? bare : `${bare}/${resource}` };
}

/** An account address: `local@domain`, no resource. Returns the normalised bare JID. */
export function parseAccountJid(input: string): string {
  const jid = parseJid(input);
  if (jid.local === '') fail(input, "an account JID needs a localpart ('user@domain'), this is only a domain");
  if (jid.resource !== null) fail(input, "an account JID must not carry a resource ('/...'); use the bare 'user@domain'");
  return jid.bare;
}

/** A resourcepart given on its own (e.g. chosen by a client at login). */
export function parseResource(input: string): string {
  if (typeof input !== 'string') fail(input, 'a resource must be a string');
  return normaliseResource(input, input);
}

export function isValidAccountJid(input: string): boolean {
  try {
    parseAccountJid(input);
    return true;
  } catch {
    return false;
  }
}

// The helpers below take strings this module already produced: a normalised localpart and domain
// contain neither '@' nor '/', so the first of each is the separator.

export function bareOf(full: string): string {
  const slash = full.indexOf('/');
  return slash >= 0 ? full.slice(0, slash) : full;
}

export function domainOf(bare: string): string {
  const b = bareOf(bare);
  return b.slice(b.indexOf('@') + 1);
}

export function localOf(bare: string): string {
  const b = bareOf(bare);
  const at = b.indexOf('@');
  return at >= 0 ? b.slice(0, at) : '';
}
