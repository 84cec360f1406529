// Prints the README's configuration table from the one list of keys in src/config.ts.
import { CONFIG_KEYS, envName } from '../src/config.js';

console.log('| key (config file) | environment variable | default | meaning |');
console.log('|---|---|---|---|');
for (const [k, spec] of Object.entries(CONFIG_KEYS)) {
  const def = Array.isArray(spec.def) ? spec.def.join(',') : typeof spec.def === 'object' && spec.def !== null ? JSON.stringify(spec.def) : String(spec.def);
  console.log(`| \`${k}\` | \`${envName(k)}\` | \`${def === '' ? '(empty)' : def}\` | ${spec.doc} |`);
}
