import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PresenceError } from '../../src/core/errors.js';
import { NONE, type SubState } from '../../src/core/subscription-state.js';
import {
  applyInbound,
  applyOutbound,
  exchange,
  fromStateKey,
  isConsistent,
  RFC_STATE_KEYS,
  stateKey,
  type SubType,
} from '../../src/core/subscription.js';

// The states spelled out flag by flag, independently of fromStateKey(), so that a mistake there
// cannot hide a mistake in the transitions.
const S = (to: boolean, from: boolean, pendingOut: boolean, pendingIn: boolean, preApproved = false): SubState => ({
  to,
  from,
  pendingOut,
  pendingIn,
  preApproved,
});
const STATES: Record<string, SubState> = {
  none: S(false, false, false, false),
  'none+pending-out': S(false, false, true, false),
  'none+pending-in': S(false, false, false, true),
  'none+pending-out+in': S(false, false, true, true),
  to: S(true, false, false, false),
  'to+pending-in': S(true, false, false, true),
  from: S(false, true, false, false),
  'from+pending-out': S(false, true, true, false),
  both: S(true, true, false, false),
  'none+pre-approved': S(false, false, false, false, true),
  'none+pending-out+pre-approved': S(false, false, true, false, true),
  'to+pre-approved': S(true, false, false, false, true),
};
const RFC_NINE = ['none', 'none+pending-out', 'none+pending-in', 'none+pending-out+in', 'to', 'to+pending-in', 'from', 'from+pending-out', 'both'];
const TYPES: SubType[] = ['subscribe', 'subscribed', 'unsubscribe', 'unsubscribed'];

function st(key: string): SubState {
  const s = STATES[key];
  if (!s) throw new Error(`test bug: no state ${key}`);
  return s;
}

function plain(s: SubState): SubState {
  return { to: s.to, from: s.from, pendingOut: s.pendingOut, pendingIn: s.pendingIn, preApproved: s.preApproved };
}

// [existing state, new state, route?]
type OutRow = readonly [string, string, boolean];
// [existing state, new state, deliver?, auto-reply 'subscribed'?]
type InRow = readonly [string, string, boolean, boolean];

/** RFC 6121 Appendix A.2: the user's server processing stanzas the user sends. */
const OUTBOUND: Record<SubType, readonly OutRow[]> = {
  // A.2.1 (routed in every state, §3.1.2)
  subscribe: [
    ['none', 'none+pending-out', true],
    ['none+pending-out', 'none+pending-out', true],
    ['none+pending-in', 'none+pending-out+in', true],
    ['none+pending-out+in', 'none+pending-out+in', true],
    ['to', 'to', true],
    ['to+pending-in', 'to+pending-in', true],
    ['from', 'from+pending-out', true],
    ['from+pending-out', 'from+pending-out', true],
    ['both', 'both', true],
  ],
  // A.2.2 (routed in every state, §3.3.2)
  unsubscribe: [
    ['none', 'none', true],
    ['none+pending-out', 'none', true],
    ['none+pending-in', 'none+pending-in', true],
    ['none+pending-out+in', 'none+pending-in', true],
    ['to', 'none', true],
    ['to+pending-in', 'none+pending-in', true],
    ['from', 'from', true],
    ['from+pending-out', 'from', true],
    ['both', 'from', true],
  ],
  // A.2.3, with the "[pre-approval]" cells of §3.4
  subscribed: [
    ['none', 'none+pre-approved', false],
    ['none+pending-out', 'none+pending-out+pre-approved', false],
    ['none+pending-in', 'from', true],
    ['none+pending-out+in', 'from+pending-out', true],
    ['to', 'to+pre-approved', false],
    ['to+pending-in', 'both', true],
    ['from', 'from', false],
    ['from+pending-out', 'from+pending-out', false],
    ['both', 'both', false],
  ],
  // A.2.4
  unsubscribed: [
    ['none', 'none', false],
    ['none+pending-out', 'none+pending-out', false],
    ['none+pending-in', 'none', true],
    ['none+pending-out+in', 'none+pending-out', true],
    ['to', 'to', false],
    ['to+pending-in', 'to', true],
    ['from', 'none', true],
    ['from+pending-out', 'none+pending-out', true],
    ['both', 'to', true],
  ],
};

