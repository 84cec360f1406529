import type { Logger } from 'pino';
import type { Config } from '../../config.js';
import { PresenceError } from '../../core/errors.js';
import type { PresenceEngine } from '../../engine/engine.js';
import type { LiveSession } from '../../ports/bus.js';
import { randomId } from './ids.js';
import type { PushMessage, PushProvider } from './providers/provider.js';
import { TooManyRegistrations, type NewPush, type NewRegistration, type PushRepository, type Registration, type RegistrationKey } from './repository.js';

/** What a caller wants a push to say; the service fills in the defaults and applies the privacy settings. */
export interface PushContent {
  /** Messages waiting (XEP-0357 message-count); 0 for `clear`. Default 1 for `message`, 0 otherwise. */
  readonly count?: number;
  /** The sender's JID: kept only when push_include_sender is on. */
  readonly sender?: string;
  /** The message text: kept only when push_include_body is on (and never when `encrypted`); a `notify` body always goes. */
  readonly body?: string;
  readonly encrypted?: boolean;
  readonly title?: string;
  /** Default: `messages` for message and clear (a clear replaces a waiting message push); a fresh key per notify. */
  readonly collapseKey?: string;
  readonly urgency?: 'high' | 'normal';
  readonly ttlSeconds?: number;
  readonly data?: Readonly<Record<string, string>>;
}

export interface EnqueueOptions {
  readonly reason: PushMessage['reason'];
  /** A finer word for the log (e.g. `offline-message`, `away-message`, `sm-detached`); default: the reason. */
  readonly trigger?: string;
  /**
   * Only these registrations (ids) of the account, as chosen by the caller's own rule (XEP-0357 away,
   * stream management). Left out: the policy chooses (`devicesToWake`).
   */
  readonly onlyDevices?: readonly string[];
}

/**
 * Whether a session counts as active for the policy beyond being connected and available (e.g. XMPP
 * client state indication: an inactive client is not looking at the screen). false makes it inactive.
 */
export type ActivityRule = (account: string, resource: string) => boolean;

export interface NotificationInput {
  readonly title?: string;
  readonly body: string;
  readonly data?: Readonly<Record<string, string>>;
  readonly collapseKey?: string;
  readonly urgency?: 'high' | 'normal';
}

const ACTIVE_SHOWS: ReadonlySet<string> = new Set(['available', 'chat']);

/**
 * The account's sessions whose connection is up now, on every node: a session lingering after a lost
 * connection (grace period, stream management) is online but reaches no one. On this node the
 * connection itself tells; another node's sessions as the registry says (LiveSession.detached, which
 * that node writes a moment after it noticed the loss).
 */
export async function connectedSessions(engine: PresenceEngine, account: string): Promise<LiveSession[]> {
  const local = new Map(engine.localSessionsOf(account).map((s) => [s.resource, s]));
  return (await engine.sessionsOf(account)).filter((s) => (s.node === engine.bus.node ? local.get(s.resource)?.sink != null : s.detached !== true));
}

/**
 * Registrations, the policy (which devices a push should wake) and the entry to the durable queue.
 * What other parts of the server (XMPP triggers, extensions) call, through `pushOf(engine)`.
 */
export class PushService {
  readonly #rules: ActivityRule[] = [];

  constructor(
    readonly repo: PushRepository,
    readonly providers: ReadonlyMap<string, PushProvider>,
    private readonly engine: PresenceEngine,
    private readonly config: Pick<Config, 'push_max_registrations' | 'push_include_sender' | 'push_include_body' | 'push_ttl_s'>,
    private readonly log: Logger,
    private readonly written: () => void,
  ) {}

  /** Adds a rule that can make a connected, available session count as inactive (so its device is pushed). */
  addActivityRule(rule: ActivityRule): void {
    this.#rules.push(rule);
  }

  // ------------------------------------------------------------------ registrations

  /** Stores a registration (see PushRepository.register); a full account gets a not-allowed PresenceError. */
  async register(r: NewRegistration): Promise<{ readonly registration: Registration; readonly replaced: boolean }> {
    if (!this.providers.has(r.provider)) throw new PresenceError('bad-request', `unknown push provider "${r.provider}"`);
    try {
      const out = await this.repo.register(r, this.config.push_max_registrations, Date.now());
      this.log.info({ account: r.account, registration: out.registration.id, provider: r.provider, source: r.source, replaced: out.replaced }, 'push registration stored');
      return out;
    } catch (e) {
      if (e instanceof TooManyRegistrations) throw new PresenceError('not-allowed', e.message);
      throw e;
    }
  }

  async unregister(account: string, key: RegistrationKey): Promise<number> {
    const n = await this.repo.unregister(account, key);
    if (n > 0) this.log.info({ account, removed: n }, 'push registration removed');
    return n;
  }

  list(account: string): Promise<Registration[]> {
    return this.repo.list(account);
  }

  // ------------------------------------------------------------------ policy

