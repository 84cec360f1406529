import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isPresenceError } from '../../core/errors.js';
import type { AccountPresence } from '../../core/presence.js';
import { CACHE_CONTROL, etagOf, first, notModified, preflight, sendError, VARY } from './http-common.js';
import { presenceJson, presenceText, presenceXml } from './presence-formats.js';
import { ANONYMOUS, sendAuthFailed, type Requester, type RequesterResolver } from './requester.js';
import type { ImageVariant, StatusImages } from './status-images.js';
import type { PresenceLookup } from './visible-presence.js';
import { authHeaders, CREDENTIAL_MAX, JID_MAX, servletParam } from './schemas.js';
import { STATUS_WORDS, statusWord, type StatusImageWord } from './status-words.js';

/**
 * `/plugins/presence/status`: the Openfire (and Jive Messenger) presence plugin's URL and parameters,
 * so pages written for it work unchanged; see docs/http.md for what differs and why.
 *
 * Registered as plain routes with no schema: this is the hottest HTTP path (pages embed hundreds of
 * icons), and answering a cached account is synchronous from parameters to reply.
 */
export interface StatusEndpointOptions {
  readonly resolver: RequesterResolver;
  readonly lookup: PresenceLookup;
  readonly images: StatusImages;
}

type OutputType = 'image' | 'text' | 'xml' | 'json';
const TYPES = new Set<string>(['image', 'text', 'xml', 'json']);
const TOKEN = '--IMAGE--';
const MAX_URL = 2048;
const FORM_LIMIT = 64 * 1024;

interface Redirects {
  /** `images`, with --IMAGE-- still in it. */
  readonly template: string | null;
  readonly perStatus: Partial<Record<StatusImageWord, string>>;
}

interface ImageRequest {
  readonly variant: ImageVariant;
  readonly redirects: Redirects | null;
}

class BadParam extends Error {}

const CONTENT_TYPES = { text: 'text/plain; charset=utf-8', xml: 'text/xml; charset=utf-8', json: 'application/json; charset=utf-8' } as const;
type TextType = keyof typeof CONTENT_TYPES;

interface Rendered {
  readonly body: string;
  readonly bytes: number;
  readonly etag: string;
}

const RENDER: Record<TextType, (p: AccountPresence | null) => string> = {
  text: presenceText,
  xml: presenceXml,
  json: (p) => JSON.stringify(presenceJson(p)),
};

// The engine replaces an account's presence object on every change and never mutates it, so a body
// rendered from one object stays right for as long as that object is current, and is dropped with it.
// The visibility decision is made on every request before this is consulted.
const renderCache: Record<TextType, WeakMap<AccountPresence, Rendered>> = { text: new WeakMap(), xml: new WeakMap(), json: new WeakMap() };
const FORBIDDEN: Record<TextType, Rendered> = {
  text: render('text', null),
  xml: render('xml', null),
  json: render('json', null),
};

function render(type: TextType, p: AccountPresence | null): Rendered {
  const body = RENDER[type](p);
  return { body, bytes: Buffer.byteLength(body), etag: etagOf(body) };
}

function rendered(type: TextType, p: AccountPresence | null): Rendered {
  if (p === null) return FORBIDDEN[type];
  const cache = renderCache[type];
  let r = cache.get(p);
  if (r === undefined) {
    r = render(type, p);
    cache.set(p, r);
  }
  return r;
}

