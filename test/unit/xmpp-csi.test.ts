import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ClientState } from '../../src/protocols/xmpp/csi.js';

const p = (from: string, extra = '', body = '') => `<presence xmlns='jabber:client' from='${from}' to='me@x/r'${extra}>${body}</presence>`;

test('CSI holds presence updates from others, newest per sender, in the order senders last changed', () => {
  const s = new ClientState();
  assert.equal(s.hold(p('a@x/1', '', '<show>away</show>'), 'me@x/r'), true);
  assert.equal(s.hold(p('b@x/1'), 'me@x/r'), true);
  assert.equal(s.hold(p('a@x/1', '', '<show>xa</show>'), 'me@x/r'), true);
  assert.equal(s.hold(p('c@x/1', " type='unavailable'"), 'me@x/r'), true);
  assert.deepEqual(s.take(), [p('b@x/1'), p('a@x/1', '', '<show>xa</show>'), p('c@x/1', " type='unavailable'")]);
  assert.deepEqual(s.take(), [], 'taken once');
});

test('CSI never holds subscription requests, errors, our own presence, or anything but presence', () => {
  const s = new ClientState();
  assert.equal(s.hold(p('a@x', " type='subscribe'"), 'me@x/r'), false);
  assert.equal(s.hold(p('a@x/1', " type='error'"), 'me@x/r'), false);
  assert.equal(s.hold(p('me@x/r'), 'me@x/r'), false);
  assert.equal(s.hold(`<message xmlns='jabber:client' from='a@x/1'><body>hi</body></message>`, 'me@x/r'), false);
  assert.equal(s.hold(`<presence xmlns="jabber:client" from="d@x/1"/>`, 'me@x/r'), true, 'double quotes too');
  assert.equal(s.heldCount, 1);
});

test('CSI holds at most 5000 senders; presence from one more goes out at once', () => {
  const s = new ClientState();
  for (let i = 0; i < 5000; i++) assert.equal(s.hold(p(`u${i}@x/1`), 'me@x/r'), true);
  assert.equal(s.hold(p('one-more@x/1'), 'me@x/r'), false);
  assert.equal(s.hold(p('u7@x/1', '', '<show>dnd</show>'), 'me@x/r'), true, 'a held sender is still replaced');
  assert.equal(s.heldCount, 5000);
});
