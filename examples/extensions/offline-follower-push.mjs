// @ts-check
/**
 * The seed's use case: when a contact comes online, push a notification to each of their followers
 * who is offline, through the server's configured push providers (FCM, APNs, Web Push, webhook).
 *
 * Settings (all optional):
 *   title: the notification title, "{contact}" is replaced by the contact's JID (default "{contact} is online")
 *   body:  the notification body, likewise (default "Say hello to {contact}")
 *
 * @typedef {{ title?: string, body?: string }} Settings
 */

/** @type {import('@presenced/extension-api').PresenceExtension<Settings>} */
export default {
  name: 'offline-follower-push',

  async onUserPresence(user, change, ctx) {
    // Only the moment the contact's followers see it go from offline to online.
    if (change.type !== 'presence' || change.previous.online || !user.online) return;
    const fill = (/** @type {string} */ t) => t.replaceAll('{contact}', user.jid);
    for (const follower of await ctx.presence.followers(user.jid)) {
      const f = await ctx.presence.get(follower);
      // Online followers see the change live; only offline ones with a device to reach get a push.
      if (f.online || !f.externalTokens.some((t) => t.enabled)) continue;
      const { queued } = await ctx.push.send(follower, {
        title: fill(ctx.settings.title ?? '{contact} is online'),
        body: fill(ctx.settings.body ?? 'Say hello to {contact}'),
        data: { contact: user.jid, kind: 'contact-online' },
        // A newer "X is online" replaces one the device has not received yet.
        collapseKey: `online-${user.jid.replace(/[^A-Za-z0-9_.:-]/g, '_')}`.slice(0, 64),
      });
      ctx.log.info('pushed', { follower, contact: user.jid, devices: queued.length });
    }
  },
};
