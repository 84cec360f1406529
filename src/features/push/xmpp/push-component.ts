import { randomBytes } from 'node:crypto';
import { isPresenceError } from '../../../core/errors.js';
import { StanzaError } from '../../../protocols/xmpp/errors.js';
import { el, type XmlElement } from '../../../protocols/xmpp/xml.js';
import type { IqRequest, XmppComponent } from '../../registries.js';
import type { PushService } from '../push-service.js';
import { registrationInput } from '../registration-input.js';
import { field, NS_DATA, readSubmittedForm, single, type SubmittedForm } from './forms.js';
import { NS_PUSH } from './enable.js';

export const NS_COMMANDS = 'http://jabber.org/protocol/commands';
const DISCO_INFO = 'http://jabber.org/protocol/disco#info';
const DISCO_ITEMS = 'http://jabber.org/protocol/disco#items';

const COMMANDS = {
  'register-device': 'Register device',
  'unregister-device': 'Unregister device',
} as const;
type CommandNode = keyof typeof COMMANDS;
const isCommand = (n: string | undefined): n is CommandNode => n !== undefined && Object.hasOwn(COMMANDS, n);

/** XEP-0050 §4.6: a form that cannot be used is bad-request with this condition. */
function badPayload(text: string): StanzaError {
  return new StanzaError('bad-request', text, { element: el('bad-payload', NS_COMMANDS), type: 'modify' });
}

function resourceOf(fullJid: string): string | null {
  const slash = fullJid.indexOf('/');
  return slash >= 0 ? fullJid.slice(slash + 1) : null;
}

/**
 * The built-in push service at `<push_service_name>.<domain>`, in the manner of Tigase's push
 * component: a device registers its provider and token with the ad-hoc command `register-device` and
 * gets back the `node` to name in XEP-0357 `enable`; `unregister-device` removes it. Registrations
 * belong to the account that sent the command, so nobody can enable or remove another account's device.
 */
export function pushComponent(service: PushService, allowPrivate: boolean): XmppComponent {
  return {
    name: 'Push notifications',
    info(node) {
      if (node === undefined) {
        return {
          identities: [{ category: 'pubsub', type: 'push', name: 'Push notifications' }],
          features: [DISCO_INFO, DISCO_ITEMS, NS_COMMANDS, NS_PUSH, NS_DATA],
        };
      }
      if (node === NS_COMMANDS) return { identities: [{ category: 'automation', type: 'command-list', name: 'Commands' }], features: [DISCO_INFO, DISCO_ITEMS] };
      if (isCommand(node)) return { identities: [{ category: 'automation', type: 'command-node', name: COMMANDS[node] }], features: [NS_COMMANDS, NS_DATA] };
      return null;
    },
    items(node, jid) {
      if (node === undefined) return [];
      if (node === NS_COMMANDS) return Object.entries(COMMANDS).map(([n, name]) => ({ jid, node: n, name }));
      if (isCommand(node)) return [];
      return null;
    },
    async iq(req: IqRequest) {
      const c = req.payload;
      if (c.ns !== NS_COMMANDS || c.name !== 'command') throw new StanzaError('service-unavailable', 'the push service answers ad-hoc commands (register-device, unregister-device) and disco');
      if (req.type !== 'set') throw new StanzaError('bad-request', 'ad-hoc commands are iq sets');
      const node = c.attr('node');
      if (!isCommand(node)) throw new StanzaError('item-not-found', `no command ${JSON.stringify(node ?? '').slice(0, 64)}; the push service has register-device and unregister-device`);
      const sessionid = c.attr('sessionid') ?? randomBytes(8).toString('hex');
      const action = c.attr('action') ?? 'execute';
      const answer = (status: string, ...children: XmlElement[]) => el('command', NS_COMMANDS, { node, sessionid, status }, ...children);
      if (action === 'cancel') return answer('canceled');
      if (action !== 'execute' && action !== 'complete') throw badPayload(`action ${action.slice(0, 20)} is not offered: send the form with action execute or complete`);
      const forms = c.elements().filter((e) => e.name === 'x' && e.ns === NS_DATA);
      if (forms.length > 1) throw badPayload('a command carries one form');
      if (forms.length === 0) {
        // XEP-0050 §3.4: executing without a form gets the form to fill in.
        return answer('executing', el('actions', NS_COMMANDS, { execute: 'complete' }, el('complete', NS_COMMANDS)), commandForm(node, [...service.providers.keys()]));
      }
      let form: SubmittedForm;
      try {
        form = readSubmittedForm(forms[0] as XmlElement, node);
      } catch (e) {
        throw e instanceof StanzaError ? badPayload(e.text ?? e.message) : e;
      }
      for (const k of form.fields.keys()) {
        if (k !== 'provider' && k !== 'device-token' && k !== 'device-second-token') throw badPayload(`${node}: unknown field ${k.slice(0, 64)} (the fields are provider, device-token and device-second-token)`);
      }
      const provider = single(form, 'provider', node);
      const token = single(form, 'device-token', node);
      const second = single(form, 'device-second-token', node);
      if (provider === undefined || provider === '') throw badPayload(`${node}: the field provider is required (this server's providers: ${[...service.providers.keys()].join(', ') || 'none'})`);
      if (token === undefined || token === '') throw badPayload(`${node}: the field device-token is required`);
      if (node === 'unregister-device') {
        const mine = (await service.list(req.jid)).filter((r) => r.provider === provider && r.token === token);
        if (mine.length === 0) throw new StanzaError('item-not-found', 'no device of yours is registered with this provider and token');
        for (const r of mine) await service.unregister(req.jid, { id: r.id });
        return answer('completed');
      }
      let input;
      try {
        // The same checks as the native push.register: a configured provider, a bounded printable token.
        input = await registrationInput({ provider, token, ...(second !== undefined && second !== '' ? { secondToken: second } : {}) }, service.providers, allowPrivate);
      } catch (e) {
        if (isPresenceError(e)) throw badPayload(`${node}: ${e.message.replace(/"token"/g, 'device-token').replace(/"secondToken"/g, 'device-second-token')}`);
        throw e;
      }
      if (input.keys !== null) throw badPayload(`${node}: Web Push subscriptions are registered through the native protocol`);
      let registration;
      try {
        ({ registration } = await service.register({
          account: req.jid,
          provider: input.provider,
          token: input.token,
          secondToken: input.secondToken,
          source: 'xmpp',
          resource: resourceOf(req.fullJid),
        }));
      } catch (e) {
        if (isPresenceError(e) && e.code === 'not-allowed') throw new StanzaError('not-allowed', e.message);
        if (isPresenceError(e)) throw badPayload(e.message);
        throw e;
      }
      return answer('completed', el('x', NS_DATA, { type: 'result' }, field('node', registration.node)));
    },
  };
}

function commandForm(node: CommandNode, providers: string[]): XmlElement {
  return el(
    'x',
    NS_DATA,
    { type: 'form' },
    el('title', NS_DATA, {}, COMMANDS[node]),
    el(
      'field',
      NS_DATA,
      { var: 'provider', type: 'list-single', label: 'Provider' },
      el('required', NS_DATA),
      ...providers.map((p) => el('option', NS_DATA, { label: p }, el('value', NS_DATA, {}, p))),
    ),
    field('device-token', null, { type: 'text-single', label: 'Device token', required: true }),
    ...(node === 'register-device' ? [field('device-second-token', null, { type: 'text-single', label: 'Second device token (e.g. an APNs VoIP token)' })] : []),
  );
}
