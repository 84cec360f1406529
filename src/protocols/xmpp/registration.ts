import { isPresenceError, PresenceError } from '../../core/errors.js';
import { addressKey, hostOf } from '../../engine/login-throttle.js';
import type { XmppConnection } from './connection.js';
import { StanzaError, stanzaErrorReply } from './errors.js';
import { NS } from './namespaces.js';
import { el, type XmlElement } from './xml.js';

/** XEP-0077 in-band registration before authentication, when the operator opened it. */
export async function handleRegistration(conn: XmppConnection, s: XmlElement): Promise<void> {
  const reply = (...c: XmlElement[]) => conn.sendStanza(el('iq', NS.client, { type: 'result', id: s.attr('id') }, ...c));
  try {
    if (conn.ctx.opts.registration !== 'open') throw new StanzaError('service-unavailable', 'registration is closed');
    const q = s.child('query', NS.register) as XmlElement;
    if (s.attr('type') === 'get') {
      reply(el('query', NS.register, {}, el('instructions', NS.register, {}, 'Choose a username and password.'), el('username', NS.register), el('password', NS.register)));
      return;
    }
    if (s.attr('type') !== 'set') throw new StanzaError('bad-request');
    const username = q.childText('username')?.trim() ?? '';
    const password = q.childText('password') ?? '';
    if (username === '' || password === '') throw new StanzaError('not-acceptable', 'username and password are required');
    try {
      // The derivations wait their turn under the client's address: a flood of registrations from one
      // address takes one turn per round of the password pool's queue, and is dropped if the stream goes.
      const address = hostOf(conn.transport.remote);
      await conn.ctx.engine.createAccount(`${username}@${conn.streamDomain}`, password, {
        fairKey: `register:${addressKey(address) ?? address}`,
        admit: () => {
          if (conn.isEnded) throw new PresenceError('not-allowed', 'stream closed');
        },
      });
    } catch (e) {
      if (isPresenceError(e) && e.code === 'conflict') throw new StanzaError('conflict', 'that username is taken');
      if (isPresenceError(e)) throw new StanzaError('not-acceptable', e.message);
      throw e;
    }
    reply();
  } catch (e) {
    if (!(e instanceof StanzaError)) throw e;
    conn.sendStanza(stanzaErrorReply(s, e.condition, e.text));
  }
}
