import type { Kysely } from 'kysely';
import type { AccountPresence, SessionPresence } from '../../core/presence.js';
import { compareSessions } from '../../core/presence.js';
import { PresenceError } from '../../core/errors.js';
import { isXmlSafeText } from '../../core/text.js';
import type { SubState } from '../../core/subscription-state.js';
import type { PresenceEngine } from '../../engine/engine.js';
import type { LiveSession } from '../../ports/bus.js';
import { pushOf } from '../push/push-feature.js';
import { NOTIFY_LIMITS } from '../push/notify-routes.js';

/**
 * What an extension's context calls do on the server side. Every argument comes from the extension's
 * worker and is checked here as untrusted input; answers are plain data (they cross by structured clone).
 */

export const KV_LIMITS = { key: 256, valueBytes: 64 * 1024, list: 1000 } as const;

function str(v: unknown, what: string, max: number): string {
  if (typeof v !== 'string' || v === '' || v.length > max) throw new PresenceError('bad-request', `${what} must be a non-empty string of at most ${max} characters`);
  return v;
}

export function sessionInfo(s: SessionPresence & { protocol?: string }, protocol?: string) {
  return { resource: s.resource, protocol: protocol ?? s.protocol ?? 'unknown', available: s.available, show: s.show, status: s.status, priority: s.priority, lastActive: s.lastActive };
}

export function subscriptionInfo(s: SubState | null) {
  return s === null ? null : { to: s.to, from: s.from, pendingOut: s.pendingOut, pendingIn: s.pendingIn };
}

/** The user as an extension sees it (PresenceUser of @presenced/extension-api). */
export async function userOf(engine: PresenceEngine, jid: string, presence?: AccountPresence) {
  const p = presence ?? (await engine.presenceOf(jid));
  const sessions: LiveSession[] = [...(await engine.sessionsOf(jid))].sort(compareSessions);
  const push = pushOf(engine);
  const regs = push ? await push.service.list(jid) : [];
  return {
    jid,
    online: p.online,
    show: p.show,
    status: p.status,
    sessions: sessions.map((s) => sessionInfo(s)),
    externalTokens: regs.map((r) => ({
      id: r.id,
      provider: r.provider,
      type: push?.providers.get(r.provider)?.type ?? null,
      resource: r.resource,
      enabled: r.disabledAt === null,
      createdAt: r.createdAt,
    })),
    lastSeen: p.lastSeen,
  };
}

function stringMap(v: unknown, what: string): Record<string, string> | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new PresenceError('bad-request', `${what} must be an object of strings`);
  const out: Record<string, string> = {};
  const entries = Object.entries(v);
  if (entries.length > NOTIFY_LIMITS.dataKeys) throw new PresenceError('bad-request', `${what} takes at most ${NOTIFY_LIMITS.dataKeys} keys`);
  for (const [k, x] of entries) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(k)) throw new PresenceError('bad-request', `${what}: key "${k.slice(0, 64)}" must be letters, digits, _ . -`);
    out[k] = str(x, `${what}.${k}`, NOTIFY_LIMITS.dataValue);
  }
  return out;
}

export interface ContextDeps {
  readonly engine: PresenceEngine;
  readonly db: Kysely<any>;
}