/** RFC 6121 Appendix A.3: the contact's server processing stanzas addressed to the contact. */
const INBOUND: Record<SubType, readonly InRow[]> = {
  // A.3.1 (the "no *" cells: auto-reply subscribed, §3.1.3)
  subscribe: [
    ['none', 'none+pending-in', true, false],
    ['none+pending-out', 'none+pending-out+in', true, false],
    ['none+pending-in', 'none+pending-in', false, false],
    ['none+pending-out+in', 'none+pending-out+in', false, false],
    ['to', 'to+pending-in', true, false],
    ['to+pending-in', 'to+pending-in', false, false],
    ['from', 'from', false, true],
    ['from+pending-out', 'from+pending-out', false, true],
    ['both', 'both', false, true],
  ],
  // A.3.2
  unsubscribe: [
    ['none', 'none', false, false],
    ['none+pending-out', 'none+pending-out', false, false],
    ['none+pending-in', 'none', true, false],
    ['none+pending-out+in', 'none+pending-out', true, false],
    ['to', 'to', false, false],
    ['to+pending-in', 'to', true, false],
    ['from', 'none', true, false],
    ['from+pending-out', 'none+pending-out', true, false],
    ['both', 'to', true, false],
  ],
  // A.3.3
  subscribed: [
    ['none', 'none', false, false],
    ['none+pending-out', 'to', true, false],
    ['none+pending-in', 'none+pending-in', false, false],
    ['none+pending-out+in', 'to+pending-in', true, false],
    ['to', 'to', false, false],
    ['to+pending-in', 'to+pending-in', false, false],
    ['from', 'from', false, false],
    ['from+pending-out', 'both', true, false],
    ['both', 'both', false, false],
  ],
  // A.3.4
  unsubscribed: [
    ['none', 'none', false, false],
    ['none+pending-out', 'none', true, false],
    ['none+pending-in', 'none+pending-in', false, false],
    ['none+pending-out+in', 'none+pending-in', true, false],
    ['to', 'none', true, false],
    ['to+pending-in', 'none+pending-in', true, false],
    ['from', 'from', false, false],
    ['from+pending-out', 'from', true, false],
    ['both', 'from', true, false],
  ],
};

/** Pre-approved states (§3.4): the three reachable ones, for every stanza in both directions. */
const OUTBOUND_PRE: Record<SubType, readonly OutRow[]> = {
  subscribe: [
    ['none+pre-approved', 'none+pending-out+pre-approved', true],
    ['none+pending-out+pre-approved', 'none+pending-out+pre-approved', true],
    ['to+pre-approved', 'to+pre-approved', true],
  ],
  unsubscribe: [
    ['none+pre-approved', 'none+pre-approved', true],
    ['none+pending-out+pre-approved', 'none+pre-approved', true],
    ['to+pre-approved', 'none+pre-approved', true],
  ],
  subscribed: [
    ['none+pre-approved', 'none+pre-approved', false],
    ['none+pending-out+pre-approved', 'none+pending-out+pre-approved', false],
    ['to+pre-approved', 'to+pre-approved', false],
  ],
  // Cancels the pre-approval (A.2.4 footnote), without routing anything.
  unsubscribed: [
    ['none+pre-approved', 'none', false],
    ['none+pending-out+pre-approved', 'none+pending-out', false],
    ['to+pre-approved', 'to', false],
  ],
};
const INBOUND_PRE: Record<SubType, readonly InRow[]> = {
  // §3.1.3: the request is approved on the owner's behalf and the pre-approval is spent.
  subscribe: [
    ['none+pre-approved', 'from', false, true],
    ['none+pending-out+pre-approved', 'from+pending-out', false, true],
    ['to+pre-approved', 'both', false, true],
  ],
  unsubscribe: [
    ['none+pre-approved', 'none+pre-approved', false, false],
    ['none+pending-out+pre-approved', 'none+pending-out+pre-approved', false, false],
    ['to+pre-approved', 'to+pre-approved', false, false],
  ],
  subscribed: [
    ['none+pre-approved', 'none+pre-approved', false, false],
    ['none+pending-out+pre-approved', 'to+pre-approved', true, false],
    ['to+pre-approved', 'to+pre-approved', false, false],
  ],
  unsubscribed: [
    ['none+pre-approved', 'none+pre-approved', false, false],
    ['none+pending-out+pre-approved', 'none+pre-approved', true, false],
    ['to+pre-approved', 'none+pre-approved', true, false],
  ],
};

