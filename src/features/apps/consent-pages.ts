import { randomBytes } from 'node:crypto';
import type { ConnectedApp } from './user-apps.js';

/**
 * The HTML of our pages: sign in, "<App> wants to see...", the connected apps, and errors. No script at all; the
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
button{padding:.5rem 1.2rem;margin-right:.6rem;font-size:1rem}.domain{color:#555}.unverified{color:#a40}.error{color:#a00}
.done{color:#060}ul.apps{list-style:none;padding:0}li.app{border:1px solid #ccc;border-radius:6px;padding:.2rem 1rem .8rem;margin:1rem 0}
li.app h2{font-size:1.1rem;margin:.6rem 0 .2rem}li.app p{margin:.2rem 0}.signout{margin-top:2rem}`;

function layout(nonce: string, title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1"><title>${esc(title)}</title><style nonce="${nonce}">${STYLE}</style></head><body>${body}</body></html>`;
}

function hidden(fields: Record<string, string>): string {
  return Object.entries(fields)
    .map(([k, v]) => `<input type="hidden" name="${esc(k)}" value="${esc(v)}">`)
    .join('');
}

/** What a sign-in leads to: the consent for an app (its authorization request), or the connected apps page. */
export type SignInFor = { readonly appName: string; readonly request: string } | { readonly appName: null; readonly next: 'apps' };

export function signInPage(nonce: string, o: SignInFor & { csrf: string; error?: string }): string {
  const heading = o.appName === null ? 'Sign in to see the apps that can see your presence' : `Sign in to let ${esc(o.appName)} see your presence`;
  const fields: Record<string, string> = o.appName === null ? { csrf: o.csrf, next: o.next } : { csrf: o.csrf, request: o.request };
  return layout(
    nonce,
    'Sign in',
    `<h1>${heading}</h1>` +
      (o.error ? `<p class="error" id="error">${esc(o.error)}</p>` : '') +
      `<form id="signin" method="post" action="/oauth/login">${hidden(fields)}` +
      `<label>Address <input type="text" name="jid" autocomplete="username" required></label>` +
      `<label>Password <input type="password" name="password" autocomplete="current-password" required></label>` +
      `<button type="submit">Sign in</button></form>`,
  );
}

export function consentPage(nonce: string, o: { appName: string; verifiedDomain: string | null; jid: string; scopes: readonly string[]; csrf: string; params: Record<string, string> }): string {
  const what = scopeWords(o.scopes);
  const domain = o.verifiedDomain === null ? `<p class="unverified" id="domain">This app's domain is unverified.</p>` : `<p class="domain" id="domain">From ${esc(o.verifiedDomain)} (verified)</p>`;
  return layout(
    nonce,
    `${o.appName}: allow access?`,
    `<h1 id="ask">${esc(o.appName)} wants to see ${what}</h1>${domain}<p>Signed in as ${esc(o.jid)}. You can revoke this at any time.</p>` +
      `<form id="consent" method="post" action="/oauth/authorize">${hidden({ ...o.params, csrf: o.csrf })}` +
      `<button type="submit" name="decision" value="allow" id="allow">Allow</button><button type="submit" name="decision" value="deny" id="deny">Deny</button></form>`,
  );
}

/** What the scopes let an app see, in the words of "… wants to see <this>". */
export function scopeWords(scopes: readonly string[]): string {
  return scopes.includes('presence.status') ? 'when you are online, away or busy, and your status text and last seen' : 'when you are online, away or busy';
}

export function errorPage(nonce: string, message: string, back: { href: string; text: string } | null = null): string {
  const link = back === null ? '' : `<p><a id="back" href="${esc(back.href)}">${esc(back.text)}</a></p>`;
  return layout(nonce, 'Cannot continue', `<h1>Cannot continue</h1><p class="error" id="error">${esc(message)}</p>${link}`);
}

/** A time for people: UTC to the minute, in a <time> element carrying the exact instant. */
function when(iso: string): string {
  return `<time datetime="${iso}">${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC</time>`;
}

/** The user's connected apps, each with a Revoke form; `revoked` names the app just revoked, for the confirmation. */
export function connectedAppsPage(nonce: string, o: { jid: string; csrf: string; apps: readonly ConnectedApp[]; revoked: string | null }): string {
  const done = o.revoked === null ? '' : `<p class="done" id="done" role="status">${esc(o.revoked)} can no longer see your presence.</p>`;
  const list =
    o.apps.length === 0
      ? `<p id="none">No app can see your presence.</p>`
      : `<ul class="apps" id="apps">${o.apps
          .map(
            (a) =>
              `<li class="app" data-app="${esc(a.app)}"><h2 class="name">${esc(a.name)}</h2>` +
              (a.verifiedDomain === null ? `<p class="unverified domain-line">Domain unverified</p>` : `<p class="domain domain-line">From ${esc(a.verifiedDomain)} (verified)</p>`) +
              `<p class="scopes">Sees ${scopeWords(a.scopes)}</p>` +
              `<p class="granted">Allowed ${when(a.grantedAt)}</p>` +
              `<p class="delivery">Last update sent: ${a.lastDeliveryAt === null ? 'never' : when(a.lastDeliveryAt)}</p>` +
              `<form class="revoke" method="post" action="/oauth/apps/revoke">${hidden({ csrf: o.csrf, app: a.app })}<button type="submit">Revoke</button></form></li>`,
          )
          .join('')}</ul>`;
  return layout(
    nonce,
    'Connected apps',
    `<h1>Apps that can see your presence</h1><p>Signed in as <span id="who">${esc(o.jid)}</span>. Revoking stops an app at once: it gets no further update and its tokens stop working.</p>` +
      done +
      list +
      `<form class="signout" id="signout" method="post" action="/oauth/logout">${hidden({ csrf: o.csrf })}<button type="submit">Sign out</button></form>`,
  );
}
