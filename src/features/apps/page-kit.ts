import type { FastifyReply, FastifyRequest } from 'fastify';
import { errorPage, newNonce, pageHeaders } from './consent-pages.js';
import { readCookie, SESSION_COOKIE, sessionCookie, type ConsentSession, type SessionCodec } from './consent-session.js';

/**
 * What every page of ours under /oauth (consent, connected apps) shares: the signed session cookie,
 * and sending HTML with a fresh CSP nonce and the anti-framing headers. One place, so a page cannot
 * be added without them.
 */
export class PageKit {
  /** `httpsOrigin`: the server's public URL is https (public_url), so the cookie is Secure even when a TLS proxy forwards plain http. */
  constructor(
    readonly sessions: SessionCodec,
    private readonly httpsOrigin = false,
  ) {}

  send(reply: FastifyReply, status: number, render: (nonce: string) => string, formTarget: string | null = null): FastifyReply {
    const nonce = newNonce();
    return reply.code(status).headers(pageHeaders(nonce, formTarget)).send(render(nonce));
  }

  fail(reply: FastifyReply, status: number, message: string, back: { href: string; text: string } | null = null): FastifyReply {
    return this.send(reply, status, (n) => errorPage(n, message, back));
  }

  session(req: FastifyRequest): ConsentSession | null {
    return this.sessions.decode(readCookie(req.headers.cookie, SESSION_COOKIE), Date.now());
  }

  setSession(req: FastifyRequest, reply: FastifyReply, s: ConsentSession): void {
    reply.header('set-cookie', sessionCookie(this.sessions.encode(s), this.httpsOrigin || req.protocol === 'https', Math.round((s.exp - Date.now()) / 1000)));
  }

  /** The visitor's session, or a new signed-out one (cookie set on `reply`), so the sign-in form has a CSRF token. */
  sessionOrNew(req: FastifyRequest, reply: FastifyReply): ConsentSession {
    const s = this.session(req);
    if (s !== null) return s;
    const fresh = this.sessions.create(null, Date.now());
    this.setSession(req, reply, fresh);
    return fresh;
  }

  /** The session when it is signed in and the form carries its CSRF token; null for anything else. */
  signedInForm(req: FastifyRequest, csrf: unknown): (ConsentSession & { jid: string }) | null {
    const s = this.session(req);
    return s !== null && s.jid !== null && this.sessions.csrfMatches(s, csrf) ? (s as ConsentSession & { jid: string }) : null;
  }
}
