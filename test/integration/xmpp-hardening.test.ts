import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { RawXmpp } from '../helpers/raw-xmpp.js';

/**
 * Issue 10, adversarial findings 1, 2, 3, 9, 11 and 12, each probed from outside with raw streams
 * (a library would answer pings, ack, or hide which bytes came back).
 */

const PW = 'secret-pw';

/** Attributes of the first tag in `tag` (single or double quotes). */
function attrsOf(tag: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of tag.matchAll(/\s([\w:-]+)=(?:'([^']*)'|"([^"]*)")/g)) out[m[1] as string] = (m[2] ?? m[3]) as string;
  return out;
}

/** A raw client that answers every iq get/set it receives with an empty result, as a real client answers pings. */
function autoAnswer(r: RawXmpp): void {
  let seen = 0;
  r.socket.on('data', () => {
    if (seen > r.text.length) seen = 0; // the test cleared the transcript
    for (;;) {
      const i = r.text.indexOf('<iq ', seen);
      if (i < 0) return;
      const end = r.text.indexOf('>', i);
      if (end < 0) return;
      seen = end;
      const a = attrsOf(r.text.slice(i, end + 1));
      if ((a.type === 'get' || a.type === 'set') && a.from && a.from.includes('@') && a.id) {
        r.write(`<iq type='result' id='${a.id}' to='${a.from}'/>`);
      }
    }
  });
}

