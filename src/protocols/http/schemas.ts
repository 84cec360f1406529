/**
 * JSON schemas of the HTTP routes' inputs. Fastify validates them before a handler runs and answers a
 * 400 `{"error": {"code": "bad-request", "message": "querystring/limit must be integer"}}` (see the
 * error handler in server.ts), so a handler never sees a repeated parameter where it expects one, a
 * number where it expects a string, or a value too long to mean anything. Nothing is coerced (see
 * server.ts): a query parameter is a string, or an array of strings when repeated.
 */

/** Longest JID (RFC 7622: three parts of at most 1023 bytes each, and their separators). */
export const JID_MAX = 3071;
/** Longest token or credential worth reading: tokens are a few hundred bytes, Basic at most ~5.5 KB. */
export const CREDENTIAL_MAX = 8192;

export const jidString = { type: 'string', minLength: 1, maxLength: JID_MAX } as const;

export const jidParams = {
  type: 'object',
  required: ['jid'],
  properties: { jid: jidString },
} as const;

/** The Authorization header, where a route reads it (Node keeps only the first of repeated ones). */
export const authHeaders = {
  type: 'object',
  properties: { authorization: { type: 'string', maxLength: CREDENTIAL_MAX } },
} as const;

/**
 * A parameter of the Openfire-compatible status endpoint, read as a servlet's getParameter does: once,
 * or repeated with the first one winning (pages written for the plugin may repeat them).
 */
export function servletParam(maxLength: number) {
  return { type: ['string', 'array'], maxLength, maxItems: 16, items: { type: 'string', maxLength } } as const;
}

/** A JSON body that may be absent (no content type: Fastify validates it as null). */
export function optionalBody<P extends Record<string, unknown>>(properties: P) {
  return { type: ['object', 'null'], properties } as const;
}

export function body<P extends Record<string, unknown>>(properties: P, required: readonly (keyof P & string)[] = []) {
  return { type: 'object', required, properties } as const;
}

/** A query parameter holding a decimal integer (parsed by the handler). */
export const integerParam = { type: 'string', pattern: '^[0-9]{1,9}$' } as const;

/** A query parameter that may be given once or repeated. */
export function listParam(maxItems: number, maxLength: number) {
  return { type: ['string', 'array'], maxLength, maxItems, items: { type: 'string', maxLength } } as const;
}
