import type { LiveSession } from '../../ports/bus.js';

interface Held {
  readonly v: number;
  readonly sessions: readonly LiveSession[];
}

/** Remembered versions of accounts that went offline, per generation (see forget()). */
const GONE_GENERATION = 20_000;

/**
 * This node's replica of the whole session registry, kept current by the feed: every node answers
 * "which sessions does this account have, and on which nodes" from memory, so a fan-out to N contacts
 * costs no Redis round trip at all (docs/cluster.md, "Live state and routing on Redis").
 *
 * Changes of one account reach every node in version order (each is published by the script that made
 * it); versions are compared only when a snapshot and the feed messages buffered while it was read are
 * merged, or when a change made here while Redis was unreachable is patched in (version unchanged).
 */
export class RegistryMirror {
  private readonly held = new Map<string, Held>();
  /** Versions of accounts recently left without sessions, so an older message cannot bring them back. */
  private gone = new Map<string, number>();
  private goneOld = new Map<string, number>();
  private sessionCount = 0;

  get(jid: string): readonly LiveSession[] | undefined {
    return this.held.get(jid)?.sessions;
  }

  version(jid: string): number {
    return this.held.get(jid)?.v ?? this.gone.get(jid) ?? this.goneOld.get(jid) ?? 0;
  }

  /** Sets the account's sessions at version `v` unless the mirror already holds that version or a later one. */
  apply(jid: string, v: number, sessions: readonly LiveSession[]): boolean {
    if (v <= this.version(jid)) return false;
    this.set(jid, v, sessions);
    return true;
  }

  /** A change made here while the registry could not be written: same version, until the resync replaces it. */
  patch(jid: string, sessions: readonly LiveSession[]): void {
    this.set(jid, this.version(jid), sessions);
  }

  private set(jid: string, v: number, sessions: readonly LiveSession[]): void {
    const before = this.held.get(jid);
    this.sessionCount += sessions.length - (before?.sessions.length ?? 0);
    if (sessions.length > 0) {
      this.held.set(jid, { v, sessions });
      return;
    }
    this.held.delete(jid);
    this.gone.set(jid, v);
    if (this.gone.size >= GONE_GENERATION) {
      this.goneOld = this.gone;
      this.gone = new Map();
    }
  }

  /**
   * Replaces everything by a snapshot read from Redis (start, reconnect). Versions may go back (Redis
   * restarted from an older dump, or empty), so the snapshot wins whatever the mirror held. Returns the
   * accounts whose sessions differ from before.
   */
  replaceAll(snapshot: ReadonlyMap<string, Held>): Set<string> {
    const changed = new Set<string>();
    for (const [jid, h] of this.held) {
      const next = snapshot.get(jid);
      if (next === undefined || !sameSessions(h.sessions, next.sessions)) changed.add(jid);
    }
    for (const [jid, h] of snapshot) {
      const before = this.held.get(jid);
      if (before === undefined && h.sessions.length > 0) changed.add(jid);
    }
    this.held.clear();
    this.gone = new Map();
    this.goneOld = new Map();
    this.sessionCount = 0;
    for (const [jid, h] of snapshot) {
      if (h.sessions.length === 0) continue;
      this.held.set(jid, h);
      this.sessionCount += h.sessions.length;
    }
    return changed;
  }

  forEach(fn: (jid: string, sessions: readonly LiveSession[]) => void): void {
    for (const [jid, h] of this.held) fn(jid, h.sessions);
  }

  counts(): { sessions: number; accounts: number } {
    return { sessions: this.sessionCount, accounts: this.held.size };
  }
}

function sameSessions(a: readonly LiveSession[], b: readonly LiveSession[]): boolean {
  if (a.length !== b.length) return false;
  const key = (s: LiveSession): string => JSON.stringify([s.resource, s.node, s.available, s.show, s.status, s.priority, s.lastActive, s.protocol, s.detached === true]);
  const set = new Set(a.map(key));
  return b.every((s) => set.has(key(s)));
}
