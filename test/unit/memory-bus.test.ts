import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MemoryBus } from '../../src/adapters/memory/memory-bus.js';
import type { LiveSession } from '../../src/ports/bus.js';

const live = (resource: string, status: string | null = null): LiveSession => ({
  resource,
  available: true,
  show: 'available',
  status,
  priority: 0,
  lastActive: 0,
  protocol: 'native',
  node: 'local',
});
const resources = (l: readonly LiveSession[]): string[] => l.map((s) => s.resource).sort();

test('memory bus keeps sessions per account through one, several and none', async () => {
  const bus = new MemoryBus();
  assert.deepEqual((await bus.putSession('a@x', live('r1'))).sessions, [live('r1')]);
  // Same resource again replaces, it does not add.
  assert.deepEqual((await bus.putSession('a@x', live('r1', 'again'))).sessions, [live('r1', 'again')]);
  assert.deepEqual(await bus.counts(), { sessions: 1, accounts: 1 });
  assert.deepEqual(resources((await bus.putSession('a@x', live('r2'))).sessions), ['r1', 'r2']);
  assert.deepEqual(resources((await bus.putSession('a@x', live('r3'))).sessions), ['r1', 'r2', 'r3']);
  await bus.putSession('b@x', live('r1'));
  assert.deepEqual(await bus.counts(), { sessions: 4, accounts: 2 });
  assert.deepEqual(resources((await bus.removeSession('a@x', 'r2')).sessions), ['r1', 'r3']);
  assert.deepEqual(resources((await bus.removeSession('a@x', 'r1')).sessions), ['r3']);
  // Removing a resource that is not there leaves the others alone.
  assert.deepEqual(resources((await bus.removeSession('a@x', 'nope')).sessions), ['r3']);
  assert.deepEqual(resources((await bus.putSession('a@x', live('r4'))).sessions), ['r3', 'r4']);
  const many = await bus.sessionsOfMany(['a@x', 'b@x', 'c@x']);
  assert.deepEqual(resources(many.get('a@x')!), ['r3', 'r4']);
  assert.deepEqual(resources(many.get('b@x')!), ['r1']);
  assert.equal(many.has('c@x'), false);
  assert.deepEqual((await bus.removeSession('a@x', 'r3')).sessions, [live('r4')]);
  assert.deepEqual((await bus.removeSession('a@x', 'r4')).sessions, []);
  assert.deepEqual(await bus.sessionsOf('a@x'), []);
  assert.deepEqual((await bus.removeSession('a@x', 'r4')).sessions, []);
  assert.deepEqual(await bus.counts(), { sessions: 1, accounts: 1 });
});
