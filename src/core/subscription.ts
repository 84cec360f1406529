/**
 * The RFC 6121 presence subscription state machine (§3 and Appendix A), with pre-approval (§3.4).
 *
 * Each function is written as the rule the RFC's tables encode rather than as the tables themselves,
 * so it also behaves sensibly on a pre-approved state (which the tables do not list); the unit tests
 * hold the literal tables and check every cell against these rules.
 *
 * Invariants every function keeps (they are what makes the nine RFC states the only ones):
 *   - never `to && pendingOut`: once subscribed there is nothing left to wait for;
 *   - never `from && pendingIn`: once approved there is nothing left to answer;
 *   - never `from && preApproved`: a pre-approval is spent the moment it turns into `from`.
 */
import { stanzaAllowed } from './blocking.js';
import { PresenceError } from './errors.js';
import { NONE, type SubState } from './subscription-state.js';

export type SubType = 'subscribe' | 'subscribed' | 'unsubscribe' | 'unsubscribed';

export interface OutboundResult {
  readonly state: SubState;
  readonly changed: boolean;
  /** The stanza goes on to the contact. */
  readonly route: boolean;
}

export interface InboundResult {
  readonly state: SubState;
  readonly changed: boolean;
  /** The stanza is shown to the owner's clients. */
  readonly deliver: boolean;
  /** The owner's server answers on the owner's behalf (RFC 6121 §3.1.3). */
  readonly autoReply: 'subscribed' | null;
}

export interface ExchangeResult {
  readonly sender: SubState;
  readonly recipient: SubState;
  readonly senderChanged: boolean;
  readonly recipientChanged: boolean;
  /** The recipient's clients should be shown this stanza (e.g. a subscription request). */
  readonly deliverToRecipient: boolean;
  /** The recipient's server approved a subscribe on its own (existing `from`, or pre-approval). */
  readonly autoReplied: boolean;
}

function make(s: SubState, patch: Partial<SubState>): SubState {
  return Object.freeze({
    to: patch.to ?? s.to,
    from: patch.from ?? s.from,
    pendingOut: patch.pendingOut ?? s.pendingOut,
    pendingIn: patch.pendingIn ?? s.pendingIn,
    preApproved: patch.preApproved ?? s.preApproved,
  });
}

export function sameState(a: SubState, b: SubState): boolean {
  return a.to === b.to && a.from === b.from && a.pendingOut === b.pendingOut && a.pendingIn === b.pendingIn && a.preApproved === b.preApproved;
}

/** True when `s` respects the three invariants above. */
export function isConsistent(s: SubState): boolean {
  return !(s.to && s.pendingOut) && !(s.from && s.pendingIn) && !(s.from && s.preApproved);
}

function outbound(state: SubState, next: SubState, route: boolean): OutboundResult {
  return { state: next, changed: !sameState(state, next), route };
}

function inbound(state: SubState, next: SubState, deliver: boolean, autoReply: 'subscribed' | null = null): InboundResult {
  return { state: next, changed: !sameState(state, next), deliver, autoReply };
}

/**
 * The owner's server handling a subscription stanza the owner sends to the contact (RFC 6121 A.2).
 *
 * Routing choices:
 *   - subscribe and unsubscribe are always routed, even when they change nothing here (§3.1.2,
 *     §3.3.2): the contact's server may hold a state that has drifted from ours, and a resend is
 *     how the two are brought back in line.
 *   - subscribed is routed only when it answers a pending request (A.2.3). Otherwise it is either a
 *     duplicate (no route) or, when nothing is pending and there is no `from` yet, a pre-approval
 *     (§3.4.2), which stays on this server until the contact actually asks.
 *   - unsubscribed is routed only when it cancels `from` or denies a pending request (A.2.4). In the
 *     other states the table says "no route"; its footnote notes it may cancel a pre-approval, which
 *     is all it does then.
 */
export function applyOutbound(state: SubState, type: SubType): OutboundResult {
  switch (type) {
    case 'subscribe':
      // A.2.1: start waiting unless already subscribed.
      return outbound(state, state.to ? state : make(state, { pendingOut: true }), true);
    case 'unsubscribe':
      // A.2.2: drops `to` and any request still waiting for an answer.
      return outbound(state, make(state, { to: false, pendingOut: false }), true);
    case 'subscribed':
      if (state.pendingIn) {
        // A.2.3: approve the waiting request.
        return outbound(state, make(state, { from: true, pendingIn: false, preApproved: false }), true);
      }
      if (state.from) return outbound(state, state, false);
      // §3.4.2: approve in advance.
      return outbound(state, make(state, { preApproved: true }), false);
    case 'unsubscribed':
      if (state.from || state.pendingIn) {
        // A.2.4: revoke `from`, or deny the waiting request.
        return outbound(state, make(state, { from: false, pendingIn: false, preApproved: false }), true);
      }
      return outbound(state, make(state, { preApproved: false }), false);
  }
}

/**
 * The owner's server handling a subscription stanza the contact sent to the owner (RFC 6121 A.3).
 * Stanzas that change nothing are not delivered: the owner's clients already show that state, and a
 * contact re-sending requests must not be able to spam the owner with them.
 */