let probeCounter = 0;
/** Sends a ping to the server and waits for its answer: every stanza sent before it has been handled. */
async function roundTrip(r: RawXmpp): Promise<void> {
  const id = `rt-${++probeCounter}`;
  // Only what arrives after the ping is searched: rescanning a transcript that grows with every round
  // trip made thousands of them quadratic, slow enough on a loaded machine to outlast the burst they measure.
  const from = r.text.length;
  r.write(`<iq type='get' id='${id}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
  await r.waitFor(new RegExp(`<iq[^>]*id='${id}'`), `round trip ${id}`, 20_000, from);
}

/** The complete stanza answering iq `id` in r's transcript. */
async function answerTo(r: RawXmpp, id: string): Promise<string> {
  return r.waitFor(new RegExp(`<iq[^>]*id='${id}'[^>]*(?:/>|>[\\s\\S]*?</iq>)`), `answer to ${id}`);
}

describe('XMPP hardening (issue 10 findings 1, 2, 3, 9, 11, 12)', () => {
  let t: TestServer;
  let port: number;
  const raws: RawXmpp[] = [];
  const login = async (user: string, resource: string): Promise<RawXmpp> => {
    const r = await RawXmpp.open(port);
    raws.push(r);
    await r.loginPlain(user, PW, resource);
    return r;
  };

  before(async () => {
    t = await startTestServer({
      xmpp_port: 0,
      xmpp_require_tls: false,
      xmpp_max_offline_messages: 3,
      xmpp_max_output_bytes: 65_536,
      xmpp_output_timeout_ms: 1_000,
      xmpp_sm_resume_timeout_ms: 0,
    });
    port = t.server.xmppPort as number;
  });
  after(async () => {
    for (const r of raws) r.close();
    await t.destroy();
  });

  test('finding 1: a ping to a full JID answers the same wherever the requester may not see that resource', async () => {
    const engine = t.server.engine;
    const relations = ['none', 'pending-out', 'to', 'from', 'both', 'blocked', 'blocker', 'directed'] as const;
    const states = ['available', 'unavailable', 'offline', 'never'] as const;
    type Relation = (typeof relations)[number];
    const setup: Array<{ rel: Relation; req: string; targets: Record<(typeof states)[number], string> }> = [];
    for (const rel of relations) {
      const req = `req-${rel}@localhost`;
      await t.createAccount(req);
      const targets = {} as Record<(typeof states)[number], string>;
      for (const st of states) {
        const jid = `t-${rel}-${st}@localhost`;
        targets[st] = jid;
        // One may block a JID that has no account; the answer must not differ for it either.
        if (rel === 'blocker') await engine.block(req, jid);
        if (st === 'never') continue;
        await t.createAccount(jid);
        // The relation, made through the engine as a client's stanzas would make it.
        if (rel === 'pending-out' || rel === 'to' || rel === 'both') await engine.subscription(req, jid, 'subscribe');
        if (rel === 'to' || rel === 'both') await engine.subscription(jid, req, 'subscribed');
        if (rel === 'from' || rel === 'both' || rel === 'blocked') {
          await engine.subscription(jid, req, 'subscribe');
          await engine.subscription(req, jid, 'subscribed');
        }
        if (rel === 'blocked') {
          await engine.subscription(req, jid, 'subscribe');
          await engine.subscription(jid, req, 'subscribed');
          await engine.block(jid, req);
        }
      }
      setup.push({ rel, req, targets });
    }
    const requesters = new Map<Relation, RawXmpp>();
    for (const { rel, req, targets } of setup) {
      const r = await login(req.split('@')[0] as string, 'r');
      r.write('<presence/>');
      requesters.set(rel, r);
      for (const st of ['available', 'unavailable'] as const) {
        const tc = await login(targets[st].split('@')[0] as string, 'res');
        autoAnswer(tc);
        if (st === 'available') {
          if (rel === 'directed') tc.write(`<presence to='${req}/r'/>`);
          else tc.write('<presence/>');
          await roundTrip(tc);
        }
      }
    }
    const normalised = new Map<string, string>();
    for (const { rel, req, targets } of setup) {
      const r = requesters.get(rel) as RawXmpp;
      for (const st of states) {
        const id = `m-${rel}-${st}`;
        r.write(`<iq type='get' id='${id}' to='${targets[st]}/res'><ping xmlns='urn:xmpp:ping'/></iq>`);
        const answer = await answerTo(r, id);
        // Each requester is addressed by its own full JID: only what the answer says of the target may not differ.
        normalised.set(`${rel}/${st}`, answer.replace(` id='${id}'`, '').replaceAll(`${targets[st]}/res`, 'TARGET').replaceAll(`${req}/r`, 'REQUESTER'));
      }
    }
    const offline = normalised.get('none/never') as string;
    assert.match(offline, /type='error'/);
    assert.match(offline, /<service-unavailable /);
    for (const [key, answer] of normalised) {
      const [rel, st] = key.split('/') as [Relation, string];
      const sees = st === 'available' && (rel === 'to' || rel === 'both' || rel === 'directed');
      if (rel === 'blocker') {
        // The requester's own block: refused the same way whatever the target's state (XEP-0191 §3.4).
        assert.equal(answer, normalised.get('blocker/never'), key);
        assert.match(answer, /<not-acceptable [^>]*\/>.*<blocked xmlns='urn:xmpp:blocking:errors'\/>/, key);
      } else if (sees) {
        assert.match(answer, /type='result'/, key);
      } else {
        assert.equal(answer, offline, `${key} must look exactly like a nonexistent account`);
      }
    }
  });

  test('finding 1: results and errors reach a full JID only in answer to a forwarded request', async () => {
    await t.createAccount('unsol-a@localhost');
    await t.createAccount('unsol-b@localhost');
    await t.server.engine.subscription('unsol-a@localhost', 'unsol-b@localhost', 'subscribe');
    await t.server.engine.subscription('unsol-b@localhost', 'unsol-a@localhost', 'subscribed');
    const a = await login('unsol-a', 'a');
    const b = await login('unsol-b', 'b');
    a.write('<presence/>');
    b.write('<presence/>');
    await roundTrip(a);
    await roundTrip(b);
    b.write(`<iq type='result' id='unsolicited-1' to='unsol-a@localhost/a'/>`);
    b.write(`<iq type='error' id='unsolicited-2' to='unsol-a@localhost/a'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>`);
    await roundTrip(b);
    // Anything b's stanzas made the server send to a was written before b's round trip was answered;
    // a's own round trip then proves it would have arrived.
    await roundTrip(a);
    assert.doesNotMatch(a.text, /unsolicited-/);
    // A real request from a and its answer do pass.
    a.write(`<iq type='get' id='solicited' to='unsol-b@localhost/b'><ping xmlns='urn:xmpp:ping'/></iq>`);
    const req = await b.waitFor(/<iq[^>]*id='solicited'[^>]*>/, 'forwarded request');
    assert.equal(attrsOf(req).from, 'unsol-a@localhost/a');
    b.write(`<iq type='result' id='solicited' to='unsol-a@localhost/a'/>`);
    assert.match(await answerTo(a, 'solicited'), /type='result'/);
    // The same answer a second time is not routed again.
    b.write(`<iq type='result' id='solicited' to='unsol-a@localhost/a'/>`);
    await roundTrip(b);
    await roundTrip(a);
    assert.equal(a.text.match(/id='solicited'/g)?.length, 1);
  });

  test('finding 2: XEP-0191 blocking covers iqs in both directions', async () => {
    const engine = t.server.engine;
    await t.createAccount('blk-owner@localhost');
    await t.createAccount('blk-pest@localhost');
    await engine.subscription('blk-owner@localhost', 'blk-pest@localhost', 'subscribe');
    await engine.subscription('blk-pest@localhost', 'blk-owner@localhost', 'subscribed');
    await engine.subscription('blk-pest@localhost', 'blk-owner@localhost', 'subscribe');
    await engine.subscription('blk-owner@localhost', 'blk-pest@localhost', 'subscribed');
    const owner = await login('blk-owner', 'o');
    const pest = await login('blk-pest', 'p');
    autoAnswer(owner);
    autoAnswer(pest);
    owner.write('<presence/>');
    pest.write('<presence/>');
    await roundTrip(owner);
    await roundTrip(pest);
    // Before the block the pest's ping reaches the owner (whose client answers it).
    pest.write(`<iq type='get' id='pre-block' to='blk-owner@localhost/o'><ping xmlns='urn:xmpp:ping'/></iq>`);
    assert.match(await answerTo(pest, 'pre-block'), /type='result'/);
    owner.write(`<iq type='set' id='do-block'><block xmlns='urn:xmpp:blocking'><item jid='blk-pest@localhost'/></block></iq>`);
    await answerTo(owner, 'do-block');
    owner.text = '';

    // From the blocked contact: get, set, result and error never reach the blocker; requests are
    // answered exactly as for a resource that is not there.
    pest.write(`<iq type='get' id='b-get' to='blk-owner@localhost/o'><ping xmlns='urn:xmpp:ping'/></iq>`);
    pest.write(`<iq type='get' id='b-gone' to='blk-owner@localhost/nowhere'><ping xmlns='urn:xmpp:ping'/></iq>`);
    pest.write(`<iq type='set' id='b-set' to='blk-owner@localhost/o'><query xmlns='jabber:iq:private'/></iq>`);
    pest.write(`<iq type='result' id='b-result' to='blk-owner@localhost/o'/>`);
    pest.write(`<iq type='error' id='b-error' to='blk-owner@localhost/o'/>`);
    const get = (await answerTo(pest, 'b-get')).replace(" id='b-get'", '').replace('blk-owner@localhost/o', 'X');
    const gone = (await answerTo(pest, 'b-gone')).replace(" id='b-gone'", '').replace('blk-owner@localhost/nowhere', 'X');
    assert.equal(get, gone);
    assert.match(await answerTo(pest, 'b-set'), /<service-unavailable /);
    await roundTrip(pest);
    await roundTrip(owner);
    assert.doesNotMatch(owner.text, /id='b-/);

    // From the blocker: refused with not-acceptable and <blocked/>, to the full and the bare JID.
    owner.write(`<iq type='get' id='o-full' to='blk-pest@localhost/p'><ping xmlns='urn:xmpp:ping'/></iq>`);
    owner.write(`<iq type='get' id='o-bare' to='blk-pest@localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`);
    for (const id of ['o-full', 'o-bare']) {
      const a = await answerTo(owner, id);
      assert.match(a, /type='error'/, id);
      assert.match(a, /<not-acceptable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'\/>/, id);
      assert.match(a, /<blocked xmlns='urn:xmpp:blocking:errors'\/>/, id);
    }
    await roundTrip(owner);
    await roundTrip(pest);
    assert.doesNotMatch(pest.text, /id='o-/);
  });

  test('finding 3: a message to an unknown, an offline or a blocking account looks the same to the sender', async () => {
    const engine = t.server.engine;
    await t.createAccount('enum-sender@localhost');
    await t.createAccount('enum-offline@localhost');
    await t.createAccount('enum-blocks@localhost');
    await t.createAccount('enum-full@localhost');
    await t.createAccount('enum-friend@localhost');
    await engine.block('enum-blocks@localhost', 'enum-sender@localhost');
    await engine.subscription('enum-friend@localhost', 'enum-full@localhost', 'subscribe');
    await engine.subscription('enum-full@localhost', 'enum-friend@localhost', 'subscribed');
    const s = await login('enum-sender', 's');
    s.write('<presence/>');
    await roundTrip(s);
    s.text = '';
    const targets = ['enum-ghost@localhost', 'enum-offline@localhost', 'enum-blocks@localhost', 'enum-ghost@localhost/res', 'enum-offline@localhost/res'];
    for (const [i, to] of targets.entries()) {
      for (const type of ['chat', 'normal', 'headline', 'groupchat']) s.write(`<message to='${to}' type='${type}' id='e-${i}-${type}'><body>hello</body></message>`);
    }
    // enum-full's storage (3 messages) fills up; a stranger learns nothing from that either.
    for (let i = 0; i < 5; i++) s.write(`<message to='enum-full@localhost' type='chat' id='full-${i}'><body>m${i}</body></message>`);
    await roundTrip(s);
    const errors = [...s.text.matchAll(/<message[^>]*type='error'[^>]*id='([^']*)'|<message[^>]*id='([^']*)'[^>]*type='error'/g)].map((m) => m[1] ?? m[2]);
    // Group chat is refused alike for every recipient (there is none here); nothing else is answered.
    assert.deepEqual(errors.sort(), targets.map((_, i) => `e-${i}-groupchat`).sort());
    assert.equal(await engine.store.countOfflineMessages('enum-full@localhost'), 3);
    assert.equal(await engine.store.countOfflineMessages('enum-ghost@localhost'), 0);
    // A contact who may see enum-full's presence knows the account exists, and is told storage is full.
    const friend = await login('enum-friend', 'f');
    friend.write(`<message to='enum-full@localhost' type='chat' id='friend-full'><body>hi</body></message>`);
    await friend.waitFor(/<message[^>]*id='friend-full'[^>]*type='error'|<message[^>]*type='error'[^>]*id='friend-full'/, 'storage full for a contact');
  });

  test('finding 12: without stream management each offline message is deleted as it is written, not per batch', async () => {
    const store = t.server.engine.store;
    await t.createAccount('offl-plain@localhost');
    const total = 150;
    // Messages of 64 KB: the first hundred alone (6.4 MB) are more than loopback's socket buffers take.
    const body = 'x'.repeat(64 * 1024);
    for (let i = 0; i < total; i++) {
      await store.addOfflineMessage({ to: 'offl-plain@localhost', from: 'someone@localhost/x', xml: `<message xmlns='jabber:client' from='someone@localhost/x' to='offl-plain@localhost' type='chat' id='o-${i}'><body>${body}</body></message>`, at: Date.now() });
    }
    const c = await login('offl-plain', 'p');
    c.socket.pause();
    c.write('<presence/>');
    // The client reads nothing: the rows of the messages the kernel took are gone one by one, the
    // rest stay. Polled, as the store has no event to wait for.
    const deadline = Date.now() + 20_000;
    let left = total;
    while (Date.now() < deadline) {
      left = await store.countOfflineMessages('offl-plain@localhost');
      if (left < total && left > 0) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.ok(left < total && left > 0, `rows left while the client does not read: ${left}`);
    c.close();
    await c.closed;
    const afterClose = await store.countOfflineMessages('offl-plain@localhost');
    // Reconnecting gets exactly the rows still stored, in order, and nothing twice.
    const again = await login('offl-plain', 'p2');
    const ids: number[] = [];
    let rest = '';
    again.socket.removeAllListeners('data');
    const last = new Promise<void>((resolve) => {
      again.socket.on('data', (d: string) => {
        rest += d;
        for (const m of rest.matchAll(/<message[^>]*id='o-(\d+)'/g)) ids.push(Number(m[1]));
        // Keep only what may hold the start of a message tag not yet complete.
        const cut = rest.lastIndexOf('<message');
        rest = cut >= 0 && rest.indexOf('>', cut) < 0 ? rest.slice(cut) : rest.slice(-20);
        if (ids.includes(total - 1)) resolve();
      });
    });
    again.write('<presence/>');
    await last;
    assert.equal(ids.length, afterClose);
    assert.deepEqual(ids, Array.from({ length: afterClose }, (_, i) => total - afterClose + i));
    assert.equal(await store.countOfflineMessages('offl-plain@localhost'), 0);
  });

  test('finding 12: with stream management a row is deleted only once the client acknowledged its message', async () => {
    const store = t.server.engine.store;
    await t.createAccount('offl-sm@localhost');
    for (let i = 0; i < 10; i++) {
      await store.addOfflineMessage({ to: 'offl-sm@localhost', from: 'someone@localhost/x', xml: `<message xmlns='jabber:client' from='someone@localhost/x' to='offl-sm@localhost' type='chat' id='s-${i}'><body>m${i}</body></message>`, at: Date.now() });
    }
    const c = await login('offl-sm', 'sm');
    c.write(`<enable xmlns='urn:xmpp:sm:3'/>`);
    await c.waitFor(/<enabled/);
    c.write('<presence/>');
    await c.waitFor(/id='s-9'/, 'all ten messages');
    await roundTrip(c);
    // Stanzas received since enable: the presence echo, then the ten messages.
    const before = c.text.slice(0, c.text.indexOf("id='s-0'"));
    const echoes = (before.slice(before.indexOf('<enabled')).match(/<presence/g) ?? []).length;
    assert.equal(await store.countOfflineMessages('offl-sm@localhost'), 10, 'nothing deleted before an ack');
    c.write(`<a xmlns='urn:xmpp:sm:3' h='${echoes + 4}'/>`);
    await roundTrip(c);
    assert.equal(await store.countOfflineMessages('offl-sm@localhost'), 6, 'exactly the four acknowledged ones deleted');
    // The stream ends (not resumable): the six unacknowledged ones are still stored once, not twice.
    c.write('</stream:stream>');
    await c.closed;
    const again = await login('offl-sm', 'sm2');
    again.write('<presence/>');
    await again.waitFor(/id='s-9'/, 'the rest');
    await roundTrip(again);
    const ids = [...again.text.matchAll(/<message[^>]*id='s-(\d+)'/g)].map((m) => Number(m[1]));
    assert.deepEqual(ids, [4, 5, 6, 7, 8, 9]);
  });

  test('finding 9: a client that floods disco requests and reads nothing is cut off, and server memory stays bounded', { timeout: 60_000 }, async () => {
    await t.createAccount('flooder@localhost');
    const c = await login('flooder', 'f');
    c.socket.pause();
    global.gc?.();
    const baseline = process.memoryUsage();
    let peakRss = baseline.rss;
    let peakHeap = baseline.heapUsed;
    const sample = setInterval(() => {
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss);
      peakHeap = Math.max(peakHeap, m.heapUsed);
    }, 20);
    const req = `<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`.repeat(100);
    let written = 0;
    // Writes 11 MB, respecting our own socket's backpressure so the test's memory stays flat.
    while (written < 11 * 1024 * 1024 && !c.socket.destroyed) {
      if (!c.socket.write(req)) {
        const open = await Promise.race([new Promise<boolean>((r) => c.socket.once('drain', () => r(true))), c.closed.then(() => false)]);
        if (!open) break;
      }
      written += req.length;
    }
    await c.closed;
    clearInterval(sample);
    const grewRss = (peakRss - baseline.rss) / 1024 / 1024;
    const grewHeap = (peakHeap - baseline.heapUsed) / 1024 / 1024;
    assert.ok(grewHeap < 50, `heap grew ${grewHeap.toFixed(1)} MB`);
    assert.ok(grewRss < 100, `rss grew ${grewRss.toFixed(1)} MB`);
    // The server stayed healthy.
    const other = await login('flooder', 'g');
    await roundTrip(other);
  });

  test('finding 11: one client pipelining 12 MB does not hold up another session', async () => {
    // A server of its own with the default output limits: this describe's tight ones (64 KB, 1 s) are
    // for clients that never read, and the piper, reading in this same process, cannot always drain
    // 64 KB within a second of the server's answers on a slower machine.
    const t11 = await startTestServer({ xmpp_port: 0, xmpp_require_tls: false });
    after(() => t11.destroy());
    const login11 = async (user: string, resource: string): Promise<RawXmpp> => {
      await t11.createAccount(`${user}@localhost`, PW);
      const r = await RawXmpp.open(t11.server.xmppPort as number);
      raws.push(r);
      await r.loginPlain(user, PW, resource);
      return r;
    };
    const pipe = await login11('piper', 'p');
    const by = await login11('bystander', 'b');
    // The piper reads its answers but keeps only a tail, to find the last one.
    let tail = '';
    pipe.socket.removeAllListeners('data');
    pipe.socket.on('data', (d: string) => {
      tail = (tail + d).slice(-200);
    });
    const gotLast = new Promise<number>((resolve) => {
      pipe.socket.on('data', () => {
        if (tail.includes("id='last'")) resolve(performance.now());
      });
    });
    const one = `<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`;
    const block = one.repeat(Math.ceil((12 * 1024 * 1024) / one.length / 100));
    const loop = monitorEventLoopDelay({ resolution: 10 });
    loop.enable();
    const start = performance.now();
    for (let i = 0; i < 100; i++) pipe.socket.write(block);
    pipe.socket.write(`<iq type='get' id='last' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>`);
    let done = false;
    void gotLast.then(() => {
      done = true;
    });
    // If the server cut the piper (its output backed up past xmpp_output_timeout_ms), its last answer
    // never comes: stop measuring and fail saying so, instead of looping for ever.
    let cut = false;
    void pipe.closed.then(() => {
      cut = true;
      done = true;
    });
    const rtts: number[] = [];
    while (!done) {
      const t0 = performance.now();
      await roundTrip(by);
      rtts.push(performance.now() - t0);
    }
    assert.equal(cut && !tail.includes("id='last'"), false, `the piper was disconnected before its last answer (tail: ${tail.slice(-120)})`);
    const burst = (await gotLast) - start;
    loop.disable();
    rtts.sort((a, b) => a - b);
    const median = rtts[Math.floor(rtts.length / 2)] as number;
    const worst = rtts[rtts.length - 1] as number;
    const what = `bystander round trips during a ${burst.toFixed(0)} ms burst: ${rtts.length}, median ${median.toFixed(1)} ms, worst ${worst.toFixed(0)} ms; loop delay max ${(loop.max / 1e6).toFixed(0)} ms`;
    // Relative to the burst itself: the bystander is served between slices of the burst, not after it.
    // Measured here: before input was sliced, median about burst/45 and worst about burst/10; after,
    // median about burst/220 and worst about burst/60.
    assert.ok(median < burst / 100, what);
    assert.ok(worst < burst / 20, what);
  });
});
