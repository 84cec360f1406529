import { createHash } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * Small pieces shared by the HTTP presence endpoints: parameters, validators (ETag) and CORS.
 */

/** A strong validator for a response body. Bodies here are small, so hashing them costs little. */
export function etagOf(body: string | Buffer): string {
  return `"${createHash('sha1').update(body).digest('base64url').slice(0, 22)}"`;
}

/** Whether the client already holds exactly this representation (RFC 9110 §13.1.2, weak comparison). */
export function notModified(req: { readonly headers: IncomingHttpHeaders }, etag: string): boolean {
  const inm = req.headers['if-none-match'];
  if (inm === undefined) return false;
  if (inm === '*') return true;
  for (const tag of inm.split(',')) {
    const t = tag.trim();
    if (t === etag || t === `W/${etag}`) return true;
  }
  return false;
}

/**
 * Presence changes, so browsers keep an answer only briefly and then revalidate it (a 304 costs no
 * body). `private` because an answer can depend on who asked (Basic, token): a shared cache must never
 * hand one requester's view to another.
 */
export const CACHE_CONTROL = 'private, max-age=10';
/** Answers differ by Accept (image format) and by who asked. */
export const VARY = 'Accept, Authorization';

/** Read-only GET endpoints may be called from any web page; credentials travel in Authorization or a token parameter, never cookies. */
export function cors(reply: FastifyReply): void {
  reply.header('access-control-allow-origin', '*');
  reply.header('access-control-expose-headers', 'ETag');
}

export function preflight(_req: FastifyRequest, reply: FastifyReply): void {
  reply
    .code(204)
    .header('access-control-allow-origin', '*')
    .header('access-control-allow-methods', 'GET, HEAD, OPTIONS')
    .header('access-control-allow-headers', 'Authorization, If-None-Match')
    .header('access-control-max-age', '86400')
    .send();
}

/** A parameter given once or several times (querystring parsers return arrays for repeats): the first wins, as in a servlet. */
export function first(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (Array.isArray(v) && typeof v[0] === 'string') return v[0];
  return undefined;
}

export function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send({ error: { code, message } });
}
