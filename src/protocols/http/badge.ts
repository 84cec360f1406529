import { xmlEscape } from './presence-formats.js';
import type { StatusImageWord } from './status-words.js';

/**
 * A shields-style SVG badge, `[ label | ● status ]`, for READMEs and dashboards. Drawn as text, so it
 * is sharp at any zoom; the text widths are estimated (Verdana 11px metrics, roughly) because the
 * server cannot measure fonts, and generous padding hides the error.
 */
export const BADGE_COLOURS: Record<StatusImageWord, string> = {
  available: '#2f9e44',
  chat: '#0ca678',
  away: '#f08c00',
  xa: '#d9480f',
  dnd: '#e03131',
  offline: '#868e96',
  forbidden: '#495057',
};

export const MAX_LABEL = 64;

function textWidth(s: string): number {
  let w = 0;
  for (const ch of s) {
    if ('iljtfr.,:;|!\' '.includes(ch)) w += 3.6;
    else if ('mwMW@'.includes(ch)) w += 10;
    else if (ch >= 'A' && ch <= 'Z') w += 7.6;
    else w += 6.8;
  }
  return Math.ceil(w);
}

/** `label` null: no left part, only the status. */
export function badgeSvg(label: string | null, word: StatusImageWord): string {
  const PAD = 6;
  const DOT = 10; // dot diameter 6 plus the gap after it
  const lw = label === null || label === '' ? 0 : textWidth(label) + 2 * PAD;
  const rw = DOT + textWidth(word) + 2 * PAD;
  const w = lw + rw;
  const colour = BADGE_COLOURS[word];
  const title = label ? `${xmlEscape(label)}: ${word}` : word;
  const left = lw
    ? `<text x="${lw / 2}" y="14" fill="#010101" fill-opacity=".3">${xmlEscape(label as string)}</text>` +
      `<text x="${lw / 2}" y="13">${xmlEscape(label as string)}</text>`
    : '';
  const tx = lw + PAD + DOT + textWidth(word) / 2;
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="20" role="img" aria-label="${title}"><title>${title}</title>` +
    `<linearGradient id="s" x2="0" y2="100%"><stop offset="0" stop-color="#bbb" stop-opacity=".1"/><stop offset="1" stop-opacity=".1"/></linearGradient>` +
    `<clipPath id="r"><rect width="${w}" height="20" rx="3" fill="#fff"/></clipPath>` +
    `<g clip-path="url(#r)">${lw ? `<rect width="${lw}" height="20" fill="#555"/>` : ''}<rect x="${lw}" width="${rw}" height="20" fill="${colour}"/><rect width="${w}" height="20" fill="url(#s)"/></g>` +
    `<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">` +
    left +
    `<circle cx="${lw + PAD + 3}" cy="10" r="3" fill="#fff"/>` +
    `<text x="${tx}" y="14" fill="#010101" fill-opacity=".3">${word}</text><text x="${tx}" y="13">${word}</text></g></svg>`
  );
}
