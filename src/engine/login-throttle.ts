import { isIPv6 } from 'node:net';
import { PresenceError } from '../core/errors.js';

/**
 * Slows down password guessing on every front door (XMPP SASL, native auth, HTTP Basic, token
 * issuance, the admin bearer token) without letting a guesser lock the real user out.
 *
 * Failed logins are counted per account and per source address. After `free` failures of a key, each
 * further failure makes that key wait before its next attempt: 1 s, 2 s, 4 s... up to `maxDelayMs`.
 * An attempt made while its key waits is refused at once (nothing is checked, nothing is counted), so a
 * guesser gets about one guess per `maxDelayMs` per key instead of thousands per second.
 *
 * "Slow down, do not lock": the account's wait applies only to addresses that have failed themselves
 * (recently). The real user, typing the right password from an address with no failures, passes even
 * while someone elsewhere hammers the account; a botnet gains one guess per address, then waits too.
 * Counts are forgotten `forgetMs` after a key's last failure; a success clears the account's count.
 *
 * Memory is bounded: each table keeps at most `maxEntries` keys, dropping the least recently failed.
 */
export interface LoginThrottleOptions {
  /** Failures of one account before it slows down. */
  readonly accountFree: number;
  /** Failures from one address before it slows down (larger: many users may share a NAT). */
  readonly addressFree: number;
  /** Longest wait imposed after a failure; 0 turns the throttle off. */
  readonly maxDelayMs: number;
  /** First wait; doubled at each further failure. */
  readonly baseDelayMs?: number;
  /** A key's count is forgotten this long after its last failure. */
  readonly forgetMs?: number;
  /** Keys kept per table (accounts, addresses). */
  readonly maxEntries?: number;
  readonly now?: () => number;
}

interface Entry {
  failures: number;
  last: number;
  /** Epoch ms before which this key's next attempt is refused. */
  until: number;
}

/** The answer to an attempt made too soon: PresenceError 'rate-limited' carrying when to retry. */
export class LoginThrottled extends PresenceError {
  constructor(readonly retryAfterMs: number) {
    super('rate-limited', `too many failed logins; try again in ${Math.ceil(retryAfterMs / 1000)} s`);
  }
  get retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(this.retryAfterMs / 1000));
  }
}

/**
 * The part of an address that identifies a client: an IPv4 address (IPv4-mapped IPv6 unwrapped), or
 * the /64 prefix of an IPv6 address, since one IPv6 host usually holds a whole /64. null when unknown.
 */
