import type { RosterItem } from '../core/roster.js';
import type { SubState } from '../core/subscription-state.js';
import { internJid, sharedState } from './compact.js';

const INDEX_FROM = 64;
const NO_GROUPS: readonly string[] = Object.freeze([]);

/**
 * The in-memory roster of an account with sessions, laid out for memory: two parallel arrays of
 * interned JIDs and shared subscription states, names and groups only for the items that have them.
 * An idle session's cost is dominated by its cached roster, and a Map of item objects costs about six
 * times as much. Small rosters are searched linearly; large ones get a JID → index map.
 */
export class RosterCache {
  private readonly contacts: string[] = [];
  private readonly states: SubState[] = [];
  private meta: Map<string, { name: string | null; groups: readonly string[] }> | null = null;
  private index: Map<string, number> | null = null;

  constructor(
    readonly owner: string,
    items: readonly RosterItem[],
  ) {
    for (const i of items) this.set(i);
  }

  get size(): number {
    return this.contacts.length;
  }

  private indexOf(contact: string): number {
    if (this.index) return this.index.get(contact) ?? -1;
    return this.contacts.indexOf(contact);
  }

  stateOf(contact: string): SubState | undefined {
    const i = this.indexOf(contact);
    return i < 0 ? undefined : this.states[i];
  }

  get(contact: string): RosterItem | undefined {
    const i = this.indexOf(contact);
    return i < 0 ? undefined : this.itemAt(i);
  }

  private itemAt(i: number): RosterItem {
    const contact = this.contacts[i] as string;
    const m = this.meta?.get(contact);
    return { owner: this.owner, contact, name: m?.name ?? null, groups: m?.groups ?? NO_GROUPS, state: this.states[i] as SubState };
  }

  set(item: RosterItem): void {
    const contact = internJid(item.contact);
    let i = this.indexOf(contact);
    if (i < 0) {
      i = this.contacts.length;
      this.contacts.push(contact);
      this.states.push(sharedState(item.state));
      if (this.index) this.index.set(contact, i);
      else if (this.contacts.length > INDEX_FROM) this.index = new Map(this.contacts.map((c, k) => [c, k]));
    } else {
      this.states[i] = sharedState(item.state);
    }
    if (item.name !== null || item.groups.length > 0) {
      this.meta ??= new Map();
      this.meta.set(contact, { name: item.name, groups: item.groups.length ? [...item.groups] : NO_GROUPS });
    } else {
      this.meta?.delete(contact);
    }
  }

  delete(contact: string): boolean {
    const i = this.indexOf(contact);
    if (i < 0) return false;
    // Move the last item into the hole: order is not meaningful, and this keeps deletion O(1).
    const last = this.contacts.length - 1;
    const lastContact = this.contacts[last] as string;
    this.contacts[i] = lastContact;
    this.states[i] = this.states[last] as SubState;
    this.contacts.pop();
    this.states.pop();
    if (this.index) {
      this.index.delete(contact);
      if (i !== last) this.index.set(lastContact, i);
    }
    this.meta?.delete(contact);
    return true;
  }

  items(): RosterItem[] {
    const out: RosterItem[] = [];
    for (let i = 0; i < this.contacts.length; i++) out.push(this.itemAt(i));
    return out;
  }

  /** Calls `fn` for each contact whose item matches `pred` (the fan-out's hot path: no allocation). */
  forEachWhere(pred: (s: SubState) => boolean, fn: (contact: string) => void): void {
    const { contacts, states } = this;
    for (let i = 0; i < contacts.length; i++) if (pred(states[i] as SubState)) fn(contacts[i] as string);
  }
}
