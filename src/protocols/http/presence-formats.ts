import type { AccountPresence } from '../../core/presence.js';
import { DEFAULT_TEXT, statusWord } from './status-words.js';

/**
 * The text, XML and JSON forms of a presence on the HTTP endpoints. A forbidden answer carries nothing
 * about the JID asked for (not even the JID), so that it is byte-for-byte the same whatever the reason.
 */

export function presenceText(p: AccountPresence | null): string {
  if (p === null) return DEFAULT_TEXT.forbidden;
  // Offline shows the default word, not the last status: the plugin's text was "what is it now".
  if (!p.online) return DEFAULT_TEXT.offline;
  return p.status !== null && p.status !== '' ? p.status : DEFAULT_TEXT[p.show === 'offline' ? 'offline' : p.show];
}

const XML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' };

/** Escapes text and attribute values; also drops characters XML 1.0 cannot carry at all. */
export function xmlEscape(s: string): string {
  return s
    .replace(/[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu, '')
    .replace(/[&<>"']/g, (c) => XML_ESCAPES[c] as string);
}

export const FORBIDDEN_XML =
  "<presence type='error'><error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></presence>";

/** An XMPP presence stanza (RFC 6121 §4.7): show only when not plain available; offline as unavailable with the last status and when (XEP-0203). */
export function presenceXml(p: AccountPresence | null): string {
  if (p === null) return FORBIDDEN_XML;
  const from = xmlEscape(p.jid);
  const status = p.status !== null && p.status !== '' ? `<status>${xmlEscape(p.status)}</status>` : '';
  if (!p.online) {
    const delay = p.lastSeen !== null ? `<delay xmlns='urn:xmpp:delay' stamp='${new Date(p.lastSeen).toISOString()}'/>` : '';
    return `<presence from='${from}' type='unavailable'>${status}${delay}</presence>`;
  }
  const show = p.show !== 'available' ? `<show>${p.show}</show>` : '';
  return `<presence from='${from}'>${show}${status}<priority>${p.priority}</priority></presence>`;
}

export interface PresenceJson {
  readonly jid: string | null;
  readonly online: boolean;
  /** The status word: available, chat, away, xa, dnd, offline, or forbidden. */
  readonly show: string;
  readonly status: string | null;
  readonly priority: number;
  readonly lastSeen: string | null;
}

export const FORBIDDEN_JSON: PresenceJson = { jid: null, online: false, show: 'forbidden', status: null, priority: 0, lastSeen: null };

/** The Presence object of the native protocol and the admin API, so clients parse one shape everywhere. */
export function presenceJson(p: AccountPresence | null): PresenceJson {
  if (p === null) return FORBIDDEN_JSON;
  return {
    jid: p.jid,
    online: p.online,
    show: statusWord(p),
    status: p.status,
    priority: p.priority,
    lastSeen: p.lastSeen === null ? null : new Date(p.lastSeen).toISOString(),
  };
}
