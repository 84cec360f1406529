/**
 * A minimal XMPP c2s client over plain TCP for the benchmarks: no XML parser (elements are found with
 * indexOf), so that thousands of clients fit in one generator process and the instrument costs little
 * next to the servers it measures. It negotiates (SASL PLAIN, SCRAM-SHA-1/256, XEP-0077 registration,
 * bind, session, roster, initial presence) and then hands every complete top-level element to a scanner.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { connect, type Socket } from 'node:net';

export type Mechanism = 'PLAIN' | 'SCRAM-SHA-1' | 'SCRAM-SHA-256';

/** The value of an attribute in an element's text, whichever quote the server used. */
export function attr(text: string, name: string): string | null {
  const end = text.indexOf('>');
  let i = text.indexOf(` ${name}=`);
  if (i < 0 || (end >= 0 && i > end)) return null;
  i += name.length + 2;
  const q = text[i];
  const close = text.indexOf(q as string, i + 1);
  return close < 0 ? null : text.slice(i + 1, close);
}

/** End (exclusive) of the element starting at `start`, or -1 when it is not complete yet. */
export function elementEnd(buf: string, start: number): number {
  let nameEnd = start + 1;
  while (nameEnd < buf.length) {
    const c = buf.charCodeAt(nameEnd);
    if (c === 32 || c === 62 || c === 47 || c === 10 || c === 9 || c === 13) break;
    nameEnd++;
  }
  const gt = buf.indexOf('>', nameEnd);
  if (gt < 0) return -1;
  if (buf.charCodeAt(gt - 1) === 47) return gt + 1;
  const close = buf.indexOf(`</${buf.slice(start + 1, nameEnd)}>`, gt);
  return close < 0 ? -1 : close + nameEnd - start + 2;
}

/**
 * Salted passwords by salt and iteration count: bench accounts share a password (and, where the bench
 * wrote them, a salt), so the generator derives each once, as a real client caches its own.
 */
const saltedCache = new Map<string, Buffer>();

function saltedPassword(algo: 'sha1' | 'sha256', password: string, salt: string, iterations: number): Buffer {
  const key = `${algo}/${salt}/${iterations}/${password}`;
  let salted = saltedCache.get(key);
  if (!salted) {
    salted = pbkdf2Sync(password, Buffer.from(salt, 'base64'), iterations, algo === 'sha1' ? 20 : 32, algo);
    saltedCache.set(key, salted);
  }
  return salted;
}

/** A bound stream's elements, one at a time; `now` is when the chunk holding it arrived (performance.now()). */
export type Scanner = (el: string, now: number) => void;

export class XmppWire {
  private readonly socket: Socket;
  private buf = '';
  private scanner: Scanner | null = null;
  private waiter: { names: string[]; resolve: (el: string) => void; reject: (e: Error) => void } | null = null;
  private closedResolve: (() => void) | null = null;
  private iqId = 0;
  closed = false;
  /** Why the connection ended, if the server ended it (a stream error, a reset). */
  closeReason: string | null = null;

  constructor(
    readonly label: string,
    port: number,
    private readonly domain: string,
  ) {
    this.socket = connect(port, '127.0.0.1');
    this.socket.setNoDelay(true);
    this.socket.on('data', (d: Buffer) => this.onData(d.toString('utf8')));
    this.socket.on('error', (e) => {
      this.closeReason ??= e.message;
      this.fail(e);
    });
    this.socket.on('close', () => {
      this.closed = true;
      this.closeReason ??= 'connection closed';
      this.fail(new Error('connection closed'));
      this.closedResolve?.();
    });
  }

  send(text: string): void {
    if (!this.closed) this.socket.write(text);
  }

  private fail(e: Error): void {
    const w = this.waiter;
    this.waiter = null;
    w?.reject(new Error(`${this.label}: ${e.message}`));
  }