/** Only absolute http(s) URLs: the browser follows the redirect; the server never fetches anything. */
function checkedUrl(name: string, raw: string): string {
  if (raw.length > MAX_URL) throw new BadParam(`"${name}" is longer than ${MAX_URL} characters`);
  let u: URL;
  try {
    u = new URL(raw.replaceAll(TOKEN, 'available'));
  } catch {
    throw new BadParam(`"${name}" must be an absolute http or https URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new BadParam(`"${name}" must be an http or https URL (got ${u.protocol})`);
  return raw;
}

function redirectsOf(param: (n: string) => string | undefined): Redirects | null {
  const images = param('images');
  let template: string | null = null;
  if (images !== undefined) {
    if (!images.includes(TOKEN)) throw new BadParam(`"images" must contain the ${TOKEN} token`);
    template = checkedUrl('images', images);
  }
  let perStatus: Partial<Record<StatusImageWord, string>> | null = null;
  for (const word of STATUS_WORDS) {
    const v = param(word);
    if (v === undefined) continue;
    perStatus ??= {};
    perStatus[word] = new URL(checkedUrl(word, v)).href;
  }
  if (template === null && perStatus === null) return null;
  return { template, perStatus: perStatus ?? {} };
}

function variantOf(format: string | undefined, scale: string | undefined, accept: string | undefined): ImageVariant {
  if (scale !== undefined && scale !== '1' && scale !== '2') throw new BadParam('"scale" must be 1 or 2');
  if (format === undefined) {
    // Browsers that draw SVG in <img> say so in Accept: they get the image that is sharp at any size.
    if (accept !== undefined && accept.includes('image/svg+xml')) return 'svg';
    return scale === '2' ? 'png2x' : 'png';
  }
  if (format === 'svg') return 'svg';
  if (format === 'png') return scale === '2' ? 'png2x' : 'png';
  throw new BadParam('"format" must be svg or png');
}

function parseForm(body: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of new URLSearchParams(body)) if (!Object.hasOwn(out, k)) out[k] = v;
  return out;
}

/**
 * Writes an answer straight to Node's response: no serialisation, no onSend hooks, and a string body
 * leaves in the same write as the headers.
 */
function writeRaw(req: { readonly headers: IncomingHttpHeaders }, res: ServerResponse, contentType: string, body: string, bytes: number, etag: string, encoding: 'utf8' | 'latin1'): number {
  if (notModified(req, etag)) {
    res.writeHead(304, { etag, 'cache-control': CACHE_CONTROL, vary: VARY, 'access-control-allow-origin': '*', 'access-control-expose-headers': 'ETag' });
    res.end();
    return 304;
  }
  res.writeHead(200, {
    'content-type': contentType,
    'content-length': bytes,
    etag,
    'cache-control': CACHE_CONTROL,
    vary: VARY,
    'access-control-allow-origin': '*',
    'access-control-expose-headers': 'ETag',
  });
  res.end(body, encoding);
  return 200;
}

/** The Fastify route's use of writeRaw; Fastify's onResponse hooks (metrics) still run. */
function sendRaw(req: FastifyRequest, reply: FastifyReply, contentType: string, body: string, bytes: number, etag: string, encoding: 'utf8' | 'latin1'): FastifyReply {
  reply.hijack();
  writeRaw(req, reply.raw, contentType, body, bytes, etag, encoding);
  return reply;
}

/**
 * The query of the one request shape that pages embedding icons send over and over: an anonymous GET
 * (or HEAD) with `jid` and optionally `type`, nothing else. Anything else (credentials, req_jid, a
 * token, redirects, image options, a repeated or unknown parameter, a malformed escape) returns null
 * and takes the full route.
 */
function plainQuery(url: string, start: number): { jid: string; type: string } | null {
  let jid: string | undefined;
  let type: string | undefined;
  let i = start;
  while (i < url.length) {
    let end = url.indexOf('&', i);
    if (end < 0) end = url.length;
    const eq = url.indexOf('=', i);
    if (eq < 0 || eq > end) return null;
    const key = url.slice(i, eq);
    let value: string;
    try {
      value = decodeURIComponent(url.slice(eq + 1, end).replaceAll('+', ' '));
    } catch {
      return null;
    }
    if (key === 'jid' && jid === undefined) jid = value;
    else if (key === 'type' && type === undefined) type = value;
    else return null;
    i = end + 1;
  }
  if (jid === undefined || jid === '') return null;
  return { jid, type: type ?? 'image' };
}

const STATUS_PREFIX = '/plugins/presence/status?';

export function statusEndpoint(opts: StatusEndpointOptions) {
  const { resolver, lookup, images } = opts;
  const EMPTY: Record<string, unknown> = {};

  function respond(req: FastifyRequest, reply: FastifyReply, type: OutputType, image: ImageRequest | null, p: AccountPresence | null): FastifyReply {
    if (type === 'image') {
      const word: StatusImageWord = p === null ? 'forbidden' : statusWord(p);
      const r = (image as ImageRequest).redirects;
      if (r !== null) {
        const to = r.perStatus[word] ?? (r.template !== null ? new URL(r.template.replaceAll(TOKEN, word)).href : undefined);
        if (to !== undefined) {
          return reply.code(302).header('cache-control', CACHE_CONTROL).header('vary', VARY).header('access-control-expose-headers', 'ETag').header('location', to).send();
        }
      }
      const img = images[word][(image as ImageRequest).variant];
      return sendRaw(req, reply, img.contentType, img.latin1, img.body.length, img.etag, 'latin1');
    }
    const r = rendered(type, p);
    return sendRaw(req, reply, CONTENT_TYPES[type], r.body, r.bytes, r.etag, 'utf8');
  }

  function answer(req: FastifyRequest, reply: FastifyReply, type: OutputType, image: ImageRequest | null, target: string | null, who: Requester) {
    const p = lookup.presence(who, target);
    if (p instanceof Promise) return p.then((v) => respond(req, reply, type, image, v));
    return respond(req, reply, type, image, p);
  }

  function handler(req: FastifyRequest, reply: FastifyReply) {
    // Set first so that error answers can be read by scripts on other origins too.
    reply.header('access-control-allow-origin', '*');
    const q = req.query as Record<string, unknown>;
    const b = typeof req.body === 'object' && req.body !== null ? (req.body as Record<string, unknown>) : EMPTY;
    const param = (n: string): string | undefined => first(q[n]) ?? first(b[n]);
    const jid = param('jid');
    if (jid === undefined || jid === '') return sendError(reply, 400, 'bad-request', 'the "jid" parameter is required');
    const type = param('type') ?? 'image';
    if (!TYPES.has(type)) return sendError(reply, 400, 'bad-request', '"type" must be image, text, xml or json');
    let image: ImageRequest | null = null;
    if (type === 'image') {
      try {
        image = { variant: variantOf(param('format'), param('scale'), req.headers.accept), redirects: redirectsOf(param) };
      } catch (e) {
        if (e instanceof BadParam) return sendError(reply, 400, 'bad-request', e.message);
        throw e;
      }
    }
    // Parsed before the requester is known and whatever the outcome, so a malformed, remote or unknown
    // JID walks the same path as a real one.
    const target = lookup.target(jid);
    const who = resolver.resolve(req.headers.authorization, param('token'), param('req_jid'), req.ip);
    if (who instanceof Promise) {
      return who.then(
        (w) => answer(req, reply, type as OutputType, image, target, w),
        (err: unknown) => sendAuthFailed(reply, err),
      );
    }
    return answer(req, reply, type as OutputType, image, target, who);
  }

  // The plugin's parameters, each once or repeated (the first wins, as in the servlet); unknown ones are ignored.
  const params = {
    type: 'object',
    properties: {
      jid: servletParam(JID_MAX),
      req_jid: servletParam(JID_MAX),
      type: servletParam(16),
      token: servletParam(CREDENTIAL_MAX),
      format: servletParam(16),
      scale: servletParam(16),
      images: servletParam(MAX_URL),
      ...Object.fromEntries(STATUS_WORDS.map((w) => [w, servletParam(MAX_URL)])),
    },
  } as const;
  const schema = { headers: authHeaders, querystring: params, body: { type: ['object', 'null'], properties: params.properties } } as const;

  return async function register(app: FastifyInstance): Promise<void> {
    // Pages post the plugin's parameters from HTML forms; the parser is scoped to this plugin.
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: FORM_LIMIT }, (_req, body, done) => {
      done(null, parseForm(body as string));
    });
    app.route({ method: 'GET', url: '/plugins/presence/status', schema: { headers: schema.headers, querystring: schema.querystring }, handler });
    app.route({ method: 'POST', url: '/plugins/presence/status', schema, handler });
    app.options('/plugins/presence/status', preflight);
  };
}

/**
 * The status endpoint's hot path, answered before Fastify sees the request: anonymous `GET
 * /plugins/presence/status?jid=...[&type=...]`, the request a page of embedded icons repeats. It gives
 * exactly the answer the full route gives (the same lookup, visibility rule, bodies and headers; the
 * tests run both paths) without routing, request and reply objects and hooks, about a third of a
 * request's cost. Returns false for anything else, which then takes the full route.
 */
export function statusFastPath(opts: StatusEndpointOptions, onAnswer: (status: number) => void): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { lookup, images } = opts;
  const write = (req: IncomingMessage, res: ServerResponse, type: OutputType, p: AccountPresence | null): void => {
    let status: number;
    if (type === 'image') {
      const word: StatusImageWord = p === null ? 'forbidden' : statusWord(p);
      const img = images[word][variantOf(undefined, undefined, req.headers.accept)];
      status = writeRaw(req, res, img.contentType, img.latin1, img.body.length, img.etag, 'latin1');
    } else {
      const r = rendered(type, p);
      status = writeRaw(req, res, CONTENT_TYPES[type], r.body, r.bytes, r.etag, 'utf8');
    }
    onAnswer(status);
  };
  const failed = (res: ServerResponse, err: unknown): void => {
    // As the full route's error handler answers: a database that cannot be reached is a 503.
    const unavailable = isPresenceError(err) && err.code === 'unavailable';
    const status = unavailable ? 503 : 500;
    const body = JSON.stringify({ error: unavailable ? { code: err.code, message: err.message } : { code: 'internal', message: 'internal error' } });
    res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), 'access-control-allow-origin': '*' });
    res.end(body);
    onAnswer(status);
  };
  return (req, res) => {
    const url = req.url;
    if ((req.method !== 'GET' && req.method !== 'HEAD') || url === undefined || !url.startsWith(STATUS_PREFIX)) return false;
    if (req.headers.authorization !== undefined) return false;
    const q = plainQuery(url, STATUS_PREFIX.length);
    if (q === null || !TYPES.has(q.type)) return false;
    const type = q.type as OutputType;
    // As on the full route: the JID is resolved whatever it is, so unknown and hidden walk one path.
    const p = lookup.presence(ANONYMOUS, lookup.target(q.jid));
    if (p instanceof Promise) p.then((v) => write(req, res, type, v), (err: unknown) => failed(res, err));
    else write(req, res, type, p);
    return true;
  };
}
