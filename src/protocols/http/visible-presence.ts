import type { AccountPresence } from '../../core/presence.js';
import { domainOf } from '../../core/jid.js';
import type { PresenceEngine } from '../../engine/engine.js';
import { bareOrNull, type Requester } from './requester.js';

const MAX_CACHED_INPUT = 256;
const MAX_CACHE = 10_000;

/**
 * Resolves "what may this requester see of this (raw, user-typed) JID" for the HTTP endpoints.
 * Returns null for everything that must look the same from outside: not allowed, unknown account,
 * remote domain, malformed JID.
 */
export class PresenceLookup {
  // Parsing a JID (Unicode normalisation, per-character checks) costs more than the rest of a cached
  // lookup; the same few hundred JIDs are asked for again and again by the pages that embed them. The
  // cache holds only the pure function's results (input → normalised local JID or null), nothing
  // about accounts, so it can neither leak nor go stale.
  private readonly parsed = new Map<string, string | null>();

  constructor(private readonly engine: PresenceEngine) {}

  /** The normalised JID of an account on a domain served here, or null. */
  target(raw: string): string | null {
    const hit = this.parsed.get(raw);
    if (hit !== undefined) return hit;
    const bare = bareOrNull(raw);
    const local = bare !== null && this.engine.isLocalDomain(domainOf(bare)) ? bare : null;
    if (raw.length <= MAX_CACHED_INPUT) {
      if (this.parsed.size >= MAX_CACHE) this.parsed.clear();
      this.parsed.set(raw, local);
    }
    return local;
  }

  presence(requester: Requester, target: string | null): AccountPresence | null | Promise<AccountPresence | null> {
    if (target === null) return null;
    // The operator sees every account: asked as the account itself, which the visibility rule always
    // allows, and which still answers null for an account that does not exist.
    if (requester.kind === 'admin') return this.engine.visiblePresence(target, target);
    return this.engine.visiblePresence(requester.kind === 'account' ? requester.jid : null, target);
  }
}