function checkOutboundTable(table: Record<SubType, readonly OutRow[]>): void {
  for (const type of TYPES) {
    for (const [from, to, route] of table[type]) {
      it(`outbound ${type} in ${from} → ${to}, route=${route}`, () => {
        const r = applyOutbound(st(from), type);
        assert.deepEqual(plain(r.state), st(to));
        assert.equal(r.route, route);
        assert.equal(r.changed, from !== to);
      });
    }
  }
}

function checkInboundTable(table: Record<SubType, readonly InRow[]>): void {
  for (const type of TYPES) {
    for (const [from, to, deliver, autoReply] of table[type]) {
      it(`inbound ${type} in ${from} → ${to}, deliver=${deliver}${autoReply ? ', auto-reply subscribed' : ''}`, () => {
        const r = applyInbound(st(from), type);
        assert.deepEqual(plain(r.state), st(to));
        assert.equal(r.deliver, deliver);
        assert.equal(r.autoReply, autoReply ? 'subscribed' : null);
        assert.equal(r.changed, from !== to);
      });
    }
  }
}

describe('the literal tables cover every case', () => {
  it('9 states × 4 types in each direction, 3 pre-approved states × 4 types in each direction', () => {
    for (const t of [OUTBOUND, INBOUND]) {
      for (const type of TYPES) assert.deepEqual(t[type].map((r) => r[0]), RFC_NINE);
    }
    for (const t of [OUTBOUND_PRE, INBOUND_PRE]) {
      for (const type of TYPES) assert.deepEqual(t[type].map((r) => r[0]), ['none+pre-approved', 'none+pending-out+pre-approved', 'to+pre-approved']);
    }
  });
});

describe('RFC 6121 A.2: outbound', () => checkOutboundTable(OUTBOUND));
describe('RFC 6121 A.3: inbound', () => checkInboundTable(INBOUND));
describe('RFC 6121 §3.4: outbound with a pre-approval', () => checkOutboundTable(OUTBOUND_PRE));
describe('RFC 6121 §3.4: inbound with a pre-approval', () => checkInboundTable(INBOUND_PRE));

describe('results', () => {
  it('never mutate the input and are frozen', () => {
    const input = { ...st('none+pending-in') };
    const r = applyOutbound(input, 'subscribed');
    assert.deepEqual(input, st('none+pending-in'));
    assert.ok(Object.isFrozen(r.state));
    const r2 = applyInbound(input, 'unsubscribe');
    assert.deepEqual(input, st('none+pending-in'));
    assert.ok(Object.isFrozen(r2.state));
  });
});

describe('stateKey / fromStateKey', () => {
  it('name every state as documented and read the names back', () => {
    for (const [key, s] of Object.entries(STATES)) {
      assert.equal(stateKey(s), key);
      assert.deepEqual(plain(fromStateKey(key)), s);
    }
  });

  it('RFC_STATE_KEYS lists the nine RFC states in table order', () => {
    assert.deepEqual([...RFC_STATE_KEYS], RFC_NINE);
  });

  it('accept pre-approval on every state without from', () => {
    assert.deepEqual(plain(fromStateKey('none+pending-in+pre-approved')), S(false, false, false, true, true));
    assert.deepEqual(plain(fromStateKey('to+pending-in+pre-approved')), S(true, false, false, true, true));
    assert.deepEqual(plain(fromStateKey('none+pending-out+in+pre-approved')), S(false, false, true, true, true));
  });

  it('throw on unknown or impossible keys', () => {
    for (const bad of ['', 'NONE', 'to+pending-out', 'both+pending-in', 'from+pre-approved', 'both+pre-approved', 'from+pending-out+pre-approved', 'none+pre-approved+pre-approved', 'constructor', '__proto__', 'toString']) {
      assert.throws(() => fromStateKey(bad), (e: unknown) => e instanceof PresenceError && e.code === 'bad-request', bad);
    }
  });
});

/** Every state reachable from NONE through any sequence of stanzas, in either direction. */
function reachable(): Map<string, SubState> {
  const seen = new Map<string, SubState>([[stateKey(NONE), NONE]]);
  const queue: SubState[] = [NONE];
  for (let s = queue.shift(); s !== undefined; s = queue.shift()) {
    for (const type of TYPES) {
      for (const next of [applyOutbound(s, type).state, applyInbound(s, type).state]) {
        const k = stateKey(next);
        if (!seen.has(k)) {
          seen.set(k, next);
          queue.push(next);
        }
      }
    }
  }
  return seen;
}