  /**
   * The resources of the account whose session is active: connected now (not lingering after a lost
   * connection, not held detached by stream management), available, with show available or chat, and
   * not made inactive by an activity rule.
   */
  async activeResources(account: string): Promise<Set<string>> {
    const out = new Set<string>();
    for (const s of await connectedSessions(this.engine, account)) {
      if (!s.available || !ACTIVE_SHOWS.has(s.show)) continue;
      if (!this.#rules.every((rule) => rule(account, s.resource))) continue;
      out.add(s.resource);
    }
    return out;
  }

  /**
   * The policy: the account's enabled registrations whose device is not active. A registration
   * remembers the resource it was made from: it is pushed unless that resource's session is active. A
   * registration without a resource is pushed only when no session of the account is active.
   */
  async devicesToWake(account: string): Promise<Registration[]> {
    const regs = (await this.repo.targets(account)).filter((r) => r.disabledAt === null && this.providers.has(r.provider));
    if (regs.length === 0) return [];
    const active = await this.activeResources(account);
    return regs.filter((r) => (r.resource !== null ? !active.has(r.resource) : active.size === 0));
  }

  // ------------------------------------------------------------------ queue

  /** What a push carries once the privacy settings have had their say. */
  messageOf(content: PushContent, reason: PushMessage['reason'], pushId: string): PushMessage {
    const notify = reason === 'notify';
    const count = reason === 'clear' ? 0 : Math.max(0, Math.floor(content.count ?? (reason === 'message' ? 1 : 0)));
    const sender = reason === 'message' && this.config.push_include_sender ? content.sender : undefined;
    const body = notify ? content.body : reason === 'message' && this.config.push_include_body && content.encrypted !== true ? content.body : undefined;
    return {
      reason,
      count,
      ...(sender !== undefined ? { sender } : {}),
      ...(body !== undefined ? { body } : {}),
      ...(content.title !== undefined && reason !== 'clear' ? { title: content.title } : {}),
      collapseKey: content.collapseKey ?? (notify ? `notify-${pushId}` : 'messages'),
      urgency: content.urgency ?? (reason === 'clear' ? 'normal' : 'high'),
      ttlSeconds: content.ttlSeconds ?? this.config.push_ttl_s,
      ...(content.data !== undefined ? { data: content.data } : {}),
    };
  }

  /**
   * Queues a push for the account's devices (the policy's, or `onlyDevices`), durably: when this
   * resolves the pushes are written and survive a crash. Resolves with the registrations queued.
   */
  enqueue(account: string, content: PushContent, opts: EnqueueOptions): Promise<Registration[]> {
    // A notify without a collapse key gets one of its own (messageOf).
    return this.#enqueue(account, content, opts, opts.reason === 'notify' && content.collapseKey === undefined);
  }

  /** `fresh`: the collapse key is new, made for this push (nothing queued can have it). */
  async #enqueue(account: string, content: PushContent, opts: EnqueueOptions, fresh: boolean): Promise<Registration[]> {
    let targets: Registration[];
    if (opts.onlyDevices !== undefined) {
      const wanted = new Set(opts.onlyDevices);
      targets = (await this.repo.targets(account)).filter((r) => wanted.has(r.id) && r.disabledAt === null && this.providers.has(r.provider));
    } else targets = await this.devicesToWake(account);
    if (targets.length === 0) return [];
    const pushId = randomId('p_');
    const message = this.messageOf(content, opts.reason, pushId);
    const trigger = opts.trigger ?? opts.reason;
    const rows: NewPush[] = targets.map((r) => ({ registrationId: r.id, account, trigger, message, pushId, freshCollapseKey: fresh }));
    await this.repo.enqueue(rows, Date.now());
    this.log.info({ account, trigger, reason: opts.reason, push: pushId, devices: targets.map((r) => r.id) }, 'push queued');
    this.written();
    return targets;
  }

  /**
   * The notify API: the notification goes live to every connected session of the account (a native
   * `notification`, an XMPP headline message), and by push to the devices the policy picks.
   */
  async notify(account: string, n: NotificationInput): Promise<{ readonly id: string; readonly sessions: number; readonly pushed: readonly string[] }> {
    const id = randomId('n_');
    // Sessions that can take it now: a lingering session (connection lost, grace period) cannot.
    const sessions = (await connectedSessions(this.engine, account)).length;
    this.engine.bus.deliver(account, {
      kind: 'notification',
      id,
      ...(n.title !== undefined ? { title: n.title } : {}),
      body: n.body,
      ...(n.data !== undefined ? { data: n.data } : {}),
    });
    // Without the caller's collapse key the notification's own is fresh: nothing queued can share it.
    const pushed = await this.#enqueue(
      account,
      {
        ...(n.title !== undefined ? { title: n.title } : {}),
        body: n.body,
        data: { ...(n.data ?? {}), notification: id },
        collapseKey: n.collapseKey ?? `notify-${id}`,
        ...(n.urgency !== undefined ? { urgency: n.urgency } : {}),
      },
      { reason: 'notify' },
      n.collapseKey === undefined,
    );
    return { id, sessions, pushed: pushed.map((r) => r.id) };
  }
}
