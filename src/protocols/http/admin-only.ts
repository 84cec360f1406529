import { timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { PresenceError } from '../../core/errors.js';
import type { PresenceEngine } from '../../engine/engine.js';

/**
 * An `onRequest` hook for routes only the operator may call (a feature's admin routes): the admin
 * bearer token, compared in constant time, with failures counted by the login throttle like every
 * other credential.
 */
export function adminOnlyHook(engine: PresenceEngine, adminToken: string): (req: FastifyRequest) => Promise<void> {
  const expected = Buffer.from(`Bearer ${adminToken}`);
  return async (req) => {
    if (adminToken === '') throw new PresenceError('not-allowed', 'the admin API is disabled: set PRESENCED_ADMIN_TOKEN (admin_token) to enable it');
    engine.loginThrottle.check('http', null, req.ip);
    const given = Buffer.from(req.headers.authorization ?? '');
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      engine.loginThrottle.failed(null, req.ip);
      throw new PresenceError('auth-failed', 'missing or wrong admin bearer token');
    }
  };
}
