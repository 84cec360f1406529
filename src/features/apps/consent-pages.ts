import { randomBytes } from 'node:crypto';

/**
 * The HTML of the consent pages: sign in, "<App> wants to see...", and errors. No script at all; the
 * one style block carries a per-response nonce named in the CSP. Everything that comes from outside
 * (app names and domains are chosen by whoever registered the app) goes through `esc`.
 */

export function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] as string);
}

/**
 * Headers of every consent page: no framing (clickjacking), no script, not cached, and forms only to
 * ourselves, plus, on the consent form, the one redirect URI it sends the browser on to: browsers
 * apply `form-action` to the redirects that follow a submission too.
 */
export function pageHeaders(nonce: string, formTarget: string | null = null): Record<string, string> {
  return {
    'content-type': 'text/html; charset=utf-8',
    'content-security-policy': `default-src 'none'; style-src 'nonce-${nonce}'; img-src 'self'; form-action 'self'${formTarget === null ? '' : ` ${cspSource(formTarget)}`}; frame-ancestors 'none'; base-uri 'none'`,
    'x-frame-options': 'DENY',
    'x-content-type-options': 'nosniff',
    'referrer-policy': 'no-referrer',
    'cache-control': 'no-store',
  };
}

/** A CSP source for a registered redirect URI: its origin, or its scheme for a native app's private-use scheme. */
function cspSource(uri: string): string {
  const u = new URL(uri);
  return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : u.protocol;
}

export function newNonce(): string {
  return randomBytes(16).toString('base64');
}

const STYLE = `body{font:16px/1.5 system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}
h1{font-size:1.3rem}label{display:block;margin:.6rem 0}input[type=text],input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}
button{padding:.5rem 1.2rem;margin-right:.6rem;font-size:1rem}.domain{color:#555}.unverified{color:#a40}.error{color:#a00}`;

function layout(nonce: string, title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${esc(title)}</title><style nonce="${nonce}">${STYLE}</style></head><body>${body}</body></html>`;
}

function hidden(fields: Record<string, string>): string {
  return Object.entries(fields)
    .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`)
    .join('');
}

export function signInPage(nonce: string, o: { appName: string; csrf: string; request: string; error?: string }): string {
  return layout(
    nonce,
    'Sign in',
    `<h1>Sign in to let ${esc(o.appName)} see your presence</h1>` +
      (o.error ? `<p class="error" id="error">${esc(o.error)}</p>` : '') +
      `<form id="signin" method="post" action="/oauth/login">${hidden({ csrf: o.csrf, request: o.request })}` +
      `<label>Address <input type="text" name="jid" autocomplete="username" required></label>` +
      `<label>Password <input type="password" name="password" autocomplete="current-password" required></label>` +
      `<button type="submit">Sign in</button></form>`,
  );
}

export function consentPage(nonce: string, o: { appName: string; verifiedDomain: string | null; jid: string; scopes: readonly string[]; csrf: string; params: Record<string, string> }): string {
  const what = o.scopes.includes('presence.status') ? 'when you are online, away or busy, and your status text and last seen' : 'when you are online, away or busy';
  const domain = o.verifiedDomain === null ? `<p class="unverified" id="domain">This app's domain is unverified.</p>` : `<p class="domain" id="domain">From ${esc(o.verifiedDomain)} (verified)</p>`;
  return layout(
    nonce,
    `${o.appName}: allow access?`,
    `<h1 id="ask">${esc(o.appName)} wants to see ${what}</h1>${domain}<p>Signed in as ${esc(o.jid)}. You can revoke this at any time.</p>` +
      `<form id="consent" method="post" action="/oauth/authorize">${hidden({ ...o.params, csrf: o.csrf })}` +
      `<button type="submit" name="decision" value="allow" id="allow">Allow</button><button type="submit" name="decision" value="deny" id="deny">Deny</button></form>`,
  );
}

export function errorPage(nonce: string, message: string): string {
  return layout(nonce, 'Cannot continue', `<h1>Cannot continue</h1><p class="error" id="error">${esc(message)}</p>`);
}
