import type { Registration } from './repository.js';

/**
 * The registrations of recently pushed accounts, as the push path reads them: the policy at each
 * trigger and the worker for each push it leases (the token it sends to). Without it each push read
 * the account's rows twice. Bounded (least recently used out first).
 *
 * Kept true by the repository, which drops an account's entry whenever it changes one of its rows
 * (register, unregister, XMPP enable, a failure, a prune, the account removed). A read that was under
 * way when anything was dropped is not kept (`generation`): it may have read the rows before the change.
 * Only where this process is the only writer (not in a cluster: another node's writes would not drop
 * anything here).
 */
export class RegistrationCache {
  readonly #accounts = new Map<string, readonly Registration[]>();
  #generation = 0;

  constructor(readonly max: number) {}

  /** Changes whenever an entry is dropped: take it before a read, give it to `set` after. */
  get generation(): number {
    return this.#generation;
  }

  get(account: string): readonly Registration[] | undefined {
    const hit = this.#accounts.get(account);
    if (hit !== undefined) {
      // The Map's insertion order is the recency order.
      this.#accounts.delete(account);
      this.#accounts.set(account, hit);
    }
    return hit;
  }

  /** Keeps what a read found, unless something was dropped since `generation` was taken. */
  set(account: string, regs: readonly Registration[], generation: number): void {
    if (generation !== this.#generation || this.max <= 0) return;
    this.#accounts.delete(account);
    this.#accounts.set(account, regs);
    if (this.#accounts.size > this.max) {
      const oldest = this.#accounts.keys().next();
      if (!oldest.done) this.#accounts.delete(oldest.value);
    }
  }

  drop(account: string): void {
    this.#generation++;
    this.#accounts.delete(account);
  }

  /** A change whose accounts are not known. */
  clear(): void {
    this.#generation++;
    this.#accounts.clear();
  }

  get size(): number {
    return this.#accounts.size;
  }
}
