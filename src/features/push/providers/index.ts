import { createApnsProvider } from './apns.js';
import { createFcmProvider } from './fcm.js';
import { ProviderConfigError, type ProviderFactory, type PushProvider } from './provider.js';
import { WebPushProvider, createWebPushProvider } from './webpush.js';

export * from './provider.js';
export { ApnsProvider } from './apns.js';
export { FcmProvider } from './fcm.js';
export { WebPushProvider, DEFAULT_ENDPOINT_HOSTS, VAPID_KEYS_FILE, loadOrCreateVapidKeys } from './webpush.js';

type ProviderType = PushProvider['type'];

/**
 * The factories by `type`. The platform providers are built in; the generic webhook provider is
 * registered by the push core (registerProviderType('webhook', ...)) so this folder does not depend on
 * the core's signing code.
 */
const factories = new Map<ProviderType, ProviderFactory>([
  ['fcm', createFcmProvider],
  ['apns', createApnsProvider],
  ['webpush', createWebPushProvider],
]);

export function registerProviderType(type: ProviderType, factory: ProviderFactory): void {
  factories.set(type, factory);
}

/** The platform providers' factories by type, for the push feature (which adds `webhook` itself). */
export function platformProviderFactories(): ReadonlyMap<string, ProviderFactory> {
  return new Map(factories);
}

export function providerTypes(): ProviderType[] {
  return [...factories.keys()];
}

/** Builds one configured provider; a bad entry throws ProviderConfigError naming the provider and the field. */
export function createProvider(name: string, config: unknown, deps: Parameters<ProviderFactory>[2]): PushProvider {
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new ProviderConfigError(`push provider "${name}": its configuration must be an object with a "type"`);
  const type = (config as Record<string, unknown>).type;
  if (typeof type !== 'string') throw new ProviderConfigError(`push provider "${name}": type is required (one of ${providerTypes().join(', ')})`);
  const factory = factories.get(type as ProviderType);
  if (!factory) throw new ProviderConfigError(`push provider "${name}": unknown type ${JSON.stringify(type)} (known: ${providerTypes().join(', ')})`);
  return factory(name, config as Record<string, unknown>, deps);
}

/** The VAPID public key browsers subscribe with, when the provider is a Web Push one (the core serves it). */
export function vapidPublicKeyOf(provider: PushProvider): string | null {
  return provider instanceof WebPushProvider ? provider.applicationServerKey : null;
}
