import type { SubState } from './subscription-state.js';

/**
 * The single rule deciding whether `viewer` may see `target`'s presence. Every front door (native
 * protocol, XMPP, HTTP status endpoint, apps) calls this function and nothing else, so the rule cannot
 * differ between doors.
 */
export interface VisibilityFacts {
  /** The bare JID of whoever asks, or null for an anonymous (unproven) requester. */
  readonly viewer: string | null;
  readonly target: string;
  /** target's roster item for viewer, if any (its `from` flag means viewer is subscribed to target). */
  readonly targetItemForViewer: SubState | undefined;
  /** target has blocked viewer (XEP-0191). */
  readonly targetBlocksViewer: boolean;
  /** viewer has blocked target: viewer asked not to receive anything from target. */
  readonly viewerBlocksTarget: boolean;
  /** target opted in to showing its presence to anyone, including anonymous requesters. */
  readonly targetPublic: boolean;
}

export function canSeePresence(f: VisibilityFacts): boolean {
  if (f.viewer !== null && f.viewer === f.target) return true;
  // Blocking wins over subscriptions and over public visibility alike.
  if (f.viewer !== null && (f.targetBlocksViewer || f.viewerBlocksTarget)) return false;
  if (f.targetItemForViewer?.from === true && f.viewer !== null) return true;
  return f.targetPublic;
}
