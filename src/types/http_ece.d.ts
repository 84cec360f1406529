// http_ece ships no types; this declares the part of its API the Web Push provider (and its test fake) use.
declare module 'http_ece' {
  import type { ECDH } from 'node:crypto';

  export interface EceParams {
    /** 'aes128gcm' (RFC 8188), the only version Web Push (RFC 8291) uses here. */
    version?: 'aes128gcm' | 'aesgcm' | 'aesgcm128';
    /** Record size. */
    rs?: number;
    /** 16 bytes; random when absent on encrypt, read from the header on decrypt (aes128gcm). */
    salt?: Buffer | string;
    /** The local key pair for the ECDH agreement (sender's on encrypt, receiver's on decrypt). */
    privateKey?: ECDH;
    /** The peer's public key (the user agent's p256dh on encrypt). Buffer or base64url. */
    dh?: Buffer | string;
    /** The 16-byte auth secret. Buffer or base64url. */
    authSecret?: Buffer | string;
    /** An explicit content-encryption key instead of ECDH. */
    key?: Buffer | string;
    keyid?: Buffer | string;
    /** Padding bytes to add. */
    pad?: number;
  }

  export function encrypt(buffer: Buffer, params: EceParams): Buffer;
  export function decrypt(buffer: Buffer, params: EceParams): Buffer;

  const ece: { encrypt: typeof encrypt; decrypt: typeof decrypt };
  export default ece;
}