describe('invariants', () => {
  it('the reachable states are exactly the nine RFC states plus three pre-approved ones', () => {
    assert.deepEqual([...reachable().keys()].sort(), Object.keys(STATES).sort());
  });

  it('hold in every reachable state, after every transition', () => {
    for (const s of reachable().values()) {
      assert.ok(isConsistent(s), stateKey(s));
      for (const type of TYPES) {
        for (const next of [applyOutbound(s, type).state, applyInbound(s, type).state]) {
          assert.ok(!(next.to && next.pendingOut), `to+pendingOut after ${type} from ${stateKey(s)}`);
          assert.ok(!(next.from && next.pendingIn), `from+pendingIn after ${type} from ${stateKey(s)}`);
          assert.ok(!(next.from && next.preApproved), `from+preApproved after ${type} from ${stateKey(s)}`);
        }
      }
    }
  });

  it('isConsistent rejects each broken combination', () => {
    assert.equal(isConsistent(S(true, false, true, false)), false);
    assert.equal(isConsistent(S(false, true, false, true)), false);
    assert.equal(isConsistent(S(false, true, false, false, true)), false);
    assert.equal(isConsistent(NONE), true);
  });

  it('exchange between two local accounts keeps both sides mirror images (A.to = B.from, A.pendingOut = B.pendingIn)', () => {
    // Explore every pair of states reachable by either side sending any stanza to the other.
    const key = (a: SubState, b: SubState): string => `${stateKey(a)}|${stateKey(b)}`;
    const seen = new Set<string>([key(NONE, NONE)]);
    const queue: Array<[SubState, SubState]> = [[NONE, NONE]];
    for (let pair = queue.shift(); pair !== undefined; pair = queue.shift()) {
      const [a, b] = pair;
      assert.equal(a.to, b.from, key(a, b));
      assert.equal(a.from, b.to, key(a, b));
      assert.equal(a.pendingOut, b.pendingIn, key(a, b));
      assert.equal(a.pendingIn, b.pendingOut, key(a, b));
      assert.ok(isConsistent(a) && isConsistent(b), key(a, b));
      for (const type of TYPES) {
        const ab = exchange({ sender: a, recipient: b, type, senderBlocksRecipient: false, recipientBlocksSender: false });
        const ba = exchange({ sender: b, recipient: a, type, senderBlocksRecipient: false, recipientBlocksSender: false });
        for (const [na, nb] of [
          [ab.sender, ab.recipient],
          [ba.recipient, ba.sender],
        ] as const) {
          const k = key(na, nb);
          if (!seen.has(k)) {
            seen.add(k);
            queue.push([na, nb]);
          }
        }
      }
    }
    // The nine mirrored RFC pairs, plus either side holding a pre-approval where one is possible.
    assert.deepEqual([...seen].sort(), [
      'both|both',
      'from+pending-out|to+pending-in',
      'from|to',
      'from|to+pre-approved',
      'none+pending-in|none+pending-out',
      'none+pending-in|none+pending-out+pre-approved',
      'none+pending-out+in|none+pending-out+in',
      'none+pending-out+pre-approved|none+pending-in',
      'none+pending-out|none+pending-in',
      'none+pre-approved|none',
      'none+pre-approved|none+pre-approved',
      'none|none',
      'none|none+pre-approved',
      'to+pending-in|from+pending-out',
      'to+pre-approved|from',
      'to|from',
    ]);
  });
});

/** Two local accounts and their roster items for each other. */
class Pair {
  a: SubState = NONE; // A's item for B
  b: SubState = NONE; // B's item for A
  blocksAB = false; // A blocks B
  blocksBA = false; // B blocks A

  send(who: 'A' | 'B', type: SubType) {
    const fromA = who === 'A';
    const r = exchange({
      sender: fromA ? this.a : this.b,
      recipient: fromA ? this.b : this.a,
      type,
      senderBlocksRecipient: fromA ? this.blocksAB : this.blocksBA,
      recipientBlocksSender: fromA ? this.blocksBA : this.blocksAB,
    });
    if (fromA) {
      this.a = r.sender;
      this.b = r.recipient;
    } else {
      this.b = r.sender;
      this.a = r.recipient;
    }
    return r;
  }

  keys(): [string, string] {
    return [stateKey(this.a), stateKey(this.b)];
  }
}

