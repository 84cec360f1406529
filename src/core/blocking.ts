/**
 * XEP-0191 (Blocking Command) decision for one stanza from A to B.
 *
 * - A blocks B: A's own stanza is refused with a not-acceptable error ("User Attempts to
 *   Communicate with Blocked Entity"), so A's client learns
 *   that its own block list is in the way instead of wondering why B never answers.
 * - B blocks A: the stanza is dropped silently ("Blocked Entity Attempts to Communicate
 *   with User"), because an error would tell A that it is blocked.
 * When both hold, 'reject' wins: A is told only about its own block, which reveals nothing about B's.
 */
export function stanzaAllowed(fromBlocksTo: boolean, toBlocksFrom: boolean): 'deliver' | 'drop' | 'reject' {
  if (fromBlocksTo) return 'reject';
  if (toBlocksFrom) return 'drop';
  return 'deliver';
}
