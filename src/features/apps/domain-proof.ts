import { PresenceError } from '../../core/errors.js';

/**
 * Domain proof, as in the seed's design: the app serves the key we gave it at
 * `https://<its homepage's host>/__presence`, which only whoever controls that host can do.
 */

export const PROOF_PATH = '/__presence';
export const PROOF_MAX_BYTES = 4096;
export const PROOF_TIMEOUT_MS = 5000;

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

/**
 * Where the key is fetched: always https, except a loopback homepage served over http when the
 * operator allows private addresses (development and tests).
 */
export function proofUrl(homepage: string, allowPrivate: boolean): URL {
  const home = new URL(homepage);
  const local = LOOPBACK_HOSTS.has(home.hostname);
  const url = new URL(PROOF_PATH, home.origin);
  if (local && !allowPrivate) throw new PresenceError('bad-request', 'a localhost homepage cannot be verified on this server (webhooks_allow_private is off)');
  if (!(local && home.protocol === 'http:')) url.protocol = 'https:';
  return url;
}

/** The host a proof vouches for (the homepage's, without port). */
export function proofDomain(homepage: string): string {
  return new URL(homepage).hostname;
}

export class ProofFailed extends Error {}

/**
 * Fetches the proof: bounded in time and size, and no redirect followed (a redirect could lead to a
 * host the app does not control, or into the server's own network).
 */
export async function fetchProof(url: URL, timeoutMs = PROOF_TIMEOUT_MS): Promise<string> {
  let res: Response;
  try {
    res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs), headers: { accept: 'text/plain' } });
  } catch (e) {
    const why = (e as Error).name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : ((e as { cause?: Error }).cause?.message ?? (e as Error).message);
    throw new ProofFailed(`could not fetch ${url.href}: ${why}`);
  }
  if (res.status >= 300 && res.status < 400) {
    await res.body?.cancel();
    throw new ProofFailed(`${url.href} answered a redirect (${res.status}); serve the key there directly`);
  }
  if (res.status !== 200) {
    await res.body?.cancel();
    throw new ProofFailed(`${url.href} answered HTTP ${res.status}`);
  }
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = res.body?.getReader();
  if (reader) {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > PROOF_MAX_BYTES) {
        await reader.cancel();
        throw new ProofFailed(`${url.href} answered more than ${PROOF_MAX_BYTES} bytes; serve only the key`);
      }
      chunks.push(value);
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}
