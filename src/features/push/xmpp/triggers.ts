import type { Logger } from 'pino';
import type { PresenceEngine } from '../../../engine/engine.js';
import type { XmlElement } from '../../../protocols/xmpp/xml.js';
import type { XmppIqRegistry } from '../../registries.js';
import { connectedSessions, type PushContent, type PushService } from '../push-service.js';
import type { Registration } from '../repository.js';

/** Which XMPP triggers are on (push_xmpp_*). */
export interface TriggerSwitches {
  readonly offline: boolean;
  readonly away: boolean;
  readonly sm: boolean;
  readonly inactive: boolean;
  readonly clear: boolean;
}

/** Payloads that mark a message as end-to-end encrypted: its body (a fallback text) is never pushed. */
const ENCRYPTED: ReadonlyArray<readonly [string, string]> = [
  ['encrypted', 'eu.siacs.conversations.axolotl'], // OMEMO (XEP-0384, legacy namespace Conversations uses)
  ['encrypted', 'urn:xmpp:omemo:2'], // OMEMO 0.8+
  ['openpgp', 'urn:xmpp:openpgp:0'], // XEP-0373
  ['x', 'jabber:x:encrypted'], // XEP-0027
  ['encryption', 'urn:xmpp:eme:0'], // XEP-0380: the sender says the body is ciphertext or a hint
];

export function isEncrypted(m: XmlElement): boolean {
  return ENCRYPTED.some(([name, ns]) => m.child(name, ns) !== undefined);
}

/** Worth waking a device for: a body, or an encrypted payload (OMEMO may come without a fallback body). */
export function isPushable(m: XmlElement): boolean {
  const body = m.childText('body');
  return (body !== undefined && body.trim() !== '') || isEncrypted(m);
}

const AWAY_SHOWS: ReadonlySet<string> = new Set(['away', 'xa', 'dnd']);

function bare(jid: string): string {
  const slash = jid.indexOf('/');
  return slash >= 0 ? jid.slice(0, slash) : jid;
}

/**
 * The XMPP push triggers: the front door's hooks (a message stored offline, a message delivered, a
 * stream held for resumption, offline messages fetched) become pushes to the account's XEP-0357-enabled
 * devices. For one message each device is pushed at most once, by the first trigger that picks it, in
 * the order: held stream, inactive client, offline storage, away.
 */
export class XmppPushTriggers {
  constructor(
    private readonly service: PushService,
    private readonly engine: PresenceEngine,
    private readonly xmpp: Pick<XmppIqRegistry, 'sessions'>,
    private readonly on: TriggerSwitches,
    private readonly log: Logger,
  ) {}

  listen(hooks: XmppIqRegistry['hooks']): void {
    hooks.on('message.stored', (e) => this.run(e.to, () => this.stored(e.to, e.from, e.stanza)));
    hooks.on('message.delivered', (e) => this.run(e.to, () => this.delivered(e.to, e.from, e.stanza, e.resources)));
    hooks.on('stream.held', (e) => this.run(e.jid, () => this.held(e.jid, e.resource, e.messages)));
    hooks.on('offline.delivered', (e) => this.run(e.jid, () => this.fetched(e.jid, e.resource)));
  }

  /** Work still running (tests and shutdown wait for it). */
  readonly pending = new Set<Promise<void>>();

  /**
   * Accounts that may have an enabled XMPP registration: every account with a registration at start,
   * and each account that enables one since. Most messages go to accounts without push, and this
   * spares them a read of the registrations; an account that only ever loses its registrations stays
   * in the set, which costs it that read and nothing else. Null until loaded (at setup, before any
   * enable can be handled): then every message reads.
   */
  private mayHave: Set<string> | null = null;

  /**
   * Reads the accounts with a registration; again in a cluster after messages of other nodes (who
   * enabled push there) may have been missed. The set only grows, so an enable told meanwhile stays.
   */
  async load(): Promise<void> {
    const accounts = await this.service.repo.accounts();
    if (this.mayHave === null) this.mayHave = new Set(accounts);
    else for (const a of accounts) this.mayHave.add(a);
  }

  /** The account enabled an XMPP registration (XEP-0357 enable), here or on another node of the cluster. */
  enabledBy(account: string): void {
    this.mayHave?.add(account);
  }