  /** The next top-level element named one of `names` (negotiation only). */
  next(names: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new Error(`${this.label}: connection closed (${this.closeReason})`));
      this.waiter = { names, resolve, reject };
      this.pump();
    });
  }

  private onData(chunk: string): void {
    this.buf = this.buf.length === 0 ? chunk : this.buf + chunk;
    if (this.scanner) this.scan(performance.now());
    else this.pump();
  }

  /** Negotiation: hands the waiter the first element it asked for, skipping the stream header. */
  private pump(): void {
    const w = this.waiter;
    if (!w) return;
    let pos = 0;
    for (;;) {
      const lt = this.buf.indexOf('<', pos);
      if (lt < 0) {
        this.buf = '';
        return;
      }
      if (this.buf.startsWith('<?xml', lt)) {
        const e = this.buf.indexOf('?>', lt);
        if (e < 0) break;
        pos = e + 2;
        continue;
      }
      if (this.buf.startsWith('<stream:stream', lt)) {
        const e = this.buf.indexOf('>', lt);
        if (e < 0) break;
        pos = e + 1;
        continue;
      }
      if (this.buf.startsWith('<stream:error', lt) || this.buf.startsWith('</stream:stream', lt)) {
        this.waiter = null;
        this.closeReason = this.buf.slice(lt, lt + 300);
        w.reject(new Error(`${this.label}: stream ended: ${this.closeReason}`));
        return;
      }
      const end = elementEnd(this.buf, lt);
      if (end < 0) break;
      const el = this.buf.slice(lt, end);
      pos = end;
      if (w.names.some((n) => el.startsWith(`<${n}`) && !/[\w:-]/.test(el.charAt(n.length + 1)))) {
        this.buf = this.buf.slice(pos);
        this.waiter = null;
        w.resolve(el);
        return;
      }
      // A ping during negotiation (a server sweeping a slow login) is answered, as a real client does.
      if (el.startsWith('<iq') && el.includes('urn:xmpp:ping')) this.answerPing(el);
    }
    this.buf = this.buf.slice(pos);
  }

  /** From here on incoming elements go to `scanner`, not to negotiation. */
  scanWith(scanner: Scanner): void {
    this.scanner = scanner;
    if (this.buf.length > 0) this.scan(performance.now());
  }

  private scan(now: number): void {
    const buf = this.buf;
    let pos = 0;
    for (;;) {
      const lt = buf.indexOf('<', pos);
      if (lt < 0) {
        pos = buf.length;
        break;
      }
      const end = elementEnd(buf, lt);
      if (end < 0) break;
      const el = buf.slice(lt, end);
      if (el.startsWith('<iq') && attr(el, 'type') === 'get' && el.includes('urn:xmpp:ping')) this.answerPing(el);
      else (this.scanner as Scanner)(el, now);
      pos = end;
    }
    this.buf = pos >= buf.length ? '' : buf.slice(pos);
  }

  private answerPing(el: string): void {
    const from = attr(el, 'from');
    this.send(`<iq type='result' id='${attr(el, 'id')}'${from !== null ? ` to='${from}'` : ''}/>`);
  }

  async iq(type: 'get' | 'set', payload: string): Promise<string> {
    const id = `q${++this.iqId}`;
    this.send(`<iq type='${type}' id='${id}'>${payload}</iq>`);
    for (;;) {
      const el = await this.next(['iq']);
      if (attr(el, 'id') === id) return el;
    }
  }

  /** Opens (or restarts) the stream; resolves with the stream features. */
  startStream(): Promise<string> {
    this.send(
      `<?xml version='1.0'?><stream:stream to='${this.domain}' xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>`,
    );
    return this.next(['stream:features']);
  }

  /** XEP-0077 in-band registration on the current (unauthenticated) stream; an existing account is fine. */
  async register(user: string, password: string): Promise<void> {
    const r = await this.iq('set', `<query xmlns='jabber:iq:register'><username>${user}</username><password>${password}</password></query>`);
    if (attr(r, 'type') !== 'result' && !r.includes('<conflict')) throw new Error(`${this.label}: registration of ${user} failed: ${r.slice(0, 300)}`);
  }

  /** SASL with `mechanism` on a stream whose features were `features`; rejects unless it succeeds. */
  async authenticate(features: string, mechanism: Mechanism, user: string, password: string): Promise<void> {
    if (!features.includes(`>${mechanism}<`)) throw new MechanismNotOffered(mechanism);
    if (mechanism === 'PLAIN') {
      const creds = Buffer.from(`\0${user}\0${password}`).toString('base64');
      this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>${creds}</auth>`);
    } else {
      await this.scram(mechanism === 'SCRAM-SHA-1' ? 'sha1' : 'sha256', mechanism, user, password);
    }
    const outcome = await this.next(['success', 'failure']);
    if (!outcome.startsWith('<success')) throw new Error(`${this.label}: authentication failed: ${outcome.slice(0, 300)}`);
  }

  private async scram(algo: 'sha1' | 'sha256', mechanism: Mechanism, user: string, password: string): Promise<void> {
    const nonce = randomBytes(12).toString('base64');
    const first = `n=${user},r=${nonce}`;
    this.send(`<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='${mechanism}'>${Buffer.from(`n,,${first}`).toString('base64')}</auth>`);
    const ch = await this.next(['challenge', 'failure']);
    if (!ch.startsWith('<challenge')) throw new Error(`${this.label}: SCRAM refused: ${ch.slice(0, 300)}`);
    const serverFirst = Buffer.from(ch.slice(ch.indexOf('>') + 1, ch.lastIndexOf('<')), 'base64').toString();
    const fields = new Map(serverFirst.split(',').map((f) => [f.slice(0, 1), f.slice(2)] as const));
    const salted = saltedPassword(algo, password, fields.get('s') ?? '', Number(fields.get('i')));
    const withoutProof = `c=biws,r=${fields.get('r') ?? ''}`;
    const authMessage = `${first},${serverFirst},${withoutProof}`;
    const clientKey = createHmac(algo, salted).update('Client Key').digest();
    const signature = createHmac(algo, createHash(algo).update(clientKey).digest()).update(authMessage).digest();
    for (let i = 0; i < clientKey.length; i++) clientKey[i] = (clientKey[i] as number) ^ (signature[i] as number);
    const final = `${withoutProof},p=${clientKey.toString('base64')}`;
    this.send(`<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>${Buffer.from(final).toString('base64')}</response>`);
  }

  /**
   * After authentication: restart, bind `resource`, the session if offered, the roster, and initial
   * presence with `status`. Resolves with the roster result once the server echoed the presence to this
   * resource (RFC 6121 §4.2.2): the server has taken the session online.
   */
  async bindAndAnnounce(resource: string, status: string, ownJid: string): Promise<string> {
    const features = await this.startStream();
    const bind = await this.iq('set', `<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>${resource}</resource></bind>`);
    if (attr(bind, 'type') !== 'result') throw new Error(`${this.label}: bind failed: ${bind.slice(0, 300)}`);
    if (features.includes('urn:ietf:params:xml:ns:xmpp-session')) {
      const s = await this.iq('set', `<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>`);
      if (attr(s, 'type') !== 'result') throw new Error(`${this.label}: session failed: ${s.slice(0, 300)}`);
    }
    const roster = await this.iq('get', `<query xmlns='jabber:iq:roster'/>`);
    this.send(`<presence><status>${status}</status></presence>`);
    const self = `${ownJid}/${resource}`;
    for (;;) {
      const p = await this.next(['presence']);
      if (attr(p, 'from') === self) return roster;
    }
  }

  /** Ends the stream and waits for the server to close the connection. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.closedResolve = resolve;
      this.scanner = null;
      this.send('</stream:stream>');
      this.socket.end();
    });
  }

  /** Drops the connection without a goodbye. */
  destroy(): void {
    this.socket.destroy();
  }
}

export class MechanismNotOffered extends Error {
  constructor(readonly mechanism: Mechanism) {
    super(`${mechanism} not offered`);
  }
}
