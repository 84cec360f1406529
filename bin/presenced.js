#!/usr/bin/env node
// Thin launcher so the published bin works from the compiled output.
import { main } from '../dist/cli.js';

main(process.argv.slice(2)).then(
  (code) => { if (typeof code === 'number') process.exitCode = code; },
  (err) => { console.error(`presenced: ${err instanceof Error ? err.message : String(err)}`); process.exitCode = 1; },
);
