import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { StreamError } from '../../src/protocols/xmpp/errors.js';
import { parseFrame, StreamParser, type XmlLimits } from '../../src/protocols/xmpp/parser.js';
import type { XmlElement } from '../../src/protocols/xmpp/xml.js';

const LIMITS: XmlLimits = { maxStanzaChars: 10_000, maxDepth: 8, maxAttributes: 4 };
const HEADER = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

/** A parser that has read a stream header, with what it reported since. */
function streamOf(limits = LIMITS, header = HEADER): { parser: StreamParser; stanzas: XmlElement[]; ended: () => boolean } {
  const stanzas: XmlElement[] = [];
  let ended = false;
  const parser = new StreamParser(limits, { streamStart: () => {}, stanza: (s) => stanzas.push(s), streamEnd: () => (ended = true) });
  parser.write(Buffer.from(header), 0);
  return { parser, stanzas, ended: () => ended };
}

function attrs(n: number): string {
  return Array.from({ length: n }, (_, i) => ` a${i}='${i}'`).join('');
}

function streamErrorOf(fn: () => unknown): StreamError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof StreamError, `expected a StreamError, got ${String(e)}`);
    return e;
  }
  assert.fail('expected a stream error');
}

describe('XMPP stream parser limits', () => {
  test('an element with as many attributes as allowed is parsed, one more is a policy violation', () => {
    const { parser, stanzas } = streamOf();
    parser.write(Buffer.from(`<message${attrs(4)}><body>hi</body></message>`), 0);
    assert.equal(stanzas.length, 1);
    assert.deepEqual((stanzas[0] as XmlElement).attrs, { a0: '0', a1: '1', a2: '2', a3: '3' });
    const e = streamErrorOf(() => parser.write(Buffer.from(`<message${attrs(5)}/>`), 0));
    assert.equal(e.condition, 'policy-violation');
    assert.match(e.message, /more than 4 attributes/);
  });

  test('the attribute limit holds on a child element and counts per element', () => {
    const { parser, stanzas } = streamOf();
    // Four on the stanza and four on its child: each element is within the limit.
    parser.write(Buffer.from(`<iq${attrs(4)}><query${attrs(4)}/></iq>`), 0);
    assert.equal(stanzas.length, 1);
    const e = streamErrorOf(() => parser.write(Buffer.from(`<iq><query${attrs(5)}/></iq>`), 0));
    assert.equal(e.condition, 'policy-violation');
  });

  test('a flood of attributes fails at the limit, before the tag ends', () => {
    const { parser } = streamOf();
    // No '>' ever comes: the error must come from counting, not from the finished tag.
    const e = streamErrorOf(() => parser.write(Buffer.from(`<presence${attrs(100)}`), 0));
    assert.equal(e.condition, 'policy-violation');
  });

  test('namespace declarations are not attributes of the parsed element', () => {
    const { parser, stanzas } = streamOf();
    parser.write(Buffer.from("<iq type='get' id='1'><x:query xmlns:x='urn:example'/></iq>"), 0);
    const iq = stanzas[0] as XmlElement;
    assert.deepEqual(iq.attrs, { type: 'get', id: '1' });
    const q = iq.child('query', 'urn:example');
    assert.ok(q);
    assert.deepEqual(q.attrs, {});
  });

  test('nesting deeper than allowed is a policy violation', () => {
    const { parser } = streamOf();
    const e = streamErrorOf(() => parser.write(Buffer.from(`<message>${'<a>'.repeat(10)}`), 0));
    assert.equal(e.condition, 'policy-violation');
    assert.match(e.message, /nested deeper than 8/);
  });

  test('a WebSocket frame obeys the same attribute limit, namespace declarations included', () => {
    assert.deepEqual(parseFrame(`<presence xmlns='jabber:client'${attrs(3)}/>`, LIMITS).attrs, { xmlns: 'jabber:client', a0: '0', a1: '1', a2: '2' });
    const e = streamErrorOf(() => parseFrame(`<presence xmlns='jabber:client'${attrs(4)}/>`, LIMITS));
    assert.equal(e.condition, 'policy-violation');
  });
});

describe('XMPP stream parser at rest', () => {
  // The header below has five attributes.
  const REST_LIMITS: XmlLimits = { ...LIMITS, maxAttributes: 6 };
  const HEADER_WITH_PREFIX =
    "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' xmlns:ex='urn:example' to='localhost' version='1.0'>";

  const restingStream = (limits = REST_LIMITS) => streamOf(limits, HEADER_WITH_PREFIX);

  test('after a rest, stanzas parse in the namespaces the stream header declared', () => {
    const { parser, stanzas } = restingStream();
    parser.write(Buffer.from("<message to='a@localhost'><body>one</body></message>"), 0);
    assert.equal(parser.rest(), true);
    // The default namespace and a prefix bound only on the header are both still in effect.
    parser.write(Buffer.from("<message to='b@localhost'><body>two</body><ex:thing/></message>"), 0);
    assert.equal(stanzas.length, 2);
    const second = stanzas[1] as XmlElement;
    assert.equal(second.ns, 'jabber:client');
    assert.equal(second.attr('to'), 'b@localhost');
    assert.equal(second.childText('body'), 'two');
    assert.ok(second.child('thing', 'urn:example'), 'prefixed child resolved through the header binding');
  });

  test('a stream does not rest inside a stanza, and one split across chunks still arrives whole', () => {
    const { parser, stanzas } = restingStream();
    parser.write(Buffer.from("<message><body>hal"), 0);
    assert.equal(parser.rest(), false);
    parser.write(Buffer.from('f</body></message>'), 0);
    assert.equal(stanzas.length, 1);
    assert.equal((stanzas[0] as XmlElement).childText('body'), 'half');
    assert.equal(parser.rest(), true);
  });

  test('limits and errors still hold after a rest, and the stream can end', () => {
    const { parser, stanzas, ended } = restingStream();
    assert.equal(parser.rest(), true);
    const e = streamErrorOf(() => parser.write(Buffer.from(`<message${attrs(7)}/>`), 0));
    assert.equal(e.condition, 'policy-violation');

    const other = restingStream();
    other.parser.rest();
    other.parser.write(Buffer.from('<presence/>'), 0);
    other.parser.rest();
    assert.equal(streamErrorOf(() => other.parser.write(Buffer.from('<undeclared:x/>'), 0)).condition, 'not-well-formed');

    const third = restingStream();
    third.parser.rest();
    third.parser.write(Buffer.from('</stream:stream>'), 0);
    assert.equal(third.ended(), true);
    assert.equal(stanzas.length, 0);
    assert.equal(ended(), false);
  });

  test('the stanza size limit counts from the stanza, not from the replayed header', () => {
    const { parser, stanzas } = restingStream({ ...REST_LIMITS, maxStanzaChars: 200 });
    parser.rest();
    parser.write(Buffer.from(`<message><body>${'x'.repeat(150)}</body></message>`), 0);
    assert.equal(stanzas.length, 1);
    parser.rest();
    assert.equal(streamErrorOf(() => parser.write(Buffer.from(`<message><body>${'x'.repeat(250)}`), 0)).condition, 'policy-violation');
  });
});

