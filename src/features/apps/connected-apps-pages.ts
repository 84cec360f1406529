import type { FastifyInstance } from 'fastify';
import type { AppService } from './app-service.js';
import { connectedAppsPage, signInPage } from './consent-pages.js';
import type { GrantService } from './grant-service.js';
import type { PageKit } from './page-kit.js';
import { connectedApps } from './user-apps.js';

/**
 * The "Connected apps" page (docs/apps.md, "The user's control"): the apps that can see the signed-in
 * user's presence, each with a Revoke button. Same sign-in, session cookie, CSRF tokens and headers as
 * the consent pages (PageKit); registered inside the /oauth plugin so the session cookie (Path=/oauth)
 * and the form parser apply. Revocation goes through GrantService.revoke, which stops webhooks and
 * streams before the browser is answered.
 */

export const CONNECTED_APPS_PATH = '/oauth/apps';

interface Deps {
  readonly kit: PageKit;
  readonly apps: AppService;
  readonly grants: GrantService;
}

const EXPIRED = 'this form expired or did not come from this site; open your connected apps again';
const BACK = { href: CONNECTED_APPS_PATH, text: 'Back to your connected apps' };

const appId = (v: unknown): string | null => (typeof v === 'string' && v.length > 0 && v.length <= 64 ? v : null);

export function connectedAppsPages(app: FastifyInstance, { kit, apps, grants }: Deps): void {
  const { sessions } = kit;

  app.get('/apps', async (req, reply) => {
    const s = kit.sessionOrNew(req, reply);
    // Signed out: the sign-in form right here; it comes back to this page.
    if (s.jid === null) return kit.send(reply, 200, (n) => signInPage(n, { appName: null, next: 'apps', csrf: sessions.csrfToken(s) }));
    const jid = s.jid;
    const list = await connectedApps(apps, grants, jid);
    // The confirmation names the app only if this user really revoked it: a crafted link cannot make
    // the page say something else.
    let revoked: string | null = null;
    const r = appId((req.query as Record<string, unknown> | undefined)?.revoked);
    if (r !== null) {
      const [a, g] = await Promise.all([apps.repo.get(r), grants.repo.getGrant(r, jid)]);
      if (a !== undefined && g !== undefined && g.revokedAt !== null) revoked = a.name;
    }
    return kit.send(reply, 200, (n) => connectedAppsPage(n, { jid, csrf: sessions.csrfToken(s), apps: list, revoked }));
  });

  app.post('/apps/revoke', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    const s = kit.signedInForm(req, body.csrf);
    if (s === null) return kit.fail(reply, 403, EXPIRED, BACK);
    const id = appId(body.app);
    if (id === null) return kit.fail(reply, 400, 'the form names no app', BACK);
    if (!(await grants.revoke(id, s.jid))) return kit.fail(reply, 404, 'that app has no access to your presence (already revoked?)', BACK);
    return reply.code(303).header('cache-control', 'no-store').redirect(`${CONNECTED_APPS_PATH}?${new URLSearchParams({ revoked: id }).toString()}`, 303);
  });

  // Signing out is a form with the CSRF token too: another site must not be able to sign the user out.
  app.post('/logout', async (req, reply) => {
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (kit.signedInForm(req, body.csrf) === null) return kit.fail(reply, 403, EXPIRED, BACK);
    kit.setSession(req, reply, sessions.create(null, Date.now()));
    return reply.code(303).header('cache-control', 'no-store').redirect(CONNECTED_APPS_PATH, 303);
  });
}
