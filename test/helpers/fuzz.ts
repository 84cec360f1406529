/**
 * A small seeded generator for bounded fuzz runs: the same seed gives the same inputs, so a failure
 * seen once can be replayed (the seed is printed in every assertion message by the tests using it).
 */
export class Rng {
  private s: number;
  constructor(readonly seed: number) {
    this.s = seed >>> 0;
  }

  /** mulberry32: tiny, fast, and good enough to spread fuzz inputs. */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(list: readonly T[]): T {
    return list[this.int(list.length)] as T;
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }
}

/** Strings that have broken parsers and validators before: control characters, surrogates, huge, empty. */
export const NASTY_STRINGS: readonly string[] = [
  '',
  ' ',
  '\u0000',
  '\u0007bell',
  '\ud800',
  '\udfff\ud800',
  'a'.repeat(5000),
  '@',
  'a@',
  '@b',
  'a@b/c',
  'a@localhost/',
  'A@LOCALHOST',
  '../../etc/passwd',
  '<presence/>',
  "'\"&<>",
  '__proto__',
  'constructor',
  '%00',
  '\u202e\u0041',
  'x'.repeat(1025),
  '😀'.repeat(600),
];

/** Values of every JSON type, including the ones a handler expecting a string or a number trips on. */
export function randomValue(r: Rng, depth = 0): unknown {
  switch (r.int(depth > 3 ? 7 : 9)) {
    case 0:
      return null;
    case 1:
      return r.chance(0.5);
    case 2:
      return r.pick([0, -1, 1, 127, 128, -129, 1.5, 2 ** 53, -(2 ** 63), 1e308, Number.MAX_SAFE_INTEGER]);
    case 3:
    case 4:
      return r.pick(NASTY_STRINGS);
    case 5:
      return r.pick(['available', 'away', 'xa', 'dnd', 'chat', 'offline', 'AWAY']);
    case 6:
      return 'u' + r.int(10) + '@localhost';
    case 7: {
      const n = r.int(5);
      return Array.from({ length: n }, () => randomValue(r, depth + 1));
    }
    default: {
      const o: Record<string, unknown> = {};
      const n = r.int(4);
      for (let i = 0; i < n; i++) o[r.pick(['jid', 'show', 'status', 'priority', 'name', 'groups', 'jids', 'x', '__proto__'])] = randomValue(r, depth + 1);
      return o;
    }
  }
}
