import type { FeatureContext } from '../../feature.js';
import type { PushService } from '../push-service.js';
import { NS_PUSH, NS_PUSH_AWAY, pushIqHandler } from './enable.js';
import { pushComponent } from './push-component.js';
import { XmppPushTriggers } from './triggers.js';

/**
 * The XMPP side of push (docs/push.md, "XMPP (XEP-0357)"): `enable`/`disable` on the account, the
 * built-in push service at `<push_service_name>.<domain>`, the triggers, and client state indication
 * as an activity rule of the core's policy.
 */
export async function setupXmppPush(ctx: FeatureContext, service: PushService): Promise<XmppPushTriggers> {
  const c = ctx.config;
  const name = c.push_service_name;
  const triggers = new XmppPushTriggers(
    service,
    ctx.engine,
    ctx.xmpp,
    { offline: c.push_xmpp_offline, away: c.push_xmpp_away, sm: c.push_xmpp_sm, inactive: c.push_xmpp_inactive, clear: c.push_xmpp_clear },
    ctx.log.child({ part: 'xmpp' }),
  );
  await triggers.load();
  triggers.listen(ctx.xmpp.hooks);
  ctx.xmpp.iq(NS_PUSH, pushIqHandler({ service, serviceName: name, isLocalDomain: (d) => ctx.engine.isLocalDomain(d), now: () => Date.now(), enabling: async (a) => {
        triggers.enabledBy(a);
        await ctx.cluster.publish('enabled', { u: a }, { acknowledged: true });
      } }), []);
  ctx.xmpp.accountFeatures([NS_PUSH, NS_PUSH_AWAY]);
  ctx.xmpp.component(name, pushComponent(service, c.webhooks_allow_private));
  // XEP-0352: a client that said it is inactive is not looking at its screen, so its device is pushed.
  service.addActivityRule((account, resource) => !ctx.xmpp.sessions.inactive(account, resource));
  return triggers;
}