export function applyInbound(state: SubState, type: SubType): InboundResult {
  switch (type) {
    case 'subscribe':
      // §3.1.3: if the contact is already approved, the server answers for the owner so the contact's
      // side can recover a lost `to`, without bothering the owner again.
      if (state.from) return inbound(state, state, false, 'subscribed');
      // §3.1.3 with §3.4: a pre-approval is consumed by the first request it meets.
      if (state.preApproved) return inbound(state, make(state, { from: true, pendingIn: false, preApproved: false }), false, 'subscribed');
      if (state.pendingIn) return inbound(state, state, false);
      return inbound(state, make(state, { pendingIn: true }), true);
    case 'unsubscribe':
      // A.3.2: the contact withdraws its subscription, or its request still waiting.
      if (state.from || state.pendingIn) return inbound(state, make(state, { from: false, pendingIn: false }), true);
      return inbound(state, state, false);
    case 'subscribed':
      // A.3.3: only an approval we asked for counts; an unsolicited one is ignored.
      if (state.pendingOut) return inbound(state, make(state, { to: true, pendingOut: false }), true);
      return inbound(state, state, false);
    case 'unsubscribed':
      // A.3.4: the contact revoked `to`, or denied our request.
      if (state.to || state.pendingOut) return inbound(state, make(state, { to: false, pendingOut: false }), true);
      return inbound(state, state, false);
  }
}

/**
 * A subscription stanza between two accounts that both live on this server: the sender's side
 * (A.2), then the recipient's side (A.3), then the recipient's auto-reply back to the sender.
 * `sender` is the sender's roster item for the recipient and `recipient` the recipient's item for
 * the sender; undefined means no item, which RFC 6121 treats as "None".
 *
 * Blocking (XEP-0191): a stanza to someone the sender blocks is refused outright; a
 * stanza from someone the recipient blocks is dropped without telling the sender, so the sender's
 * side changes as it would for a contact who never answers.
 */
export function exchange(params: {
  sender: SubState | undefined;
  recipient: SubState | undefined;
  type: SubType;
  senderBlocksRecipient: boolean;
  recipientBlocksSender: boolean;
}): ExchangeResult {
  const senderBefore = params.sender ?? NONE;
  const recipientBefore = params.recipient ?? NONE;
  const blocking = stanzaAllowed(params.senderBlocksRecipient, params.recipientBlocksSender);
  if (blocking === 'reject') {
    throw new PresenceError('not-allowed', 'you block this contact; unblock it before sending it subscription requests or answers');
  }

  const out = applyOutbound(senderBefore, params.type);
  let sender = out.state;
  let recipient = recipientBefore;
  let deliverToRecipient = false;
  let autoReplied = false;

  if (out.route && blocking === 'deliver') {
    const inb = applyInbound(recipientBefore, params.type);
    recipient = inb.state;
    deliverToRecipient = inb.deliver;
    if (inb.autoReply === 'subscribed') {
      autoReplied = true;
      sender = applyInbound(sender, 'subscribed').state;
    }
  }

  return {
    sender,
    recipient,
    senderChanged: !sameState(senderBefore, sender),
    recipientChanged: !sameState(recipientBefore, recipient),
    deliverToRecipient,
    autoReplied,
  };
}

/**
 * A readable, stable name for a state: 'none', 'none+pending-out', 'none+pending-in',
 * 'none+pending-out+in', 'to', 'to+pending-in', 'from', 'from+pending-out', 'both', with
 * '+pre-approved' appended when set. Safe for storage: fromStateKey() reads it back.
 */
export function stateKey(s: SubState): string {
  let key: string = s.to && s.from ? 'both' : s.to ? 'to' : s.from ? 'from' : 'none';
  if (s.pendingOut && s.pendingIn) key += '+pending-out+in';
  else if (s.pendingOut) key += '+pending-out';
  else if (s.pendingIn) key += '+pending-in';
  if (s.preApproved) key += '+pre-approved';
  return key;
}

const BASE_STATES: Readonly<Record<string, SubState>> = (() => {
  const f = (to: boolean, from: boolean, pendingOut: boolean, pendingIn: boolean): SubState =>
    Object.freeze({ to, from, pendingOut, pendingIn, preApproved: false });
  return {
    none: f(false, false, false, false),
    'none+pending-out': f(false, false, true, false),
    'none+pending-in': f(false, false, false, true),
    'none+pending-out+in': f(false, false, true, true),
    to: f(true, false, false, false),
    'to+pending-in': f(true, false, false, true),
    from: f(false, true, false, false),
    'from+pending-out': f(false, true, true, false),
    both: f(true, true, false, false),
  };
})();

/** The nine RFC 6121 states (without pre-approval), in the order the RFC's tables list them. */
export const RFC_STATE_KEYS: readonly string[] = Object.freeze(Object.keys(BASE_STATES));

/** Inverse of stateKey(). Throws PresenceError('bad-request') on a key that names no valid state. */
export function fromStateKey(key: string): SubState {
  const pre = key.endsWith('+pre-approved');
  const baseKey = pre ? key.slice(0, -'+pre-approved'.length) : key;
  const base = Object.hasOwn(BASE_STATES, baseKey) ? BASE_STATES[baseKey] : undefined;
  if (base === undefined) throw new PresenceError('bad-request', `unknown subscription state "${key}"`);
  if (!pre) return base;
  if (base.from) throw new PresenceError('bad-request', `subscription state "${key}" is impossible: a pre-approval ends once "from" is granted`);
  return make(base, { preApproved: true });
}