describe('exchange(): end-to-end flows between two local accounts', () => {
  it('A subscribes to B, B approves: A has to, B has from', () => {
    const p = new Pair();
    const r1 = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['none+pending-out', 'none+pending-in']);
    assert.deepEqual(
      { sc: r1.senderChanged, rc: r1.recipientChanged, d: r1.deliverToRecipient, ar: r1.autoReplied },
      { sc: true, rc: true, d: true, ar: false },
    );
    const r2 = p.send('B', 'subscribed');
    assert.deepEqual(p.keys(), ['to', 'from']);
    assert.deepEqual(
      { sc: r2.senderChanged, rc: r2.recipientChanged, d: r2.deliverToRecipient, ar: r2.autoReplied },
      { sc: true, rc: true, d: true, ar: false },
    );
  });

  it('a repeated request is routed but not shown again', () => {
    const p = new Pair();
    p.send('A', 'subscribe');
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['none+pending-out', 'none+pending-in']);
    assert.equal(r.senderChanged, false);
    assert.equal(r.recipientChanged, false);
    assert.equal(r.deliverToRecipient, false);
  });

  it('mutual subscription ends in both', () => {
    const p = new Pair();
    p.send('A', 'subscribe');
    p.send('B', 'subscribed');
    p.send('B', 'subscribe');
    assert.deepEqual(p.keys(), ['to+pending-in', 'from+pending-out']);
    p.send('A', 'subscribed');
    assert.deepEqual(p.keys(), ['both', 'both']);
  });

  it('crossed requests: both ask, then both approve', () => {
    const p = new Pair();
    p.send('A', 'subscribe');
    p.send('B', 'subscribe');
    assert.deepEqual(p.keys(), ['none+pending-out+in', 'none+pending-out+in']);
    p.send('A', 'subscribed');
    assert.deepEqual(p.keys(), ['from+pending-out', 'to+pending-in']);
    p.send('B', 'subscribed');
    assert.deepEqual(p.keys(), ['both', 'both']);
  });

  it('unsubscribe: A stops receiving B (both → from / to)', () => {
    const p = new Pair();
    p.a = st('both');
    p.b = st('both');
    const r = p.send('A', 'unsubscribe');
    assert.deepEqual(p.keys(), ['from', 'to']);
    assert.equal(r.deliverToRecipient, true);
    const again = p.send('A', 'unsubscribe');
    assert.deepEqual(p.keys(), ['from', 'to']);
    assert.equal(again.deliverToRecipient, false);
    assert.equal(again.senderChanged || again.recipientChanged, false);
  });

  it('unsubscribed: B cancels A\'s subscription', () => {
    const p = new Pair();
    p.a = st('to');
    p.b = st('from');
    const r = p.send('B', 'unsubscribed');
    assert.deepEqual(p.keys(), ['none', 'none']);
    assert.equal(r.deliverToRecipient, true);
    assert.equal(r.senderChanged && r.recipientChanged, true);
  });

  it('unsubscribed in both: only one direction ends', () => {
    const p = new Pair();
    p.a = st('both');
    p.b = st('both');
    p.send('B', 'unsubscribed');
    assert.deepEqual(p.keys(), ['from', 'to']);
  });

  it('deny: B refuses A\'s request', () => {
    const p = new Pair();
    p.send('A', 'subscribe');
    const r = p.send('B', 'unsubscribed');
    assert.deepEqual(p.keys(), ['none', 'none']);
    assert.equal(r.deliverToRecipient, true);
  });

  it('A withdraws its own request before B answers', () => {
    const p = new Pair();
    p.send('A', 'subscribe');
    const r = p.send('A', 'unsubscribe');
    assert.deepEqual(p.keys(), ['none', 'none']);
    assert.equal(r.deliverToRecipient, true);
  });

  it('pre-approval: B approves in advance, A\'s later request is accepted at once', () => {
    const p = new Pair();
    const pre = p.send('B', 'subscribed');
    assert.deepEqual(p.keys(), ['none', 'none+pre-approved']);
    assert.deepEqual(
      { sc: pre.senderChanged, rc: pre.recipientChanged, d: pre.deliverToRecipient, ar: pre.autoReplied },
      { sc: true, rc: false, d: false, ar: false },
    );
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['to', 'from']);
    assert.deepEqual(
      { sc: r.senderChanged, rc: r.recipientChanged, d: r.deliverToRecipient, ar: r.autoReplied },
      { sc: true, rc: true, d: false, ar: true },
    );
  });

  it('pre-approval can be cancelled with unsubscribed before it is used', () => {
    const p = new Pair();
    p.send('B', 'subscribed');
    const cancel = p.send('B', 'unsubscribed');
    assert.deepEqual(p.keys(), ['none', 'none']);
    assert.equal(cancel.senderChanged, true);
    assert.equal(cancel.recipientChanged, false);
    assert.equal(cancel.deliverToRecipient, false);
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['none+pending-out', 'none+pending-in']);
    assert.equal(r.autoReplied, false);
    assert.equal(r.deliverToRecipient, true);
  });

  it('re-subscribe when B already has from: auto-reply, A gets to back, B is not bothered', () => {
    const p = new Pair();
    p.a = NONE; // A lost its side (e.g. removed the item)
    p.b = st('from');
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['to', 'from']);
    assert.deepEqual(
      { sc: r.senderChanged, rc: r.recipientChanged, d: r.deliverToRecipient, ar: r.autoReplied },
      { sc: true, rc: false, d: false, ar: true },
    );
  });

  it('re-subscribe when already to on both sides changes nothing but still auto-replies', () => {
    const p = new Pair();
    p.a = st('to');
    p.b = st('from');
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['to', 'from']);
    assert.deepEqual(
      { sc: r.senderChanged, rc: r.recipientChanged, d: r.deliverToRecipient, ar: r.autoReplied },
      { sc: false, rc: false, d: false, ar: true },
    );
  });

  it('undefined items are treated as none', () => {
    const r = exchange({ sender: undefined, recipient: undefined, type: 'subscribe', senderBlocksRecipient: false, recipientBlocksSender: false });
    assert.equal(stateKey(r.sender), 'none+pending-out');
    assert.equal(stateKey(r.recipient), 'none+pending-in');
    const u = exchange({ sender: undefined, recipient: undefined, type: 'unsubscribed', senderBlocksRecipient: false, recipientBlocksSender: false });
    assert.equal(stateKey(u.sender), 'none');
    assert.equal(stateKey(u.recipient), 'none');
    assert.equal(u.senderChanged || u.recipientChanged || u.deliverToRecipient || u.autoReplied, false);
  });

  it('a stanza that is not routed never touches the recipient', () => {
    const p = new Pair();
    p.a = st('both');
    p.b = st('both');
    const r = p.send('A', 'subscribed');
    assert.deepEqual(p.keys(), ['both', 'both']);
    assert.equal(r.deliverToRecipient || r.recipientChanged || r.senderChanged, false);
  });
});

