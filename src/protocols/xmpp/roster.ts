import type { RosterItem } from '../../core/roster.js';
import type { SubType } from '../../core/subscription.js';
import type { XmppConnection } from './connection.js';
import { StanzaError } from './errors.js';
import { NS } from './namespaces.js';
import { jidAttr, nextId } from './stanza-util.js';
import { el, type XmlElement } from './xml.js';

const MAX_NAME = 256;
const MAX_GROUPS = 32;

function subscriptionOf(item: RosterItem): string {
  const { to, from } = item.state;
  return to && from ? 'both' : to ? 'to' : from ? 'from' : 'none';
}

/**
 * A request the user has not answered is not a roster entry of its own (RFC 6121 §3.1.3): the client
 * hears of it as a subscribe presence, and the item appears once the user acts on it.
 */
export function shownInRoster(item: RosterItem): boolean {
  const s = item.state;
  return s.to || s.from || s.pendingOut || item.name !== null || item.groups.length > 0 || (!s.pendingIn && !s.preApproved);
}

export function rosterItemXml(item: RosterItem): XmlElement {
  return el(
    'item',
    NS.roster,
    {
      jid: item.contact,
      name: item.name ?? undefined,
      subscription: subscriptionOf(item),
      ask: item.state.pendingOut ? 'subscribe' : undefined,
      approved: item.state.preApproved ? 'true' : undefined,
    },
    ...item.groups.map((g) => el('group', NS.roster, {}, g)),
  );
}

/** The roster push (RFC 6121 §2.1.6) for a change, with the roster version it leads to (XEP-0237). */
export async function rosterPush(conn: XmppConnection, item: RosterItem | null, contact: string): Promise<string | null> {
  const me = conn.session;
  if (!me) return null;
  if (item !== null && !shownInRoster(item)) return null;
  const version = await conn.ctx.engine.store.getRosterVersion(me.jid);
  const payload = item === null ? el('item', NS.roster, { jid: contact, subscription: 'remove' }) : rosterItemXml(item);
  return el('iq', NS.client, { type: 'set', id: nextId('push'), to: me.fullJid }, el('query', NS.roster, { ver: String(version) }, payload)).toString();
}

export function subscriptionPresence(from: string, to: string, type: SubType): XmlElement {
  return el('presence', NS.client, { from, to, type });
}

export async function handleRosterIq(conn: XmppConnection, s: XmlElement, query: XmlElement): Promise<XmlElement> {
  const engine = conn.ctx.engine;
  const jid = conn.jid;
  const result = el('iq', NS.client, { type: 'result', id: s.attr('id'), to: conn.fullJid });
  if (s.attr('type') === 'get') {
    const roster = await engine.roster(jid);
    const ver = String(roster.version);
    // XEP-0237 §2.4: the client's copy is current, so pushes alone will keep it so.
    if (query.attr('ver') === ver) return result;
    return result.withChild(el('query', NS.roster, { ver }, ...roster.items.filter(shownInRoster).map(rosterItemXml)));
  }
  const items = query.elements().filter((e) => e.name === 'item');
  if (items.length !== 1) throw new StanzaError('bad-request', 'a roster set carries exactly one item');
  const item = items[0] as XmlElement;
  const contactAttr = item.attr('jid');
  if (contactAttr === undefined) throw new StanzaError('bad-request', 'item without jid');
  const contact = jidAttr(contactAttr);
  if (contact.local === '' || contact.resource !== null) throw new StanzaError('bad-request', 'roster items are bare account JIDs');
  if (item.attr('subscription') === 'remove') {
    if (!(await engine.removeRosterItem(jid, contact.bare))) throw new StanzaError('item-not-found');
    return result;
  }
  const name = item.attr('name') ?? null;
  if (name !== null && name.length > MAX_NAME) throw new StanzaError('not-acceptable', 'name too long');
  const groups = [...new Set(item.elements().filter((e) => e.name === 'group').map((g) => g.text()))];
  if (groups.length > MAX_GROUPS || groups.some((g) => g === '' || g.length > MAX_NAME)) throw new StanzaError('not-acceptable', 'bad groups');
  await engine.setRosterItem(jid, contact.bare, name === '' ? null : name, groups);
  return result;
}