export function addressKey(address: string | null | undefined): string | null {
  if (address === undefined || address === null || address === '' || address === '?') return null;
  let a = address.toLowerCase();
  if (a.startsWith('::ffff:') && a.includes('.')) a = a.slice(7);
  // Without a colon it cannot be IPv6: isIPv6's long regular expression was a notable part of an admin API call.
  if (!a.includes(':') || !isIPv6(a)) return a;
  const [head = '', tail] = a.split('::') as [string, string | undefined];
  const h = head === '' ? [] : head.split(':');
  const t = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? h : [...h, ...new Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, '')).join(':')}::/64`;
}

/** The address part of a `host:port` string as transports print it (`[::1]:5222` or `::1:5222`). */
export function hostOf(remote: string): string {
  const m = /^\[(.*)\]:\d+$/.exec(remote);
  if (m) return m[1] as string;
  const colon = remote.lastIndexOf(':');
  return colon < 0 ? remote : remote.slice(0, colon);
}

class Table {
  private readonly entries = new Map<string, Entry>();
  constructor(
    private readonly free: number,
    private readonly maxEntries: number,
  ) {}

  get(key: string, now: number, forgetMs: number): Entry | undefined {
    const e = this.entries.get(key);
    if (e !== undefined && now - e.last > forgetMs) {
      this.entries.delete(key);
      return undefined;
    }
    return e;
  }

  fail(key: string, now: number, forgetMs: number, delay: (over: number) => number): void {
    const e = this.get(key, now, forgetMs) ?? { failures: 0, last: now, until: 0 };
    e.failures++;
    e.last = now;
    if (e.failures > this.free) e.until = now + delay(e.failures - this.free);
    // Re-inserted so the Map's order is least recently failed first, which is what is dropped when full.
    this.entries.delete(key);
    this.entries.set(key, e);
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
  }

  clear(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

export class LoginThrottle {
  /** Attempts refused, by front door (presenced_login_throttled_total). */
  readonly throttled = new Map<string, number>();
  private readonly accounts: Table;
  private readonly addresses: Table;
  private readonly base: number;
  private readonly forgetMs: number;
  private readonly now: () => number;

  constructor(
    private readonly opts: LoginThrottleOptions,
    /** Normalises the account as typed, so `Alice@Example` and `alice@example` share a count. */
    private readonly normalise: (account: string) => string = (a) => a.toLowerCase(),
  ) {
    const max = opts.maxEntries ?? 100_000;
    this.accounts = new Table(opts.accountFree, max);
    this.addresses = new Table(opts.addressFree, max);
    this.base = Math.min(opts.baseDelayMs ?? 1000, opts.maxDelayMs);
    this.forgetMs = opts.forgetMs ?? Math.max(15 * 60_000, 2 * opts.maxDelayMs);
    this.now = opts.now ?? Date.now;
  }

  get enabled(): boolean {
    return this.opts.maxDelayMs > 0;
  }

  /** Keys held, for tests of the memory bound. */
  get size(): { accounts: number; addresses: number } {
    return { accounts: this.accounts.size, addresses: this.addresses.size };
  }

  private key(account: unknown): string | null {
    if (typeof account !== 'string' || account === '') return null;
    return this.normalise(account.slice(0, 3071));
  }

  /**
   * Milliseconds before an attempt on `account` from `address` may be made, or 0 when it may be made
   * now. A refusal is counted for `door`.
   */
  wait(door: string, account: unknown, address: string | null): number {
    if (!this.enabled) return 0;
    const now = this.now();
    const addr = addressKey(address);
    const a = addr === null ? undefined : this.addresses.get(addr, now, this.forgetMs);
    let until = a?.until ?? 0;
    const acc = this.key(account);
    // The account's wait binds only addresses that have failed themselves (see the class comment).
    if (acc !== null && (a !== undefined || addr === null)) until = Math.max(until, this.accounts.get(acc, now, this.forgetMs)?.until ?? 0);
    if (until <= now) return 0;
    this.throttled.set(door, (this.throttled.get(door) ?? 0) + 1);
    return until - now;
  }

  /** Throws LoginThrottled when the attempt must wait (see wait()). */
  check(door: string, account: unknown, address: string | null): void {
    const ms = this.wait(door, account, address);
    if (ms > 0) throw new LoginThrottled(ms);
  }

  failed(account: unknown, address: string | null): void {
    if (!this.enabled) return;
    const now = this.now();
    const delay = (over: number): number => Math.min(this.opts.maxDelayMs, this.base * 2 ** Math.min(over - 1, 30));
    const addr = addressKey(address);
    if (addr !== null) this.addresses.fail(addr, now, this.forgetMs, delay);
    const acc = this.key(account);
    if (acc !== null) this.accounts.fail(acc, now, this.forgetMs, delay);
  }

  /**
   * A success clears the account's count only. The address keeps its own: otherwise a guesser with an
   * account of its own could log into it between guesses and stay forever "an address with no failures".
   */
  succeeded(account: unknown, _address: string | null): void {
    const acc = this.key(account);
    if (acc !== null) this.accounts.clear(acc);
  }

  /**
   * Runs one login attempt under the throttle: refused with LoginThrottled when it must wait, counted
   * as a failure when it rejects with 'auth-failed', clearing the counts when it succeeds.
   */
  async attempt<T>(door: string, account: unknown, address: string | null, login: () => Promise<T>): Promise<T> {
    this.check(door, account, address);
    let out: T;
    try {
      out = await login();
    } catch (e) {
      if (e instanceof PresenceError && e.code === 'auth-failed') this.failed(account, address);
      throw e;
    }
    this.succeeded(account, address);
    return out;
  }
}
