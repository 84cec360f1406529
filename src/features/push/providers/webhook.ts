import { createHash } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import { retryAfterMs } from '../../apps/webhooks/backoff.js';
import { postWebhook } from '../../apps/webhooks/deliver.js';
import { signedHeaders } from '../../apps/webhooks/signer.js';
import { ProviderConfigError, type ProviderFactory, type PushMessage, type PushProvider, type PushTarget, type SendResult } from './provider.js';

/**
 * The generic webhook provider, for operators with their own push gateway: one POST per push, signed
 * as Standard Webhooks (the same signer as app webhooks), to an address checked by the same SSRF rule.
 * Config: `{ "type": "webhook", "url": "https://...", "secret": "whsec_..." }`.
 */

/** The JSON body a gateway receives. */
export interface WebhookPushBody {
  readonly type: 'push';
  /** The provider's name in push_providers. */
  readonly provider: string;
  /** The device id the client registered as its token. */
  readonly device: string;
  readonly secondToken?: string;
  readonly reason: PushMessage['reason'];
  readonly count: number;
  readonly title?: string;
  readonly body?: string;
  readonly sender?: string;
  readonly collapseKey: string;
  readonly urgency: PushMessage['urgency'];
  readonly ttl: number;
  readonly data?: Readonly<Record<string, string>>;
}

export interface WebhookProviderOptions {
  /** webhooks_allow_private: plain http and private addresses allowed (tests, development). */
  readonly allowPrivate: boolean;
  readonly timeoutMs: number;
}

/** A Retry-After beyond this is not believed (the queue's own cap applies on top). */
const RETRY_AFTER_CAP_MS = 3_600_000;

export function webhookProviderFactory(opts: WebhookProviderOptions): ProviderFactory {
  return (name, config) => {
    const field = (k: string): string => {
      const v = config[k];
      if (typeof v !== 'string' || v === '') throw new ProviderConfigError(`push_providers.${name}.${k} must be a non-empty string`);
      return v;
    };
    for (const k of Object.keys(config)) {
      if (k !== 'type' && k !== 'url' && k !== 'secret') throw new ProviderConfigError(`push_providers.${name}: unknown field "${k}" for a webhook provider (it takes url and secret)`);
    }
    const url = field('url');
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new ProviderConfigError(`push_providers.${name}.url is not a URL: ${url.slice(0, 100)}`);
    }
    if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && opts.allowPrivate)) {
      throw new ProviderConfigError(`push_providers.${name}.url must be https (plain http only with webhooks_allow_private)`);
    }
    const secret = field('secret');
    if (!/^whsec_[A-Za-z0-9+/]{16,}={0,2}$/.test(secret) || Buffer.from(secret.slice(6), 'base64').length < 16) {
      throw new ProviderConfigError(`push_providers.${name}.secret must be a Standard Webhooks secret: "whsec_" and at least 16 bytes in base64`);
    }
    return new WebhookProvider(name, url, secret, opts);
  };
}

class WebhookProvider implements PushProvider {
  readonly type = 'webhook' as const;
  readonly #agents = { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };

  constructor(
    readonly name: string,
    private readonly url: string,
    private readonly secret: string,
    private readonly opts: WebhookProviderOptions,
  ) {}

  async send(target: PushTarget, m: PushMessage, signal?: AbortSignal): Promise<SendResult> {
    const payload: WebhookPushBody = {
      type: 'push',
      provider: this.name,
      device: target.token,
      ...(target.secondToken !== undefined ? { secondToken: target.secondToken } : {}),
      reason: m.reason,
      count: m.count,
      ...(m.title !== undefined ? { title: m.title } : {}),
      ...(m.body !== undefined ? { body: m.body } : {}),
      ...(m.sender !== undefined ? { sender: m.sender } : {}),
      collapseKey: m.collapseKey,
      urgency: m.urgency,
      ttl: m.ttlSeconds,
      ...(m.data !== undefined ? { data: m.data } : {}),
    };
    const body = JSON.stringify(payload);
    // The same push retried has the same id (a digest of device and content), so a gateway can deduplicate.
    const id = `push_${createHash('sha256').update(target.token).update('\u0000').update(body).digest('base64url').slice(0, 32)}`;
    const res = await postWebhook(this.url, () => ({ headers: signedHeaders(this.secret, id, body, Date.now()), body }), {
      timeoutMs: this.opts.timeoutMs,
      allowPrivate: this.opts.allowPrivate,
      agents: this.#agents,
      ...(signal !== undefined ? { signal } : {}),
    });
    const latencyMs = res.latencyMs;
    if (res.refused) return { outcome: 'failed', status: null, latencyMs, error: res.error ?? 'refused by the SSRF rule' };
    const status = res.status;
    if (status === null) return { outcome: 'retry', status: null, latencyMs, error: res.error ?? 'no answer' };
    if (status >= 200 && status < 300) return { outcome: 'sent', status, latencyMs, id };
    if (status === 404 || status === 410) return { outcome: 'dead', status, latencyMs, reason: `HTTP ${status}${res.excerpt ? `: ${res.excerpt.slice(0, 200)}` : ''}` };
    if (status === 429 || status >= 500) {
      const after = retryAfterMs(res.retryAfter, Date.now(), RETRY_AFTER_CAP_MS);
      return { outcome: 'retry', status, latencyMs, error: `HTTP ${status}`, ...(after !== null ? { retryAfterMs: after } : {}) };
    }
    return { outcome: 'failed', status, latencyMs, error: `HTTP ${status}${res.excerpt ? `: ${res.excerpt.slice(0, 200)}` : ''}` };
  }

  async close(): Promise<void> {
    this.#agents.http.destroy();
    this.#agents.https.destroy();
  }
}
