/**
 * Draws the default status images into assets/status/: for every status word a 16×16 PNG, a 32×32 PNG
 * (for 2× screens, via srcset) and an SVG. Run by hand after changing a colour or a shape, and commit
 * the output: the server only reads the files at start.
 *
 *   npx tsx scripts/gen-status-images.ts
 *
 * The PNGs are rasterised here from the same shape description as the SVGs (anti-aliased by 8×8
 * supersampling), so both look alike; the encoder below writes the smallest valid PNG
 * (IHDR, one IDAT, IEND) with node:zlib and needs no image library.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { STATUS_WORDS, type StatusImageWord } from '../src/protocols/http/status-words.js';

type Rgb = readonly [number, number, number];

interface Look {
  readonly fill: Rgb;
  /** Drawn in white on top of the disc. */
  readonly mark: 'none' | 'dots' | 'clock' | 'moon' | 'bar' | 'ring' | 'slash';
}

// Colours follow the convention chat clients share (green, amber, red, grey), with a distinct mark on
// each so the status is readable without colour vision.
const LOOKS: Record<StatusImageWord, Look> = {
  available: { fill: [0x2f, 0x9e, 0x44], mark: 'none' },
  chat: { fill: [0x0c, 0xa6, 0x78], mark: 'dots' },
  away: { fill: [0xf0, 0x8c, 0x00], mark: 'clock' },
  xa: { fill: [0xd9, 0x48, 0x0f], mark: 'moon' },
  dnd: { fill: [0xe0, 0x31, 0x31], mark: 'bar' },
  offline: { fill: [0x86, 0x8e, 0x96], mark: 'ring' },
  forbidden: { fill: [0x49, 0x50, 0x57], mark: 'slash' },
};

// Shapes in a 16×16 coordinate space: `inside(x, y)` says whether a point is covered.
const R = 7;
const C = 8;
const disc = (x: number, y: number, r = R, cx = C, cy = C): boolean => (x - cx) ** 2 + (y - cy) ** 2 <= r * r;
const rect = (x: number, y: number, x0: number, y0: number, x1: number, y1: number): boolean => x >= x0 && x <= x1 && y >= y0 && y <= y1;

function markCovers(mark: Look['mark'], x: number, y: number): boolean {
  switch (mark) {
    case 'none':
      return false;
    case 'dots':
      return disc(x, y, 1.25, 4.75, 8) || disc(x, y, 1.25, 8, 8) || disc(x, y, 1.25, 11.25, 8);
    case 'clock':
      return rect(x, y, 7.1, 3.5, 8.9, 8.9) || rect(x, y, 7.1, 7.1, 11.5, 8.9);
    case 'moon':
      return disc(x, y, 4) && !disc(x, y, 3.4, 10, 6.5);
    case 'bar':
      return rect(x, y, 3.5, 6.75, 12.5, 9.25);
    case 'ring':
      return disc(x, y, 4.5);
    case 'slash':
      return Math.abs(x - y) <= 1.3 && disc(x, y, 5);
  }
}

/** RGBA pixels of one status at `size` pixels square. */
function rasterise(look: Look, size: number): Buffer {
  const px = Buffer.alloc(size * size * 4);
  const S = 8;
  for (let py = 0; py < size; py++) {
    for (let pxi = 0; pxi < size; pxi++) {
      let cover = 0;
      let white = 0;
      for (let sy = 0; sy < S; sy++) {
        for (let sx = 0; sx < S; sx++) {
          const x = ((pxi + (sx + 0.5) / S) * 16) / size;
          const y = ((py + (sy + 0.5) / S) * 16) / size;
          if (!disc(x, y)) continue;
          cover++;
          if (markCovers(look.mark, x, y)) white++;
        }
      }
      const o = (py * size + pxi) * 4;
      if (cover === 0) continue;
      const w = white / cover;
      for (let c = 0; c < 3; c++) px[o + c] = Math.round((look.fill[c] as number) * (1 - w) + 255 * w);
      px[o + 3] = Math.round((cover / (S * S)) * 255);
    }
  }
  return px;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = (CRC_TABLE[(c ^ b) & 0xff] as number) ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** Encodes RGBA pixels as a PNG (colour type 6, 8 bits, filter 0 on every row). */
export function encodePng(rgba: Buffer, width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.writeUInt8(8, 8); // bit depth
  ihdr.writeUInt8(6, 9); // RGBA
  const rows = Buffer.alloc((width * 4 + 1) * height);
  for (let y = 0; y < height; y++) rgba.copy(rows, y * (width * 4 + 1) + 1, y * width * 4, (y + 1) * width * 4);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(rows, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const hex = (c: Rgb): string => `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;

function svg(word: StatusImageWord, look: Look): string {
  const W = '#ffffff';
  const marks: Record<Look['mark'], string> = {
    none: '',
    dots: `<circle cx="4.75" cy="8" r="1.25" fill="${W}"/><circle cx="8" cy="8" r="1.25" fill="${W}"/><circle cx="11.25" cy="8" r="1.25" fill="${W}"/>`,
    clock: `<path d="M7.1 3.5h1.8v3.6h2.6v1.8H7.1z" fill="${W}"/>`,
    moon: `<mask id="m"><circle cx="8" cy="8" r="4" fill="${W}"/><circle cx="10" cy="6.5" r="3.4" fill="#000"/></mask><rect width="16" height="16" fill="${W}" mask="url(#m)"/>`,
    bar: `<rect x="3.5" y="6.75" width="9" height="2.5" fill="${W}"/>`,
    ring: `<circle cx="8" cy="8" r="4.5" fill="${W}"/>`,
    slash: `<clipPath id="c"><circle cx="8" cy="8" r="5"/></clipPath><path d="M3 3L13 13" stroke="${W}" stroke-width="2.6" clip-path="url(#c)"/>`,
  };
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16" role="img" aria-label="${word}">` +
    `<title>${word}</title><circle cx="8" cy="8" r="7" fill="${hex(look.fill)}"/>${marks[look.mark]}</svg>\n`
  );
}

const out = join(import.meta.dirname, '..', 'assets', 'status');
for (const word of STATUS_WORDS) {
  const look = LOOKS[word];
  for (const size of [16, 32]) {
    const name = size === 16 ? `${word}.png` : `${word}@2x.png`;
    writeFileSync(join(out, name), encodePng(rasterise(look, size), size, size));
  }
  writeFileSync(join(out, `${word}.svg`), svg(word, look));
}
console.log(`wrote ${STATUS_WORDS.length * 3} files to ${out}`);
