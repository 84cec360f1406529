import type { FeatureStorage } from '../../ports/store.js';
import type { PushMessage } from './providers/provider.js';
import { SqlPushRepository } from './sql-repository.js';

/** Where a registration came from: the native protocol's push.register, or XMPP (XEP-0357 enable, a push component's register-device). */
export type RegistrationSource = 'native' | 'xmpp';

export interface WebPushKeys {
  readonly p256dh: string;
  readonly auth: string;
}

/** One device that can be woken, as stored. */
export interface Registration {
  readonly id: string;
  /** Bare JID of the account the device belongs to. */
  readonly account: string;
  /** A key of push_providers. */
  readonly provider: string;
  readonly token: string;
  readonly secondToken: string | null;
  readonly keys: WebPushKeys | null;
  /** The resource the registration was made from (the device's session), or null when unknown. */
  readonly resource: string | null;
  readonly source: RegistrationSource;
  /** XEP-0357 node: random and unique, what an XMPP client names in `enable`. */
  readonly node: string;
  /** XEP-0357: the push service's JID the registration was enabled with. */
  readonly xmppJid: string | null;
  /** Tigase's `away='true'`: also push while every resource is away. */
  readonly away: boolean;
  /** XEP-0357 publish-options (a flat field map), kept for the XMPP side. */
  readonly options: Readonly<Record<string, string>> | null;
  readonly createdAt: number;
  readonly updatedAt: number;
  /** Consecutive failed pushes (reset by a successful one). */
  readonly failures: number;
  readonly lastError: string | null;
  /** The last successful push, to the minute (a device pushed again within a minute keeps the earlier time). */
  readonly lastSuccessAt: number | null;
  /** Set once `failures` reached push_max_failures: nothing is sent to it until it is registered again. */
  readonly disabledAt: number | null;
  readonly disabledReason: string | null;
}

export interface NewRegistration {
  readonly account: string;
  readonly provider: string;
  readonly token: string;
  readonly secondToken?: string | null;
  readonly keys?: WebPushKeys | null;
  readonly resource?: string | null;
  readonly source: RegistrationSource;
  readonly xmppJid?: string | null;
  readonly away?: boolean;
  readonly options?: Readonly<Record<string, string>> | null;
  /** XMPP: reuse this node (an `enable` naming a node a register-device handed out); otherwise a new random one. */
  readonly node?: string;
}

/** What unregister removes: one registration by id, by token, or by XEP-0357 node (of the account only). */
export type RegistrationKey = { readonly id: string } | { readonly token: string } | { readonly node: string };

/** One push in the queue as the worker takes it. */
export interface QueuedPush {
  readonly rowId: number;
  readonly pushId: string;
  readonly registrationId: string;
  readonly account: string;
  readonly trigger: string;
  readonly message: PushMessage;
  /** Attempts made before this one. */
  readonly attempts: number;
}

export interface NewPush {
  readonly registrationId: string;
  readonly account: string;
  readonly trigger: string;
  readonly message: PushMessage;
  readonly pushId: string;
  /**
   * The collapse key was made for this push (a notify's own): nothing waiting can have it, so there is
   * nothing to coalesce with and the push is simply inserted.
   */
  readonly freshCollapseKey?: boolean;
}

export interface PushRepositoryOptions {
  /**
   * Keep the registrations of up to this many recently pushed accounts in memory for `targets` and
   * `registrationsOf` (0, the default: none). Only where this process is the database's only writer
   * of registrations: not in a cluster.
   */
  readonly cacheAccounts?: number;
}

/** What a worker claims: claimDue's arguments. */
export interface ClaimRequest {
  readonly worker: string;
  readonly now: number;
  readonly leaseMs: number;
  readonly limit: number;
  readonly exclude: readonly string[];
  readonly sent: readonly QueuedPush[];
}

/**
 * A worker's claim that rides in the transaction writing queued pushes, after them: the pushes just
 * queued are leased at once, and the pushes sent meanwhile leave the queue, with one commit for all
 * (at a steady trickle each push otherwise took a commit to queue and another to lease).
 */
export interface ClaimRider {
  /** Called inside the transaction once its pushes are written: what to claim, or null (nothing now). */
  request(): ClaimRequest | null;
  /** After the transaction, when request() gave a claim: the pushes leased, or what undid the transaction. */
  done(result: { readonly claimed: QueuedPush[] } | { readonly error: unknown }): void;
}

