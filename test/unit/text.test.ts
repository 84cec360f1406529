import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isXmlSafeText } from '../../src/core/text.js';

test('text XML 1.0 can carry passes; control characters, non-characters and unpaired surrogates do not', () => {
  for (const ok of ['', 'plain', 'tab\there', 'line\nbreak\r\n', 'émoji 😀 ☕', '\u00a0\u2028']) assert.equal(isXmlSafeText(ok), true, JSON.stringify(ok));
  for (const bad of ['\u0000', 'a\u0001b', '\u0008', '\u000b', '\u000c', '\u001f', '\ufffe', '\uffff', 'x\ud800', '\udc00x', '\ud83d']) {
    assert.equal(isXmlSafeText(bad), false, JSON.stringify(bad));
  }
});
