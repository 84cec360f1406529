/**
 * The RFC 6121 subscription state of one roster item, seen from the item's owner.
 *
 * `to`: the owner receives the contact's presence. `from`: the contact receives the owner's presence.
 * `pendingOut`: the owner asked for the contact's presence and awaits an answer (only when !to).
 * `pendingIn`: the contact asked for the owner's presence and awaits the owner's answer (only when !from).
 * `preApproved`: the owner approved in advance a request the contact has not made yet (RFC 6121 §3.4),
 * only meaningful when !from.
 */
export interface SubState {
  readonly to: boolean;
  readonly from: boolean;
  readonly pendingOut: boolean;
  readonly pendingIn: boolean;
  readonly preApproved: boolean;
}

export const NONE: SubState = Object.freeze({
  to: false,
  from: false,
  pendingOut: false,
  pendingIn: false,
  preApproved: false,
});

/** The `subscription` attribute value of RFC 6121 roster items. */
export type SubscriptionName = 'none' | 'to' | 'from' | 'both';

export function subscriptionName(s: SubState): SubscriptionName {
  if (s.to && s.from) return 'both';
  if (s.to) return 'to';
  if (s.from) return 'from';
  return 'none';
}
