import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeliveryVersions } from '../../src/engine/delivery-versions.js';
import type { Delivery } from '../../src/ports/bus.js';

type P = Extract<Delivery, { kind: 'presence' }>;
const at = (version: number | undefined, extra: Partial<P> = {}): P => ({
  kind: 'presence',
  from: 'x@d',
  presence: { jid: 'x@d', online: true, show: 'available', status: `v${version}`, priority: 0, resource: 'r', lastSeen: null },
  session: { resource: 'r', available: true, show: 'available', status: null, priority: 0, lastActive: 0 },
  ...(version === undefined ? {} : { version }),
  ...extra,
});

test('an account-level update older than one already delivered loses its account part, keeps its resource part', () => {
  const v = new DeliveryVersions();
  const newer = at(7);
  assert.equal(v.admit(newer), newer);
  const late = at(5);
  const admitted = v.admit(late);
  assert.ok(admitted !== null && admitted !== late);
  assert.equal(admitted.resourceOnly, true, 'native ignores it, XMPP still shows the resource');
  assert.equal(v.admit(late), admitted, 'one converted object per stale delivery (encoded once for all recipients)');
  assert.equal(v.admit(at(5, { session: null })), null, 'nothing per resource: dropped');
  const same = at(7);
  assert.equal(v.admit(same), same, 'the same version reaches every recipient');
});

test('resource-only updates neither go stale nor make an older account-level update stale', () => {
  const v = new DeliveryVersions();
  const resourceOnly = at(9, { resourceOnly: true });
  assert.equal(v.admit(resourceOnly), resourceOnly);
  const accountLevel = at(8);
  assert.equal(v.admit(accountLevel), accountLevel, 'still the latest word on the account');
  assert.equal(v.admit(at(3, { resourceOnly: true }))?.resourceOnly, true);
});

test('unversioned deliveries (in-process bus, masks) always pass; clear() forgets versions', () => {
  const v = new DeliveryVersions();
  v.admit(at(10));
  const plain = at(undefined);
  assert.equal(v.admit(plain), plain);
  v.clear();
  const after = at(2);
  assert.equal(v.admit(after), after);
});
