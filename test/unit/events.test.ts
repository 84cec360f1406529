import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { EventHub, type EventName } from '../../src/core/events.js';

describe('EventHub', () => {
  test('listeners receive the payload, synchronously, in registration order', () => {
    const hub = new EventHub();
    const calls: string[] = [];
    const payload = { jid: 'alice@localhost' };
    hub.on('account.created', (p) => {
      assert.equal(p, payload);
      calls.push('first');
    });
    hub.on('account.created', () => calls.push('second'));
    hub.on('account.created', () => calls.push('third'));
    hub.emit('account.created', payload);
    // Synchronous: everything ran before emit returned.
    assert.deepEqual(calls, ['first', 'second', 'third']);
  });

  test('listeners only hear the event they registered for', () => {
    const hub = new EventHub();
    const created: string[] = [];
    const deleted: string[] = [];
    hub.on('account.created', (p) => created.push(p.jid));
    hub.on('account.deleted', (p) => deleted.push(p.jid));
    hub.emit('account.created', { jid: 'a@localhost' });
    hub.emit('account.deleted', { jid: 'b@localhost' });
    hub.emit('block.changed', { owner: 'a@localhost', contact: 'b@localhost', blocked: true });
    assert.deepEqual(created, ['a@localhost']);
    assert.deepEqual(deleted, ['b@localhost']);
  });

  test('emitting with no listeners is harmless', () => {
    const hub = new EventHub();
    let errors = 0;
    hub.onListenerError = () => errors++;
    hub.emit('account.created', { jid: 'a@localhost' });
    assert.equal(errors, 0);
    assert.equal(hub.hasListeners('account.created'), false);
  });

  test('unsubscribe removes exactly that listener, and calling it twice is harmless', () => {
    const hub = new EventHub();
    const calls: string[] = [];
    hub.on('account.created', () => calls.push('a'));
    const offB = hub.on('account.created', () => calls.push('b'));
    hub.on('account.created', () => calls.push('c'));
    hub.emit('account.created', { jid: 'x@localhost' });
    offB();
    hub.emit('account.created', { jid: 'x@localhost' });
    offB();
    hub.emit('account.created', { jid: 'x@localhost' });
    assert.deepEqual(calls, ['a', 'b', 'c', 'a', 'c', 'a', 'c']);
  });

  test('the same function registered twice runs twice, and one unsubscribe removes one registration', () => {
    const hub = new EventHub();
    let n = 0;
    const fn = (): void => {
      n++;
    };
    const off1 = hub.on('account.created', fn);
    hub.on('account.created', fn);
    hub.emit('account.created', { jid: 'x@localhost' });
    assert.equal(n, 2);
    off1();
    hub.emit('account.created', { jid: 'x@localhost' });
    assert.equal(n, 3);
  });

  test('hasListeners follows registration and unsubscription', () => {
    const hub = new EventHub();
    assert.equal(hub.hasListeners('session.opened'), false);
    const off = hub.on('session.opened', () => {});
    assert.equal(hub.hasListeners('session.opened'), true);
    assert.equal(hub.hasListeners('session.closed'), false);
    off();
    assert.equal(hub.hasListeners('session.opened'), false);
  });

  test('a listener unsubscribing itself during emit does not make the next listener miss the event', () => {
    const hub = new EventHub();
    const calls: string[] = [];
    const off = hub.on('account.created', () => {
      calls.push('once');
      off();
    });
    hub.on('account.created', () => calls.push('always'));
    hub.emit('account.created', { jid: 'x@localhost' });
    hub.emit('account.created', { jid: 'x@localhost' });
    assert.deepEqual(calls, ['once', 'always', 'always']);
  });

  test('a listener added during emit is not called for that same emit', () => {
    const hub = new EventHub();
    const calls: string[] = [];
    hub.on('account.created', () => {
      calls.push('outer');
      if (calls.length === 1) hub.on('account.created', () => calls.push('late'));
    });
    hub.emit('account.created', { jid: 'x@localhost' });
    assert.deepEqual(calls, ['outer']);
    hub.emit('account.created', { jid: 'x@localhost' });
    assert.deepEqual(calls, ['outer', 'outer', 'late']);
  });

  test('a throwing listener does not stop the others and is reported to onListenerError with the event', () => {
    const hub = new EventHub();
    const calls: string[] = [];
    const reported: Array<{ err: unknown; event: EventName }> = [];
    hub.onListenerError = (err, event) => reported.push({ err, event });
    const boom = new Error('boom');
    hub.on('presence.changed', () => calls.push('before'));
    hub.on('presence.changed', () => {
      calls.push('thrower');
      throw boom;
    });
    hub.on('presence.changed', () => calls.push('after'));
    const presence = { jid: 'a@localhost', online: true, show: 'available', status: null, priority: 0, resource: 'r', lastSeen: null } as const;
    hub.emit('presence.changed', { jid: 'a@localhost', presence, previous: { ...presence, online: false, show: 'offline', resource: null } });
    assert.deepEqual(calls, ['before', 'thrower', 'after']);
    assert.equal(reported.length, 1);
    assert.equal(reported[0]?.err, boom);
    assert.equal(reported[0]?.event, 'presence.changed');
  });

  test('several throwing listeners are each reported, in order, and non-Error throws are passed through', () => {
    const hub = new EventHub();
    const reported: unknown[] = [];
    hub.onListenerError = (err) => reported.push(err);
    let reached = false;
    hub.on('account.deleted', () => {
      throw new Error('one');
    });
    hub.on('account.deleted', () => {
      throw 'two';
    });
    hub.on('account.deleted', () => {
      reached = true;
    });
    hub.emit('account.deleted', { jid: 'a@localhost' });
    assert.equal(reached, true);
    assert.equal(reported.length, 2);
    assert.equal((reported[0] as Error).message, 'one');
    assert.equal(reported[1], 'two');
  });

  test('by default a throwing listener is swallowed: emit does not throw and later listeners run', () => {
    const hub = new EventHub();
    let reached = false;
    hub.on('account.created', () => {
      throw new Error('ignored');
    });
    hub.on('account.created', () => {
      reached = true;
    });
    assert.doesNotThrow(() => hub.emit('account.created', { jid: 'a@localhost' }));
    assert.equal(reached, true);
  });
});
