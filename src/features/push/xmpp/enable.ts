import { StanzaError } from '../../../protocols/xmpp/errors.js';
import { jidAttr } from '../../../protocols/xmpp/stanza-util.js';
import type { XmlElement } from '../../../protocols/xmpp/xml.js';
import type { IqRequest } from '../../registries.js';
import type { PushService } from '../push-service.js';
import { NS_DATA, readSubmittedForm } from './forms.js';

export const NS_PUSH = 'urn:xmpp:push:0';
/** Tigase's extension: `away='true'` on enable asks for pushes while every resource is away. */
export const NS_PUSH_AWAY = 'tigase:push:away:0';
export const PUBLISH_OPTIONS = 'http://jabber.org/protocol/pubsub#publish-options';

const MAX_NODE = 256;
/** Publish-options are stored with the registration; a few KB is plenty for a secret and an endpoint. */
const MAX_OPTIONS_CHARS = 8192;

export interface EnableDeps {
  readonly service: PushService;
  /** The push service's label: jid `<label>.<domain>`. */
  readonly serviceName: string;
  readonly isLocalDomain: (d: string) => boolean;
  readonly now: () => number;
  /**
   * Told before an enable is written (the triggers skip accounts they know have nothing enabled);
   * resolves once every node of a cluster knows.
   */
  readonly enabling: (account: string) => void | Promise<void>;
}

function resourceOf(fullJid: string): string | null {
  const slash = fullJid.indexOf('/');
  return slash >= 0 ? fullJid.slice(slash + 1) : null;
}

/**
 * XEP-0357 `enable` and `disable`, sent by a session of the account to its own bare JID (or without
 * `to`). `enable` names a node that `register-device` at the built-in push service handed out; it
 * turns that device's pushes on (or updates `away` and the publish-options of an enabled one), and
 * remembers the enabling session's resource, which is how the policy tells whether that device is in
 * use. `disable` turns pushes off for one node or every node of the service, keeping the device's
 * registration so that a later `enable` works without registering again.
 */
export function pushIqHandler(deps: EnableDeps) {
  const serviceJid = (domain: string) => `${deps.serviceName}.${domain}`;
  return async (req: IqRequest): Promise<null> => {
    const p = req.payload;
    const domain = req.jid.slice(req.jid.indexOf('@') + 1);
    if (req.target.kind !== 'self') {
      throw new StanzaError('forbidden', 'push notifications are enabled and disabled by the account\'s own sessions: send the iq to your own bare JID or without a to');
    }
    if (req.type !== 'set') throw new StanzaError('bad-request', 'enable and disable are iq sets');
    if (p.name !== 'enable' && p.name !== 'disable') throw new StanzaError('bad-request', `unknown element <${p.name.slice(0, 40)}/> in ${NS_PUSH}`);
    const jidText = p.attr('jid');
    if (jidText === undefined || jidText === '') throw new StanzaError('bad-request', `${p.name} needs a jid: the push service, ${serviceJid(domain)}`);
    const j = jidAttr(jidText);
    const node = p.attr('node');
    if (node !== undefined && (node === '' || node.length > MAX_NODE)) throw new StanzaError('bad-request', `node must be 1 to ${MAX_NODE} characters`);
    const dot = j.domain.indexOf('.');
    const ours = j.local === '' && j.resource === null && dot > 0 && j.domain.slice(0, dot) === deps.serviceName && deps.isLocalDomain(j.domain.slice(dot + 1));
    const account = req.jid;

    if (p.name === 'disable') {
      // Nothing can be enabled with another service, so disabling one is already done.
      if (!ours) return null;
      for (const r of await deps.service.list(account)) {
        if (r.source !== 'xmpp' || r.xmppJid !== j.bare) continue;
        if (node !== undefined && r.node !== node) continue;
        await deps.service.repo.updateXmpp(r.id, { xmppJid: null, away: false }, deps.now());
      }
      return null;
    }

    if (!ours) {
      // An XMPP server pushes through an app server by publishing to it over server-to-server links,
      // which this server does not have: a registration naming another service could never be served.
      throw new StanzaError('feature-not-implemented', `this server has no server-to-server connections, so it can only push through its own push service: register your device with ${serviceJid(domain)} (ad-hoc command register-device) and enable that`);
    }
    if (node === undefined) throw new StanzaError('bad-request', `enable needs the node that register-device at ${serviceJid(domain)} answered`);
    const awayAttr = p.attr('away');
    if (awayAttr !== undefined && !['true', 'false', '1', '0'].includes(awayAttr)) throw new StanzaError('bad-request', 'away must be true or false');
    const away = awayAttr === 'true' || awayAttr === '1';
    const options = publishOptions(p);

    const reg = await deps.service.repo.byNode(node);
    // Someone else's node is answered exactly like a node that does not exist.
    if (reg === undefined || reg.account !== account || reg.source !== 'xmpp') {
      throw new StanzaError('item-not-found', `no device of yours is registered under this node; register it with the ad-hoc command register-device at ${serviceJid(domain)} first`);
    }
    await deps.enabling(account);
    await deps.service.repo.updateXmpp(reg.id, { xmppJid: j.bare, away, options, resource: resourceOf(req.fullJid) }, deps.now());
    return null;
  };
}

/** The optional publish-options form of enable (XEP-0357 §5), as a flat map of its fields. */
function publishOptions(enable: XmlElement): Record<string, string> | null {
  const children = enable.elements();
  for (const c of children) {
    if (c.name !== 'x' || c.ns !== NS_DATA) throw new StanzaError('bad-request', `enable takes only a publish-options data form (got <${c.name.slice(0, 40)}/>)`);
  }
  if (children.length === 0) return null;
  if (children.length > 1) throw new StanzaError('bad-request', 'enable takes at most one publish-options form');
  const form = readSubmittedForm(children[0] as XmlElement, 'publish-options');
  if (form.formType !== PUBLISH_OPTIONS) throw new StanzaError('bad-request', `publish-options: the form's FORM_TYPE must be ${PUBLISH_OPTIONS}`);
  const entries = [...form.fields].map(([k, values]) => [k, values.join('\n')] as const);
  const chars = entries.reduce((n, [k, v]) => n + k.length + v.length, 0);
  if (chars > MAX_OPTIONS_CHARS) throw new StanzaError('bad-request', `publish-options: at most ${MAX_OPTIONS_CHARS} characters in all`);
  // fromEntries: a field named __proto__ stays a plain key.
  return Object.fromEntries(entries);
}
