import { parseJid, type FullJid } from '../../core/jid.js';
import { StanzaError } from './errors.js';

/** Parses a `to`/`from` attribute, or fails the stanza with jid-malformed. */
export function jidAttr(value: string): FullJid {
  try {
    return parseJid(value);
  } catch {
    throw new StanzaError('jid-malformed', `not a valid JID: ${value.slice(0, 100)}`);
  }
}

export function bareJid(j: FullJid): string {
  return j.local ? `${j.local}@${j.domain}` : j.domain;
}

let counter = 0;
export function nextId(prefix: string): string {
  counter = (counter + 1) % 1_000_000_000;
  return `${prefix}${counter.toString(36)}`;
}