  private run(account: string, fn: () => Promise<void>): void {
    const p = fn().catch((err: unknown) => this.log.error({ err, account }, 'xmpp push trigger failed'));
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  /** Registrations XEP-0357 `enable` turned on, that the core would send to. */
  private async enabled(account: string): Promise<Registration[]> {
    if (this.mayHave !== null && !this.mayHave.has(account)) return [];
    return (await this.service.repo.targets(account)).filter((r) => r.source === 'xmpp' && r.xmppJid !== null && r.disabledAt === null && this.service.providers.has(r.provider));
  }

  private content(m: XmlElement, from: string, count: number): PushContent {
    const body = m.childText('body');
    return { count, sender: bare(from), ...(body !== undefined ? { body } : {}), encrypted: isEncrypted(m) };
  }

  /** Queues one push per trigger group; `groups` in priority order, a device claimed once. */
  private async send(account: string, content: PushContent, groups: ReadonlyArray<readonly [string, readonly Registration[]]>): Promise<void> {
    const claimed = new Set<string>();
    for (const [trigger, regs] of groups) {
      const ids = regs.map((r) => r.id).filter((id) => !claimed.has(id));
      if (ids.length === 0) continue;
      for (const id of ids) claimed.add(id);
      await this.service.enqueue(account, content, { reason: 'message', trigger, onlyDevices: ids });
    }
  }

  private heldDevices(account: string, regs: readonly Registration[]): Registration[] {
    if (!this.on.sm) return [];
    const held = new Set(this.xmpp.sessions.heldResources(account));
    return held.size === 0 ? [] : regs.filter((r) => r.resource !== null && held.has(r.resource));
  }

  /** Trigger 1 (and 3 for held streams): nobody could take the message, it waits in offline storage. */
  private async stored(account: string, from: string, m: XmlElement): Promise<void> {
    if (!isPushable(m)) return;
    const regs = await this.enabled(account);
    if (regs.length === 0) return;
    let offline: Registration[] = [];
    if (this.on.offline) {
      const active = await this.service.activeResources(account);
      offline = regs.filter((r) => (r.resource !== null ? !active.has(r.resource) : active.size === 0));
    }
    const count = await this.engine.store.countOfflineMessages(account);
    await this.send(account, this.content(m, from, Math.max(1, count)), [
      ['sm-detached', this.heldDevices(account, regs)],
      ['offline-message', offline],
    ]);
  }

  /** Triggers 2 and 3, and inactive clients: the message went out live, to sessions that may not be looking. */
  private async delivered(account: string, from: string, m: XmlElement, resources: readonly string[]): Promise<void> {
    if (!isPushable(m)) return;
    const regs = await this.enabled(account);
    if (regs.length === 0) return;
    const inactive = this.on.inactive ? new Set(resources.filter((r) => this.xmpp.sessions.inactive(account, r))) : new Set<string>();
    const away = this.on.away && regs.some((r) => r.away) && (await this.allAway(account)) ? regs.filter((r) => r.away) : [];
    await this.send(account, this.content(m, from, 1), [
      ['sm-detached', this.heldDevices(account, regs)],
      ['csi-inactive', regs.filter((r) => r.resource !== null && inactive.has(r.resource))],
      ['away-message', away],
    ]);
  }

  /**
   * Tigase's away rule: every connected session of the account that is available shows away, xa or
   * dnd (chat and plain available count as present), whatever its priority; unavailable sessions and
   * lost connections waiting out their grace period do not count. With no such session at all the
   * message was stored offline, which is trigger 1's.
   */
  private async allAway(account: string): Promise<boolean> {
    const connected = (await connectedSessions(this.engine, account)).filter((s) => s.available);
    return connected.length > 0 && connected.every((s) => AWAY_SHOWS.has(s.show));
  }

  /** Trigger 3: a stream lost its connection with messages it never acknowledged; its device is woken to resume. */
  private async held(account: string, resource: string, messages: readonly XmlElement[]): Promise<void> {
    if (!this.on.sm) return;
    const wanted = messages.filter(isPushable);
    const last = wanted[wanted.length - 1];
    if (last === undefined) return;
    const regs = (await this.enabled(account)).filter((r) => r.resource === resource);
    await this.send(account, this.content(last, last.attr('from') ?? '', wanted.length), [['sm-detached', regs]]);
  }

  /** Trigger 4: the offline messages were fetched; the account's other devices clear their badge. */
  private async fetched(account: string, resource: string): Promise<void> {
    if (!this.on.clear) return;
    const regs = (await this.enabled(account)).filter((r) => r.resource !== resource);
    if (regs.length === 0) return;
    await this.service.enqueue(account, { count: 0 }, { reason: 'clear', trigger: 'offline-fetched', onlyDevices: regs.map((r) => r.id) });
  }
}
