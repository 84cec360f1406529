import type { AccountPresence } from '../../core/presence.js';

/**
 * The status words of the Openfire/Jive presence plugin, exactly: they name images (`--IMAGE--`),
 * per-status override parameters, and the `status` field of our JSON answers.
 */
export const STATUS_WORDS = ['available', 'chat', 'away', 'xa', 'dnd', 'offline', 'forbidden'] as const;
export type StatusImageWord = (typeof STATUS_WORDS)[number];

/** The word for a presence the requester may see (never 'forbidden'). */
export function statusWord(p: AccountPresence): StatusImageWord {
  return p.online ? p.show : 'offline';
}

/** What `type=text` answers when the account set no status text (and always when offline or forbidden). */
export const DEFAULT_TEXT: Record<StatusImageWord, string> = {
  available: 'Available',
  chat: 'Free to chat',
  away: 'Away',
  xa: 'Extended away',
  dnd: 'Do not disturb',
  offline: 'Unavailable',
  forbidden: 'Forbidden',
};
