/**
 * The consent flow driven over plain HTTP (no browser): what a browser does on our pages, with the
 * cookie and the CSRF token taken from the pages as a browser would get them.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { TestServer } from './server.js';

export const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;

export interface RegisteredApp {
  readonly id: string;
  readonly clientSecret: string;
}

export async function registerApp(t: TestServer, owner: string, pw: string, redirectUris: string[], name = 'Chess Club'): Promise<RegisteredApp> {
  const res = await fetch(`${t.url}/api/v1/apps`, {
    method: 'POST',
    headers: { authorization: basic(owner, pw), 'content-type': 'application/json' },
    body: JSON.stringify({ name, description: 'Play chess', homepage: 'https://chess.example/', redirectUris }),
  });
  if (res.status !== 201) throw new Error(`registration failed: ${res.status} ${await res.text()}`);
  const b = (await res.json()) as { id: string; clientSecret: string };
  return { id: b.id, clientSecret: b.clientSecret };
}

export function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

/** A browser's cookie jar for our one cookie. */
export class Browserless {
  cookie: string | null = null;
  constructor(readonly base: string) {}

  async get(path: string): Promise<Response> {
    const res = await fetch(new URL(path, this.base), { redirect: 'manual', headers: this.cookie ? { cookie: this.cookie } : {} });
    this.keep(res);
    return res;
  }

  async post(path: string, form: Record<string, string>): Promise<Response> {
    const res = await fetch(new URL(path, this.base), {
      method: 'POST',
      redirect: 'manual',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(this.cookie ? { cookie: this.cookie } : {}) },
      body: new URLSearchParams(form).toString(),
    });
    this.keep(res);
    return res;
  }

  private keep(res: Response): void {
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0] as string;
  }
}

/** The hidden fields of the first form on a page. */
export function formFields(html: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of html.matchAll(/<input type="hidden" name="([^"]*)" value="([^"]*)">/g)) {
    out[unescape(m[1] as string)] = unescape(m[2] as string);
  }
  return out;
}

function unescape(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|#39);/g, (_, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[e] as string);
}

export interface AuthorizeParams {
  readonly clientId: string;
  readonly redirectUri: string;
  readonly challenge?: string;
  readonly method?: string;
  readonly scope?: string;
  readonly state?: string;
}

export function authorizeUrl(p: AuthorizeParams): string {
  const q = new URLSearchParams({ response_type: 'code', client_id: p.clientId, redirect_uri: p.redirectUri, scope: p.scope ?? 'presence' });
  if (p.challenge !== undefined) q.set('code_challenge', p.challenge);
  if (p.method !== undefined) q.set('code_challenge_method', p.method);
  if (p.state !== undefined) q.set('state', p.state);
  return `/oauth/authorize?${q.toString()}`;
}

/** Signs in on the page and answers the consent with `decision`; the redirect back to the app. */
export async function consent(b: Browserless, p: AuthorizeParams, jid: string, pw: string, decision: 'allow' | 'deny' = 'allow'): Promise<URL> {
  let page = await b.get(authorizeUrl(p));
  if (page.status !== 200) throw new Error(`authorize page: ${page.status} ${await page.text()}`);
  let html = await page.text();
  if (html.includes('id="signin"')) {
    const signed = await b.post('/oauth/login', { ...formFields(html), jid, password: pw });
    if (signed.status !== 303) throw new Error(`sign-in: ${signed.status} ${await signed.text()}`);
    page = await b.get(signed.headers.get('location') as string);
    html = await page.text();
  }
  const res = await b.post('/oauth/authorize', { ...formFields(html), decision });
  if (res.status !== 303) throw new Error(`consent: ${res.status} ${await res.text()}`);
  return new URL(res.headers.get('location') as string);
}

export async function tokenRequest(t: TestServer, app: RegisteredApp, form: Record<string, string>): Promise<{ status: number; body: any }> {
  const res = await fetch(`${t.url}/oauth/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: basic(app.id, app.clientSecret) },
    body: new URLSearchParams(form).toString(),
  });
  return { status: res.status, body: await res.json() };
}
