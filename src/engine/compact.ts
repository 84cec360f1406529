import type { SubState } from '../core/subscription-state.js';

/**
 * Rosters of online accounts live in memory, and in a typical deployment every JID appears in many of
 * them. Sharing the strings and the (few) distinct subscription states between items cuts the memory
 * of a cached roster by more than half; it is what keeps the cost of an idle session low.
 */
const POOL_LIMIT = 200_000;
const jids = new Map<string, string>();
const states = new Map<number, SubState>();

export function internJid(jid: string): string {
  const known = jids.get(jid);
  if (known !== undefined) return known;
  // A crude bound: forgetting the pool only costs sharing, never correctness.
  if (jids.size >= POOL_LIMIT) jids.clear();
  jids.set(jid, jid);
  return jid;
}

export function sharedState(s: SubState): SubState {
  const key = (+s.to) | (+s.from << 1) | (+s.pendingOut << 2) | (+s.pendingIn << 3) | (+s.preApproved << 4);
  let shared = states.get(key);
  if (!shared) {
    shared = Object.freeze({ to: s.to, from: s.from, pendingOut: s.pendingOut, pendingIn: s.pendingIn, preApproved: s.preApproved });
    states.set(key, shared);
  }
  return shared;
}
