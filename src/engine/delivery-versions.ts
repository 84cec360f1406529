import type { Delivery } from '../ports/bus.js';

type PresenceDelivery = Extract<Delivery, { kind: 'presence' }>;

/** Accounts whose last delivered version is remembered, per generation: races last milliseconds, not hours. */
const GENERATION = 50_000;

/**
 * In a cluster, two nodes can change one account at nearly the same time (a phone on one node, a
 * laptop on another) and each fans out the presence it computed; the two fan-outs travel separate
 * streams and may arrive in either order. Each carries the account's registry version, so a node keeps
 * the highest version of an account-level update it delivered per account and treats an older one as
 * stale: its account-level part is dropped (a watcher must end on the later presence), its per-resource
 * part still goes out as a resource-only update (XMPP shows each resource, and each resource's changes
 * come from one node, in order).
 */
export class DeliveryVersions {
  private cur = new Map<string, number>();
  private old = new Map<string, number>();
  private lastIn: PresenceDelivery | null = null;
  private lastOut: PresenceDelivery | null = null;

  /** The delivery to hand to local sessions: `d` itself, its resource-only form, or null (stale, nothing per resource). */
  admit(d: PresenceDelivery): PresenceDelivery | null {
    const v = d.version;
    // A resource-only update says nothing about the account: it neither goes stale nor makes an
    // account-level update of an earlier version stale (that one may still be the latest word on the account).
    if (v === undefined || d.resourceOnly) return d;
    const last = this.cur.get(d.from) ?? this.old.get(d.from);
    if (last === undefined || v >= last) {
      if (last !== v) this.remember(d.from, v);
      return d;
    }
    if (d.session === null) return null;
    // One object per stale delivery, so the protocols still encode it once for all its recipients.
    if (this.lastIn !== d) {
      this.lastIn = d;
      this.lastOut = { kind: 'presence', from: d.from, presence: d.presence, session: d.session, resourceOnly: true, version: v };
    }
    return this.lastOut;
  }

  /** After the live state was rebuilt (versions may have restarted): forget everything. */
  clear(): void {
    this.cur = new Map();
    this.old = new Map();
  }

  private remember(jid: string, v: number): void {
    this.cur.set(jid, v);
    if (this.cur.size >= GENERATION) {
      this.old = this.cur;
      this.cur = new Map();
    }
  }
}
