import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';

export interface CertificateFiles {
  readonly cert: string;
  readonly key: string;
  /** The certificate was generated now (first start without a configured one). */
  readonly generated: boolean;
}

/**
 * The configured certificate, or a self-signed one made once in the data directory and reused, so a
 * fresh install speaks TLS at once and clients only need to accept (or pin) it once. Node has no
 * certificate generator, hence openssl.
 */
export function certificateFiles(opts: { certPath: string; keyPath: string; dataDir: string; domains: readonly string[] }): CertificateFiles {
  if (opts.certPath !== '' || opts.keyPath !== '') {
    if (opts.certPath === '' || opts.keyPath === '') throw new Error('tls_cert and tls_key must be set together');
    return { cert: opts.certPath, key: opts.keyPath, generated: false };
  }
  const dir = join(opts.dataDir, 'tls');
  const cert = join(dir, 'self-signed.crt');
  const key = join(dir, 'self-signed.key');
  if (existsSync(cert) && existsSync(key)) return { cert, key, generated: false };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const first = opts.domains[0] ?? 'localhost';
  const san = opts.domains.map((d) => `DNS:${d}`).join(',');
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '3650', '-subj', `/CN=${first}`, '-addext', `subjectAltName=${san}`],
    { stdio: 'ignore' },
  );
  return { cert, key, generated: true };
}

export interface TlsMaterial {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** For STARTTLS, where a plain socket is wrapped after the fact. */
  readonly context: SecureContext;
}

export function loadTls(files: CertificateFiles): TlsMaterial {
  const cert = readFileSync(files.cert);
  const key = readFileSync(files.key);
  return { cert, key, context: createSecureContext({ cert, key, minVersion: 'TLSv1.2' }) };
}
