/**
 * XEP-0352 client state indication for one stream. A client that says `<inactive/>` (an app in the
 * background, a phone with its screen off) has little use for every presence change of its contacts
 * as it happens, and each one wakes its radio. So, in the manner of Prosody's mod_csi_simple, presence
 * updates to an inactive client are held back: only the newest per sender is kept (an older one says
 * nothing the newer does not), and what is held goes out when the client says `<active/>` again or
 * before anything that matters (a message) is written to it. Other stanzas are not held.
 */

/** Senders held at once; presence from one more is written at once, so the memory per stream stays bounded. */
const MAX_HELD = 5_000;

const START_TAG = /^<presence\b[^>]*>/;
const ATTR = (name: string) => new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`);
const FROM = ATTR('from');
const TYPE = ATTR('type');

export class ClientState {
  inactive = false;
  /** Held presence by its sender's full JID, oldest first (a newer one takes the end). */
  private readonly held = new Map<string, string>();

  /**
   * Keeps `text` if it is a presence update (available or unavailable) from someone else; true when
   * it was kept. Subscription requests and errors are not held: they ask for the user's attention.
   */
  hold(text: string, self: string): boolean {
    const head = START_TAG.exec(text)?.[0];
    if (head === undefined) return false;
    const t = TYPE.exec(head);
    const type = t ? (t[1] ?? t[2]) : undefined;
    if (type !== undefined && type !== 'unavailable') return false;
    const f = FROM.exec(head);
    const from = f ? (f[1] ?? f[2] ?? '') : '';
    if (from === '' || from === self) return false;
    if (!this.held.delete(from) && this.held.size >= MAX_HELD) return false;
    this.held.set(from, text);
    return true;
  }

  get heldCount(): number {
    return this.held.size;
  }

  /** Everything held, oldest first; the state holds nothing afterwards. */
  take(): string[] {
    if (this.held.size === 0) return [];
    const out = [...this.held.values()];
    this.held.clear();
    return out;
  }
}
