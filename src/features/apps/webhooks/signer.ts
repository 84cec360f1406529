import { createHmac } from 'node:crypto';

/**
 * Standard Webhooks signing (https://www.standardwebhooks.com): the signature is `v1,` and the base64
 * HMAC-SHA256 of `<id>.<timestamp>.<body>` under the bytes of the secret (base64 after `whsec_`).
 */
export function signatureOf(secret: string, id: string, timestampSec: number, body: string): string {
  const key = Buffer.from(secret.startsWith('whsec_') ? secret.slice('whsec_'.length) : secret, 'base64');
  return `v1,${createHmac('sha256', key).update(`${id}.${timestampSec}.${body}`).digest('base64')}`;
}

/** The three headers of a signed request; `id` stays the same across retries so receivers can deduplicate. */
export function signedHeaders(secret: string, id: string, body: string, nowMs: number): Record<string, string> {
  const ts = Math.floor(nowMs / 1000);
  return { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': signatureOf(secret, id, ts, body) };
}