describe('exchange(): blocking (XEP-0191)', () => {
  for (const type of TYPES) {
    it(`the sender blocks the recipient: ${type} is refused with not-allowed before any change`, () => {
      const p = new Pair();
      p.a = st('none+pending-in');
      p.b = st('none+pending-out');
      p.blocksAB = true;
      assert.throws(
        () => p.send('A', type),
        (e: unknown) => e instanceof PresenceError && e.code === 'not-allowed',
      );
      assert.deepEqual(p.keys(), ['none+pending-in', 'none+pending-out']);
    });
  }

  it('the recipient blocks the sender: the sender\'s side changes, the stanza is dropped', () => {
    const p = new Pair();
    p.blocksBA = true;
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['none+pending-out', 'none']);
    assert.deepEqual(
      { sc: r.senderChanged, rc: r.recipientChanged, d: r.deliverToRecipient, ar: r.autoReplied },
      { sc: true, rc: false, d: false, ar: false },
    );
  });

  it('the recipient blocks the sender: no auto-reply even with from or a pre-approval', () => {
    const p = new Pair();
    p.b = st('none+pre-approved');
    p.blocksBA = true;
    const r = p.send('A', 'subscribe');
    assert.deepEqual(p.keys(), ['none+pending-out', 'none+pre-approved']);
    assert.equal(r.autoReplied, false);

    const q = new Pair();
    q.b = st('from');
    q.blocksBA = true;
    const r2 = q.send('A', 'subscribe');
    assert.deepEqual(q.keys(), ['none+pending-out', 'from']);
    assert.equal(r2.autoReplied, false);
  });

  it('the recipient blocks the sender: an unsubscribe is dropped too', () => {
    const p = new Pair();
    p.a = st('both');
    p.b = st('both');
    p.blocksBA = true;
    const r = p.send('A', 'unsubscribe');
    assert.deepEqual(p.keys(), ['from', 'both']);
    assert.equal(r.deliverToRecipient, false);
  });
});
