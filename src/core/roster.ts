import type { SubState } from './subscription-state.js';

export interface RosterItem {
  /** Bare JID of the roster's owner. */
  readonly owner: string;
  /** Bare JID of the contact. */
  readonly contact: string;
  readonly name: string | null;
  readonly groups: readonly string[];
  readonly state: SubState;
}

export const MAX_ROSTER_NAME = 256;
export const MAX_GROUPS = 32;
export const MAX_GROUP_NAME = 256;
