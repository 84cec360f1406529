import { PresenceError } from '../../core/errors.js';
import type { NativeRequestContext } from '../registries.js';
import { registrationInput } from './registration-input.js';
import type { PushService } from './push-service.js';
import type { Registration } from './repository.js';

/** A registration as push.list shows it to its account: enough to recognise a device and see its health, not its secrets. */
export function registrationView(r: Registration, resource: string | null) {
  return {
    id: r.id,
    provider: r.provider,
    // The end of the token, to tell devices apart; the whole token stays on the server.
    tokenHint: `…${r.token.slice(-8)}`,
    resource: r.resource,
    current: resource !== null && r.resource === resource,
    source: r.source,
    createdAt: new Date(r.createdAt).toISOString(),
    updatedAt: new Date(r.updatedAt).toISOString(),
    lastSuccessAt: r.lastSuccessAt === null ? null : new Date(r.lastSuccessAt).toISOString(),
    failures: r.failures,
    lastError: r.lastError,
    disabled: r.disabledAt === null ? null : { at: new Date(r.disabledAt).toISOString(), reason: r.disabledReason },
  };
}

/** The native protocol's push.register, push.unregister and push.list; always for the session's own account and device. */
export function nativePushHandlers(service: PushService, allowPrivate: boolean) {
  const configured = (): void => {
    if (service.providers.size === 0) throw new PresenceError('unsupported', 'push notifications are not configured on this server (push_providers is empty)');
  };
  return {
    async register({ jid, resource, body }: NativeRequestContext) {
      configured();
      const input = await registrationInput(body, service.providers, allowPrivate);
      const { registration, replaced } = await service.register({
        account: jid,
        provider: input.provider,
        token: input.token,
        secondToken: input.secondToken,
        keys: input.keys,
        resource,
        source: 'native',
      });
      return { id: registration.id, replaced, registration: registrationView(registration, resource) };
    },
    async unregister({ jid, body }: NativeRequestContext) {
      // `id` is the request's own id in the native protocol: a registration is named `registration`.
      for (const k of Object.keys(body)) {
        if (!['id', 'type', 'registration', 'token'].includes(k)) throw new PresenceError('bad-request', `unknown field "${k.slice(0, 64)}" (push.unregister takes registration or token)`);
      }
      const { registration, token } = body;
      if ((registration === undefined) === (token === undefined)) throw new PresenceError('bad-request', 'push.unregister takes exactly one of "registration" (an id from push.list) and "token"');
      const value = registration ?? token;
      const field = registration !== undefined ? 'registration' : 'token';
      if (typeof value !== 'string' || value === '' || value.length > 4096) throw new PresenceError('bad-request', `"${field}" must be a non-empty string`);
      return { removed: await service.unregister(jid, registration !== undefined ? { id: value } : { token: value }) };
    },
    async list({ jid, resource }: NativeRequestContext) {
      return { registrations: (await service.list(jid)).map((r) => registrationView(r, resource)) };
    },
  };
}
