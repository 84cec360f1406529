import { NS } from './namespaces.js';
import { el, escapeText, type XmlElement } from './xml.js';

/** RFC 6120 §4.9.3 stream error conditions used by this server. */
export type StreamCondition =
  | 'bad-format'
  | 'conflict'
  | 'connection-timeout'
  | 'host-unknown'
  | 'internal-server-error'
  | 'invalid-namespace'
  | 'invalid-xml'
  | 'not-authorized'
  | 'not-well-formed'
  | 'policy-violation'
  | 'reset'
  | 'resource-constraint'
  | 'restricted-xml'
  | 'system-shutdown'
  | 'unsupported-stanza-type'
  | 'unsupported-version';

/** Raised anywhere in the stream logic to end the stream with a stream error. */
export class StreamError extends Error {
  constructor(
    readonly condition: StreamCondition,
    readonly text?: string,
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StreamError';
  }
}

export function streamErrorXml(condition: StreamCondition, text?: string): string {
  const t = text ? `<text xmlns='${NS.streams}'>${escapeText(text)}</text>` : '';
  return `<stream:error xmlns:stream='${NS.stream}'><${condition} xmlns='${NS.streams}'/>${t}</stream:error>`;
}

/** RFC 6120 §8.3.3 stanza error conditions, with the error type each is sent with. */
const STANZA_ERROR_TYPES = {
  'bad-request': 'modify',
  conflict: 'cancel',
  'feature-not-implemented': 'cancel',
  forbidden: 'auth',
  'internal-server-error': 'wait',
  'item-not-found': 'cancel',
  'jid-malformed': 'modify',
  'not-acceptable': 'modify',
  'not-allowed': 'cancel',
  'not-authorized': 'auth',
  'policy-violation': 'modify',
  'recipient-unavailable': 'wait',
  'remote-server-not-found': 'cancel',
  'resource-constraint': 'wait',
  'service-unavailable': 'cancel',
  'unexpected-request': 'wait',
} as const;
export type StanzaCondition = keyof typeof STANZA_ERROR_TYPES;

type StanzaErrorType = (typeof STANZA_ERROR_TYPES)[StanzaCondition];

/** Raised by stanza handlers; the stanza is answered with an error of this condition. */
export class StanzaError extends Error {
  constructor(
    readonly condition: StanzaCondition,
    readonly text?: string,
    /** An application-specific condition element (RFC 6120 §8.3.4), and the type it is specified with. */
    readonly app?: { readonly element: XmlElement; readonly type: StanzaErrorType },
  ) {
    super(text ? `${condition}: ${text}` : condition);
    this.name = 'StanzaError';
  }
}

/** XEP-0191 §3.5: a stanza to a contact the sender blocks is refused with this. */
export function blockedError(): StanzaError {
  return new StanzaError('not-acceptable', 'you block this contact', { element: el('blocked', NS.blockingErrors), type: 'cancel' });
}

/**
 * The error reply to `stanza` (RFC 6120 §8.3.1): addressed back to the sender, carrying the original
 * payload for messages and presence as allowed, and the condition.
 */
export function stanzaErrorReply(stanza: XmlElement, condition: StanzaCondition, text?: string, app?: StanzaError['app']): XmlElement {
  const error = el(
    'error',
    NS.client,
    { type: app?.type ?? STANZA_ERROR_TYPES[condition] },
    el(condition, NS.stanzas),
    text ? el('text', NS.stanzas, {}, text) : null,
    app?.element,
  );
  const attrs: Record<string, string | undefined> = { type: 'error', to: stanza.attr('from'), from: stanza.attr('to') };
  if (stanza.attr('id') !== undefined) attrs.id = stanza.attr('id');
  // An iq error may echo the request's payload; messages and presence do not, to keep errors small.
  const payload = stanza.name === 'iq' ? stanza.elements().slice(0, 1) : [];
  return el(stanza.name, NS.client, attrs, ...payload, error);
}
