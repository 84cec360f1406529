// @ts-check
/**
 * An audit log of presence transitions: one JSON line per event, appended to a file.
 *
 * Settings:
 *   path (required): the file to append to (created if missing).
 *
 * Lines: {"at": <epoch ms>, "jid", "event": "connect"|"disconnect"|"presence"|"subscription", ...}
 * where disconnect carries the resource and the reason (graceful, timeout, replaced, kicked, shutdown, ...).
 *
 * @typedef {{ path: string }} Settings
 */
import { appendFile } from 'node:fs/promises';

/** @type {import('@presenced/extension-api').PresenceExtension<Settings>} */
export default {
  name: 'audit-log',

  onStart(ctx) {
    if (typeof ctx.settings.path !== 'string' || ctx.settings.path === '') throw new Error('settings.path (the audit file) is required');
  },

  async onUserPresence(user, change, ctx) {
    /** @type {Record<string, unknown>} */
    const line = { at: change.at, jid: user.jid, event: change.type };
    if (change.type === 'connect') Object.assign(line, { resource: change.resource, protocol: change.protocol });
    else if (change.type === 'disconnect') Object.assign(line, { resource: change.resource, reason: change.reason });
    else if (change.type === 'presence') Object.assign(line, { online: user.online, show: user.show, status: user.status, was: change.previous.show });
    else Object.assign(line, { contact: change.contact, state: change.state });
    // One write per line, in the order the server calls (which is the order things happened per account).
    await appendFile(ctx.settings.path, JSON.stringify(line) + '\n');
  },
};