/** Runs one context call of extension `name`. */
export async function contextCall(deps: ContextDeps, name: string, op: string, raw: unknown): Promise<unknown> {
  const a = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const { engine, db } = deps;
  const account = async (): Promise<string> => {
    const jid = engine.localJid(str(a.jid, 'jid', 3071));
    if (!(await engine.accountExists(jid))) throw new PresenceError('not-found', `no account ${jid}`);
    return jid;
  };
  switch (op) {
    case 'kv.get': {
      const row = await db.selectFrom('extension_kv').select('value').where('extension', '=', name).where('key', '=', str(a.key, 'key', KV_LIMITS.key)).executeTakeFirst();
      return row === undefined ? undefined : JSON.parse(row.value as string);
    }
    case 'kv.set': {
      const key = str(a.key, 'key', KV_LIMITS.key);
      if (a.value === undefined) throw new PresenceError('bad-request', 'kv.set needs a value (use kv.delete to remove a key)');
      const value = JSON.stringify(a.value);
      if (value === undefined || Buffer.byteLength(value) > KV_LIMITS.valueBytes) throw new PresenceError('bad-request', `kv.set: the value must be JSON of at most ${KV_LIMITS.valueBytes} bytes`);
      await db
        .insertInto('extension_kv')
        .values({ extension: name, key, value, updated_at: Date.now() })
        .onConflict((oc) => oc.columns(['extension', 'key']).doUpdateSet({ value, updated_at: Date.now() }))
        .execute();
      return undefined;
    }
    case 'kv.delete': {
      const r = await db.deleteFrom('extension_kv').where('extension', '=', name).where('key', '=', str(a.key, 'key', KV_LIMITS.key)).executeTakeFirst();
      return Number(r.numDeletedRows) > 0;
    }
    case 'kv.list': {
      const prefix = typeof a.prefix === 'string' ? a.prefix.slice(0, KV_LIMITS.key) : '';
      const rows = await db.selectFrom('extension_kv').select('key').where('extension', '=', name).where('key', '>=', prefix).orderBy('key').limit(KV_LIMITS.list * 4).execute();
      return rows.map((r) => r.key as string).filter((k) => k.startsWith(prefix)).slice(0, KV_LIMITS.list);
    }
    case 'presence.get':
      return userOf(engine, await account());
    case 'presence.followers': {
      const jid = await account();
      return (await engine.roster(jid)).items.filter((i) => i.state.from).map((i) => i.contact);
    }
    case 'push.send': {
      const push = pushOf(engine);
      if (!push) throw new PresenceError('not-allowed', 'the push feature is turned off on this server (push: false)');
      const jid = await account();
      const n = (typeof a.notification === 'object' && a.notification !== null ? a.notification : {}) as Record<string, unknown>;
      const devices = n.devices === undefined ? undefined : Array.isArray(n.devices) && n.devices.every((d) => typeof d === 'string') ? (n.devices as string[]) : null;
      if (devices === null) throw new PresenceError('bad-request', 'push.send: devices must be a list of registration ids');
      const queued = await push.enqueue(
        jid,
        {
          ...(n.title !== undefined ? { title: str(n.title, 'title', NOTIFY_LIMITS.title) } : {}),
          body: str(n.body, 'body', NOTIFY_LIMITS.body),
          ...(n.data !== undefined ? { data: stringMap(n.data, 'data') as Record<string, string> } : {}),
          ...(n.collapseKey !== undefined ? { collapseKey: str(n.collapseKey, 'collapseKey', NOTIFY_LIMITS.collapseKey) } : {}),
          ...(n.urgency === 'high' || n.urgency === 'normal' ? { urgency: n.urgency } : {}),
        },
        { reason: 'notify', trigger: `extension:${name}`, ...(devices ? { onlyDevices: devices } : {}) },
      );
      return { queued: queued.map((r) => r.id) };
    }
    case 'notify': {
      const push = pushOf(engine);
      if (!push) throw new PresenceError('not-allowed', 'the push feature is turned off on this server (push: false)');
      const jid = await account();
      const p = (typeof a.payload === 'object' && a.payload !== null ? a.payload : {}) as Record<string, unknown>;
      const data = stringMap(p.data, 'data');
      // The text also travels as an XMPP headline message.
      for (const v of [p.title, p.body, ...Object.values(data ?? {})]) {
        if (typeof v === 'string' && !isXmlSafeText(v)) throw new PresenceError('bad-request', 'notify: title, body and data must not contain control characters');
      }
      const r = await push.notify(jid, {
        ...(p.title !== undefined ? { title: str(p.title, 'title', NOTIFY_LIMITS.title) } : {}),
        body: str(p.body, 'body', NOTIFY_LIMITS.body),
        ...(data !== undefined ? { data } : {}),
      });
      return { id: r.id, sessions: r.sessions, pushed: r.pushed.length };
    }
    default:
      throw new PresenceError('bad-request', `unknown context call "${op.slice(0, 40)}"`);
  }
}
