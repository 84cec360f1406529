import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';

/**
 * A bounded mutational fuzz run of the XMPP stream (issue 10): valid stanzas are truncated, given
 * duplicate attributes, wrong namespaces, huge attributes, deep nesting and random bytes, with a fixed
 * seed so a failure replays. After each mutated stanza the fuzzing stream sends a ping: either the ping
 * is answered (the stanza was handled or refused with a stanza error) or the stream is closed with a
 * stream error. The server must never crash, never hang a stream, and a bystander keeps being served.
 */

const ITERATIONS = 2000;
const SEED = 0x5eed10;

/** mulberry32: small, seedable, good enough to pick mutations. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const VALID = [
  `<message to='fuzz-peer@localhost' type='chat' id='v1'><body>hello</body></message>`,
  `<message to='nobody@localhost/r' id='v2'><body>x</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>`,
  `<presence><show>away</show><status>out</status><priority>5</priority></presence>`,
  `<presence to='fuzz-peer@localhost' type='subscribe'/>`,
  `<presence to='fuzz-peer@localhost/p' type='probe'/>`,
  `<iq type='get' id='v3'><query xmlns='jabber:iq:roster'/></iq>`,
  `<iq type='set' id='v4'><query xmlns='jabber:iq:roster'><item jid='fuzz-peer@localhost' name='p'><group>g</group></item></query></iq>`,
  `<iq type='get' id='v5' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`,
  `<iq type='get' id='v6' to='fuzz-peer@localhost'><query xmlns='jabber:iq:last'/></iq>`,
  `<iq type='get' id='v7' to='fuzz-peer@localhost/p'><ping xmlns='urn:xmpp:ping'/></iq>`,
  `<iq type='set' id='v8'><block xmlns='urn:xmpp:blocking'><item jid='fuzz-other@localhost'/></block></iq>`,
  `<iq type='set' id='v9'><unblock xmlns='urn:xmpp:blocking'/></iq>`,
  `<iq type='result' id='v10' to='fuzz-peer@localhost/p'/>`,
  `<r xmlns='urn:xmpp:sm:3'/>`,
  `<iq type='get' id='v11' to='localhost'><query xmlns='jabber:iq:version'/></iq>`,
];

type Mutation = (s: string, r: () => number) => string | Buffer;
const pick = <T>(xs: readonly T[], r: () => number): T => xs[Math.floor(r() * xs.length)] as T;

const MUTATIONS: Record<string, Mutation> = {
  truncate: (s, r) => s.slice(0, Math.floor(r() * s.length)),
  duplicateAttribute: (s) => s.replace(/^<(\w+)/, "<$1 id='a' id='b'"),
  wrongNamespace: (s, r) => s.replace(/^<(\w+)/, `<$1 xmlns='${pick(['urn:wrong', 'jabber:server', '', 'http://etherx.jabber.org/streams'], r)}'`),
  childNamespace: (s, r) => s.replace(/xmlns='[^']*'/, `xmlns='${pick(['urn:x', 'jabber:client', 'urn:ietf:params:xml:ns:xmpp-sasl'], r)}'`),
  hugeAttribute: (s, r) => s.replace(/^<(\w+)/, `<$1 x='${'A'.repeat(1000 + Math.floor(r() * 40_000))}'`),
  manyAttributes: (s) => s.replace(/^<(\w+)/, `<$1 ${Array.from({ length: 80 }, (_, i) => `a${i}='1'`).join(' ')}`),
  deepNesting: (s) => s.replace(/^(<[^>]*>)/, `$1${'<x>'.repeat(40)}${'</x>'.repeat(40)}`),
  randomBytes: (s, r) => {
    const b = Buffer.from(s);
    for (let i = 0; i < 1 + Math.floor(r() * 4); i++) b[Math.floor(r() * b.length)] = Math.floor(r() * 256);
    return b;
  },
  insertMarkup: (s, r) => {
    const at = Math.floor(r() * s.length);
    return s.slice(0, at) + pick(['<!--c-->', '<?pi x?>', '<!DOCTYPE x>', '&bogus;', '&#0;', ']]>', '<![CDATA[x]]>', '</stream:stream>', '<a:b/>', '\u0000'], r) + s.slice(at);
  },
  badJid: (s, r) => s.replace(/(to|jid)='[^']*'/, `$1='${pick(['@', 'a@b@c', '/r', 'x'.repeat(3000) + '@localhost', 'a@localhost/' + '\u0007', ''], r)}'`),
  badType: (s, r) => s.replace(/type='[^']*'/, `type='${pick(['', 'GET', 'bogus', 'result', 'error'], r)}'`),
  duplicateStanza: (s) => s + s,
  emptyElement: (s) => s.replace(/^<(\w+)[^>]*?\/?>/, '<$1>'),
};

describe('bounded XMPP fuzz run', () => {
  let t: TestServer;
  let port: number;
  const open: RawXmpp[] = [];

  before(async () => {
    t = await startTestServer({
      xmpp_port: 0,
      xmpp_require_tls: false,
      xmpp_max_stanza_bytes: 16_384,
      xmpp_stanza_timeout_ms: 200,
      xmpp_negotiation_timeout_ms: 3_000,
    });
    port = t.server.xmppPort as number;
    for (const u of ['fuzz', 'fuzz-peer', 'fuzz-other', 'bystander']) await t.createAccount(`${u}@localhost`);
  });
  after(async () => {
    for (const r of open) r.close();
    await t.destroy();
  });

  const login = async (user: string, resource: string): Promise<RawXmpp> => {
    const r = await RawXmpp.open(port);
    open.push(r);
    await r.loginPlain(user, 'secret-pw', resource);
    r.write('<presence/>');
    return r;
  };

  test(`${ITERATIONS} mutated stanzas (seed ${SEED}): every stream answers or is closed, the server keeps serving`, { timeout: 300_000 }, async () => {
    const random = rng(SEED);
    const names = Object.keys(MUTATIONS);
    const peer = await login('fuzz-peer', 'p');
    const bystander = await login('bystander', 'b');
    let conn = await login('fuzz', 'f');
    const outcomes = { answered: 0, closed: 0 };
    for (let i = 0; i < ITERATIONS; i++) {
      const name = pick(names, random);
      const mutated = (MUTATIONS[name] as Mutation)(pick(VALID, random), random);
      const probe = `probe-${i}`;
      conn.text = '';
      conn.socket.write(mutated);
      conn.write(`<iq type='get' id='${probe}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
      const result = await Promise.race([
        conn.waitFor(new RegExp(`<iq[^>]*id='${probe}'`), probe, 10_000).then(
          () => 'answered' as const,
          (e: Error) => {
            throw new Error(`iteration ${i} (${name}) hung: ${String(mutated).slice(0, 300)}; ${e.message.slice(0, 300)}`);
          },
        ),
        conn.closed.then(() => 'closed' as const),
      ]);
      if (result === 'closed') {
        // A stream the server ended says why, unless the mutation itself closed the stream.
        assert.ok(/<stream:error|<\/stream:stream>/.test(conn.text), `iteration ${i} (${name}): closed without a stream error: ${String(mutated).slice(0, 200)}`);
        conn.close();
        conn = await login('fuzz', `f${i}`);
      }
      outcomes[result]++;
      if (i % 200 === 0) {
        bystander.text = '';
        bystander.write(`<iq type='get' id='by-${i}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
        await bystander.waitFor(new RegExp(`id='by-${i}'`), `bystander ping ${i}`);
      }
      // The peer's transcript would grow without bound: it only needs to stay connected.
      peer.text = '';
    }
    assert.ok(outcomes.answered > 0 && outcomes.closed > 0, JSON.stringify(outcomes));
    bystander.write(`<iq type='get' id='by-end' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    await bystander.waitFor(/id='by-end'/, 'bystander at the end');
    assert.equal(t.server.engine.isLocalDomain('localhost'), true);
  });
});
