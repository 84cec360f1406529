import { PresenceError } from '../../core/errors.js';
import { MAX_GROUP_NAME, MAX_GROUPS, MAX_ROSTER_NAME, type RosterItem } from '../../core/roster.js';
import { subscriptionName } from '../../core/subscription-state.js';
import type { LeaveReason } from '../../core/events.js';
import type { AccountPresence } from '../../core/presence.js';
import type { PresenceInput } from '../../engine/engine.js';

/**
 * The native protocol's wire format: validation of what clients send and encoding of what the server
 * sends. Kept apart from the connection logic so docs/native-protocol.md can be checked against one file.
 */
export const REQUEST_TYPES = [
  'auth',
  'presence',
  'roster.get',
  'roster.set',
  'roster.remove',
  'subscribe',
  'approve',
  'deny',
  'unsubscribe',
  'block',
  'unblock',
  'blocks.get',
  'presence.get',
  'ping',
  'bye',
] as const;
export type RequestType = (typeof REQUEST_TYPES)[number];

export interface Request {
  readonly id: string | number;
  /** A built-in type, or one a feature registered (src/features/registries.ts). */
  readonly type: RequestType | (string & {});
  readonly body: Record<string, unknown>;
}

const MAX_ID_LENGTH = 64;
const REQUEST_TYPE_SET = new Set<string>(REQUEST_TYPES);

/**
 * Parses one text frame. Throws PresenceError with the code the client gets back. `extra` says whether
 * a type that is not built in was registered by a feature; the others are `unknown-type`.
 */
export function parseRequest(text: string, extra?: (type: string) => boolean): Request {
  let msg: unknown;
  try {
    msg = JSON.parse(text);
  } catch {
    throw new PresenceError('bad-request', 'frame is not valid JSON');
  }
  if (typeof msg !== 'object' || msg === null || Array.isArray(msg)) {
    throw new PresenceError('bad-request', 'a request must be a JSON object');
  }
  const body = msg as Record<string, unknown>;
  const id = body.id;
  if (!(typeof id === 'string' && id.length > 0 && id.length <= MAX_ID_LENGTH) && !(typeof id === 'number' && Number.isSafeInteger(id))) {
    throw new PresenceError('bad-request', `"id" must be a non-empty string (at most ${MAX_ID_LENGTH} characters) or an integer`);
  }
  if (typeof body.type !== 'string') throw new RequestError(id, 'bad-request', '"type" must be a string');
  if (!REQUEST_TYPE_SET.has(body.type) && !(extra?.(body.type) ?? false)) {
    throw new RequestError(id, 'unknown-type', `unknown request type "${body.type.slice(0, 64)}"`);
  }
  return { id, type: body.type, body };
}

/** An error that can be tied to the request's id (the request was well-formed enough to have one). */
export class RequestError extends PresenceError {
  constructor(
    readonly id: string | number,
    code: PresenceError['code'],
    message: string,
  ) {
    super(code, message);
  }
}

export function str(body: Record<string, unknown>, key: string, opts: { optional: true; max?: number }): string | undefined;
export function str(body: Record<string, unknown>, key: string, opts?: { optional?: false; max?: number }): string;
export function str(body: Record<string, unknown>, key: string, opts: { optional?: boolean; max?: number } = {}): string | undefined {
  const v = body[key];
  if (v === undefined || v === null) {
    if (opts.optional) return undefined;
    throw new PresenceError('bad-request', `"${key}" is required`);
  }
  if (typeof v !== 'string') throw new PresenceError('bad-request', `"${key}" must be a string`);
  if (opts.max !== undefined && v.length > opts.max) throw new PresenceError('bad-request', `"${key}" longer than ${opts.max} characters`);
  return v;
}

export function presenceInput(body: Record<string, unknown>): PresenceInput {
  const out: { show?: never; status?: string | null; priority?: number } = {};
  if (body.show !== undefined) out.show = body.show as never; // checked by the engine
  if (body.status !== undefined) out.status = body.status as string | null;
  if (body.priority !== undefined) out.priority = body.priority as number;
  return out;
}

export function rosterFields(body: Record<string, unknown>): { name: string | null; groups: string[] } {
  const name = str(body, 'name', { optional: true, max: MAX_ROSTER_NAME }) ?? null;
  const g = body.groups ?? [];
  if (!Array.isArray(g) || g.length > MAX_GROUPS || !g.every((x) => typeof x === 'string' && x.length > 0 && x.length <= MAX_GROUP_NAME)) {
    throw new PresenceError('bad-request', `"groups" must be an array of at most ${MAX_GROUPS} non-empty strings of at most ${MAX_GROUP_NAME} characters`);
  }
  return { name, groups: [...new Set(g as string[])] };
}

// ------------------------------------------------------------------ encoding

export interface PresenceView {
  jid: string;
  online: boolean;
  show: string;
  status: string | null;
  priority: number;
  lastSeen: string | null;
}

export function presenceView(p: AccountPresence): PresenceView {
  return {
    jid: p.jid,
    online: p.online,
    show: p.show,
    status: p.status,
    priority: p.priority,
    lastSeen: p.lastSeen === null ? null : new Date(p.lastSeen).toISOString(),
  };
}

/**
 * A `presence` push. `reason` (why the contact's last session ended: `graceful`, `timeout`, ...) is
 * present only when the contact went offline because its last session ended.
 */
export function presencePush(p: AccountPresence, reason: LeaveReason | undefined): Record<string, unknown> {
  const view: Record<string, unknown> = { type: 'presence', ...presenceView(p) };
  if (reason !== undefined) view.reason = reason;
  return view;
}

export function rosterItemView(i: RosterItem): Record<string, unknown> {
  return {
    jid: i.contact,
    name: i.name,
    groups: i.groups,
    subscription: subscriptionName(i.state),
    pendingOut: i.state.pendingOut,
    pendingIn: i.state.pendingIn,
    preApproved: i.state.preApproved,
  };
}

export function result(id: string | number, value: unknown): string {
  return JSON.stringify({ id, type: 'result', result: value ?? {} });
}

export function errorFrame(id: string | number | null, code: string, message: string): string {
  return JSON.stringify({ id, type: 'error', error: { code, message } });
}
