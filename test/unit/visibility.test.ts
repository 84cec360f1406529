import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { NONE, type SubState } from '../../src/core/subscription-state.js';
import { canSeePresence, type VisibilityFacts } from '../../src/core/visibility.js';

const TARGET = 'alice@localhost';
const VIEWER = 'bob@localhost';

function sub(fields: Partial<SubState>): SubState {
  return { ...NONE, ...fields };
}

function facts(f: Partial<VisibilityFacts> = {}): VisibilityFacts {
  return {
    viewer: VIEWER,
    target: TARGET,
    targetItemForViewer: undefined,
    targetBlocksViewer: false,
    viewerBlocksTarget: false,
    targetPublic: false,
    ...f,
  };
}

describe('canSeePresence', () => {
  test('an account always sees itself, even if private, blocked or with no roster item', () => {
    assert.equal(canSeePresence(facts({ viewer: TARGET })), true);
    assert.equal(canSeePresence(facts({ viewer: TARGET, targetBlocksViewer: true, viewerBlocksTarget: true })), true);
    assert.equal(canSeePresence(facts({ viewer: TARGET, targetItemForViewer: sub({}) })), true);
  });

  test('a contact with a `from` subscription sees the presence', () => {
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ from: true }) })), true);
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ from: true, to: true }) })), true);
  });

  test('a `to`-only item does not let the viewer see (it is the other direction)', () => {
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ to: true }) })), false);
  });

  test('a roster item with subscription none does not let the viewer see', () => {
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({}) })), false);
  });

  test('pending states and pre-approval do not let the viewer see', () => {
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ pendingIn: true }) })), false);
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ pendingOut: true }) })), false);
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ preApproved: true }) })), false);
    assert.equal(canSeePresence(facts({ targetItemForViewer: sub({ pendingIn: true, pendingOut: true, preApproved: true, to: true }) })), false);
  });

  test('no roster item and private: a stranger does not see', () => {
    assert.equal(canSeePresence(facts()), false);
  });

  test('the target blocking the viewer wins over a `from` subscription and over public', () => {
    assert.equal(canSeePresence(facts({ targetBlocksViewer: true, targetItemForViewer: sub({ from: true, to: true }) })), false);
    assert.equal(canSeePresence(facts({ targetBlocksViewer: true, targetPublic: true })), false);
    assert.equal(canSeePresence(facts({ targetBlocksViewer: true, targetPublic: true, targetItemForViewer: sub({ from: true }) })), false);
  });

  test('the viewer blocking the target wins over a `from` subscription and over public', () => {
    assert.equal(canSeePresence(facts({ viewerBlocksTarget: true, targetItemForViewer: sub({ from: true }) })), false);
    assert.equal(canSeePresence(facts({ viewerBlocksTarget: true, targetPublic: true })), false);
    assert.equal(canSeePresence(facts({ viewerBlocksTarget: true, targetPublic: true, targetItemForViewer: sub({ from: true, to: true }) })), false);
  });

  test('public presence is visible to anonymous requesters and to non-contacts', () => {
    assert.equal(canSeePresence(facts({ viewer: null, targetPublic: true })), true);
    assert.equal(canSeePresence(facts({ targetPublic: true })), true);
    assert.equal(canSeePresence(facts({ targetPublic: true, targetItemForViewer: sub({ to: true, pendingIn: true }) })), true);
  });

  test('anonymous requesters never see private presence, whatever the other facts say', () => {
    assert.equal(canSeePresence(facts({ viewer: null })), false);
    // Facts that would grant a known viewer access must not leak to an anonymous one.
    assert.equal(canSeePresence(facts({ viewer: null, targetItemForViewer: sub({ from: true, to: true }) })), false);
  });

  test('table: every combination of viewer, subscription, blocks and public follows the stated rule', () => {
    // The rule as stated in visibility.ts, phrased independently: self always sees; otherwise any
    // block between the two (known viewer) hides; otherwise public shows to all, and a known viewer
    // with a `from` subscription sees private presence too. Nothing else grants visibility.
    const viewers: Array<{ name: string; viewer: string | null }> = [
      { name: 'self', viewer: TARGET },
      { name: 'contact', viewer: VIEWER },
      { name: 'anonymous', viewer: null },
    ];
    const items: Array<SubState | undefined> = [undefined];
    for (let bits = 0; bits < 32; bits++) {
      items.push({
        to: (bits & 1) !== 0,
        from: (bits & 2) !== 0,
        pendingOut: (bits & 4) !== 0,
        pendingIn: (bits & 8) !== 0,
        preApproved: (bits & 16) !== 0,
      });
    }
    const bools = [false, true];
    let checked = 0;
    let visible = 0;
    for (const { name, viewer } of viewers) {
      for (const item of items) {
        for (const targetBlocksViewer of bools) {
          for (const viewerBlocksTarget of bools) {
            for (const targetPublic of bools) {
              const f: VisibilityFacts = { viewer, target: TARGET, targetItemForViewer: item, targetBlocksViewer, viewerBlocksTarget, targetPublic };
              const isSelf = name === 'self';
              const known = viewer !== null;
              const blocked = known && (targetBlocksViewer || viewerBlocksTarget);
              const subscribed = known && item !== undefined && item.from;
              const expected = isSelf || (!blocked && (targetPublic || subscribed));
              assert.equal(canSeePresence(f), expected, `${name} ${JSON.stringify(f)}`);
              checked++;
              if (expected) visible++;
            }
          }
        }
      }
    }
    assert.equal(checked, 3 * 33 * 8);
    // Sanity on the table itself: both outcomes occur, so it is not vacuous.
    assert.ok(visible > 0 && visible < checked);
  });
});
