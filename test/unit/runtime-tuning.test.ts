import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

const child = fileURLToPath(new URL('../fixtures/young-generation.ts', import.meta.url));
const MB = 1024 * 1024;

function largestYoung(capMb: number): number {
  const out = execFileSync(process.execPath, ['--import', 'tsx', child, String(capMb)], { encoding: 'utf8' });
  return (JSON.parse(out) as { largestYoungBytes: number }).largestYoungBytes;
}

test('the semi-space cap holds V8 young generation at the configured size under steady allocation', () => {
  // Without the cap V8 grows the young generation past it under this load, so the check below means something.
  const uncapped = largestYoung(0);
  assert.ok(uncapped > 2 * 4 * MB, `V8's own sizing grew to ${uncapped / MB} MB, expected more than 8`);
  // Two semi-spaces of at most 4 MB each.
  const capped = largestYoung(4);
  assert.ok(capped <= 2 * 4 * MB, `young generation reached ${capped / MB} MB with a 4 MB cap`);
  assert.ok(capped >= 2 * 2 * MB, `young generation stayed at ${capped / MB} MB: the cap should let it grow to 4 MB semi-spaces`);
});
