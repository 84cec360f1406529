import { execFileSync } from 'node:child_process';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** What a fake answers to one request. */
export interface FakeAnswer {
  readonly status: number;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

/**
 * What a fake received, and a way to wait for it: `until` re-checks at each request recorded, with a
 * deadline (no sleeps). Answers are scripted: one-shot answers queued with `next`, answers per device
 * token in `byToken`, else the success the real service gives.
 */
export class Recorder<R> {
  readonly received: R[] = [];
  /** Requests the fake refused because a real service would have (bad auth, bad headers): a test expecting none asserts it is empty. */
  readonly bad: string[] = [];
  readonly byToken = new Map<string, FakeAnswer>();
  /** Requests accepted and recorded so far (also counted when `keep` is off). */
  count = 0;
  /** Off in benchmarks: requests are counted, not kept. */
  keep = true;
  readonly #queue: FakeAnswer[] = [];
  #waiters: Array<() => void> = [];

  /** The next request (whatever its token) gets this answer. */
  next(...answers: FakeAnswer[]): void {
    this.#queue.push(...answers);
  }

  protected scripted(token: string): FakeAnswer | undefined {
    return this.#queue.shift() ?? this.byToken.get(token);
  }

  protected record(r: R): void {
    this.count++;
    if (this.keep) this.received.push(r);
    this.notify();
  }

  protected refuse(why: string): void {
    this.bad.push(why);
    this.notify();
  }

  protected notify(): void {
    for (const w of this.#waiters.splice(0)) w();
  }

  async until(check: () => boolean, what: string, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!check()) {
      if (Date.now() > deadline) throw new Error(`push fake: timed out waiting for ${what} (${this.received.length} received, bad: ${this.bad.join('; ') || 'none'})`);
      await new Promise<void>((r) => {
        this.#waiters.push(r);
        setTimeout(r, Math.max(0, deadline - Date.now()) + 1).unref();
      });
    }
  }
}

/** A throwaway Google service-account JSON (the fields FCM's auth uses) with a fresh RSA key. */
export function makeServiceAccount(dir: string, tokenUri: string, projectId = 'presenced-test'): { file: string; publicKey: KeyObject; clientEmail: string; projectId: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const clientEmail = `firebase-adminsdk-test@${projectId}.iam.gserviceaccount.com`;
  const file = join(dir, 'service-account.json');
  writeFileSync(
    file,
    JSON.stringify({
      type: 'service_account',
      project_id: projectId,
      private_key_id: 'f00dfeed',
      private_key: privateKey.export({ type: 'pkcs8', format: 'pem' }),
      client_email: clientEmail,
      client_id: '1234567890',
      auth_uri: 'https://accounts.google.com/o/oauth2/auth',
      token_uri: tokenUri,
    }),
    { mode: 0o600 },
  );
  return { file, publicKey, clientEmail, projectId };
}

/** A throwaway APNs auth key: EC P-256 in PKCS#8 PEM, as Apple's .p8 files are. */
export function makeP8(dir: string, name = 'AuthKey_TESTKEY123.p8'): { file: string; publicKey: KeyObject } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const file = join(dir, name);
  writeFileSync(file, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  return { file, publicKey };
}

/** A self-signed certificate for 127.0.0.1 and localhost (openssl), for the TLS fakes. */
export function makeTlsCert(dir: string): { key: string; cert: string; certFile: string } {
  const keyFile = join(dir, 'tls-key.pem');
  const certFile = join(dir, 'tls-cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-sha256', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '2', '-keyout', keyFile, '-out', certFile], { stdio: 'ignore' });
  return { key: readFileSync(keyFile, 'utf8'), cert: readFileSync(certFile, 'utf8'), certFile };
}