export class TooManyRegistrations extends Error {}

/** The push feature's storage port: registrations and the durable queue, one implementation per dialect. */
export interface PushRepository {
  /**
   * Stores a registration. The same (provider, token) registered again replaces its row (for whichever
   * account held it: the device changed hands, its old account's waiting pushes are dropped), and a
   * native registration from the same resource and provider replaces that device's older token. A new
   * row beyond `max` per account throws TooManyRegistrations. Re-registering re-enables.
   */
  register(r: NewRegistration, max: number, now: number): Promise<{ readonly registration: Registration; readonly replaced: boolean }>;
  /** Removes the account's registrations matching `key`, with their waiting pushes; how many. */
  unregister(account: string, key: RegistrationKey): Promise<number>;
  list(account: string): Promise<Registration[]>;
  /**
   * The account's registrations as the push path needs them (the policy, the triggers): what `list`
   * gives, possibly from memory (see PushRepositoryOptions.cacheAccounts), where the counters
   * (`lastSuccessAt`) may lag behind the table. Not to be changed by the caller.
   */
  targets(account: string): Promise<readonly Registration[]>;
  /** The registrations of these queued pushes that exist, as `targets` gives them (for the worker). */
  registrationsOf(pushes: readonly { readonly registrationId: string; readonly account: string }[]): Promise<Registration[]>;
  get(id: string): Promise<Registration | undefined>;
  byNode(node: string): Promise<Registration | undefined>;
  /** Changes the XMPP-side fields of a registration (XEP-0357 enable again: away, options, jid). */
  updateXmpp(id: string, change: { readonly away?: boolean; readonly options?: Readonly<Record<string, string>> | null; readonly xmppJid?: string | null; readonly resource?: string | null }, now: number): Promise<Registration | undefined>;
  /** Every registration of the account, and its queue, goes (account deleted); how many. */
  removeAccount(account: string): Promise<number>;
  accounts(): Promise<string[]>;

  /**
   * Writes pushes in one transaction (which may also hold other callers' pushes written at the same
   * moment); resolves once they are committed. Coalescing: a push waiting (not being sent) for the same
   * registration and collapse key is replaced by the newer one, keeping its place and push id.
   */
  enqueue(pushes: readonly NewPush[], now: number): Promise<void>;
  /** The claim to make in each enqueue's transaction from now on (null: none). */
  setClaimRider(rider: ClaimRider | null): void;
  /**
   * Leases up to `limit` due pushes, each the oldest waiting push of its registration (so a device's
   * pushes go one at a time and in order, and none overtakes one backing off), none of `exclude`'s
   * registrations. A leased push is not due again before its lease ends: after a crash it comes back
   * then, and not sooner. `sent`, first and in the same transaction: pushes sent, as `sent()`.
   */
  claimDue(worker: string, now: number, leaseMs: number, limit: number, exclude: readonly string[], sent?: readonly QueuedPush[]): Promise<QueuedPush[]>;
  /** The earliest due time after `now` of a waiting push, or null: when the worker must look again at the latest. */
  nextDue(now: number): Promise<number | null>;
  /** The registrations with these ids that exist. */
  getMany(ids: readonly string[]): Promise<Registration[]>;
  /** Sent: the pushes leave the queue, their registrations' failures reset; one transaction for all. */
  sent(pushes: readonly QueuedPush[], now: number): Promise<void>;
  /** Another attempt later (the lease is given back); `counted` false for an attempt cut by shutdown. */
  retryLater(p: QueuedPush, dueAt: number, error: string, counted: boolean): Promise<void>;
  /**
   * The push is given up and counts as one failure of its registration, which is disabled once its
   * consecutive failures reach `maxFailures`. Resolves with the registration's state afterwards.
   */
  failed(p: QueuedPush, error: string, maxFailures: number, now: number): Promise<{ readonly failures: number; readonly disabled: boolean }>;
  /** The push is dropped without counting against the registration (provider no longer configured, registration gone). */
  drop(rowId: number): Promise<void>;
  /** The token is dead: the registration and its queue go. */
  prune(registrationId: string): Promise<Registration | undefined>;
  pendingCount(): Promise<number>;
}

export function pushRepository(storage: FeatureStorage, opts: PushRepositoryOptions = {}): PushRepository {
  switch (storage.dialect) {
    case 'sqlite':
    case 'postgres':
      return new SqlPushRepository(storage.db, storage.dialect, opts);
  }
}
