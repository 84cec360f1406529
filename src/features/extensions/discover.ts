import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Config } from '../../config.js';
import type { ExtensionSpec } from './runner.js';

/**
 * Which extensions to run: the entries of `extensions_list` with a module, and the modules in
 * `data_dir/extensions/` (a `.mjs`/`.js` file, or a folder with a package.json), named after the file
 * or folder. An entry without a module gives settings to the folder's module of its name, and
 * `"enabled": false` turns either off. Modules that cannot even be found are reported, not thrown, so
 * that one bad entry does not hide the others.
 */

export interface Discovered {
  readonly specs: ExtensionSpec[];
  /** Entries that could not be turned into a module to load, with why (each names the extension). */
  readonly problems: Array<{ readonly name: string; readonly where: string; readonly source: 'config' | 'folder'; readonly message: string }>;
}

export function extensionsDir(config: Config): string {
  return join(config.data_dir, 'extensions');
}

/** The entry point of a package folder: exports["."] (import or default condition), then main, then index.js. */
function packageEntry(dir: string): string {
  const pkgPath = join(dir, 'package.json');
  if (!existsSync(pkgPath)) return join(dir, 'index.js');
  const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { exports?: unknown; main?: unknown };
  let target: unknown = pkg.exports;
  if (typeof target === 'object' && target !== null && '.' in target) target = (target as Record<string, unknown>)['.'];
  while (typeof target === 'object' && target !== null) {
    const t = target as Record<string, unknown>;
    target = t.import ?? t.node ?? t.default;
  }
  if (typeof target === 'string') return join(dir, target);
  if (typeof pkg.main === 'string') return join(dir, pkg.main);
  return join(dir, 'index.js');
}

/** A bare package name: looked up in node_modules from `data_dir/extensions/`, then from the working directory, upwards. */
function resolvePackage(name: string, bases: readonly string[]): string | null {
  const m = /^((?:@[^/]+\/)?[^/@][^/]*)(\/.*)?$/.exec(name);
  if (!m) return null;
  for (const base of bases) {
    for (let dir = base; ; dir = dirname(dir)) {
      const candidate = join(dir, 'node_modules', m[1] as string);
      if (existsSync(join(candidate, 'package.json'))) return m[2] ? join(candidate, m[2]) : packageEntry(candidate);
      if (dirname(dir) === dir) break;
    }
  }
  return null;
}

function moduleFile(where: string, config: Config): string {
  const isPath = where.startsWith('.') || isAbsolute(where) || where.startsWith('file:');
  let file: string | null;
  if (where.startsWith('file:')) file = new URL(where).pathname;
  else if (isPath) file = resolve(where);
  else file = resolvePackage(where, [extensionsDir(config), process.cwd()]);
  if (file === null) throw new Error(`cannot find the package "${where}" (looked in node_modules from ${extensionsDir(config)} and ${process.cwd()})`);
  if (!existsSync(file)) throw new Error(`cannot find its module ${where}${file !== where ? ` (${file})` : ''}`);
  if (statSync(file).isDirectory()) {
    const entry = packageEntry(file);
    if (!existsSync(entry)) throw new Error(`its module folder ${where} has no entry point (looked for ${entry})`);
    return entry;
  }
  return file;
}

export function discoverExtensions(config: Config): Discovered {
  const specs: ExtensionSpec[] = [];
  const problems: Discovered['problems'][number][] = [];
  const entries = config.extensions_list as Record<string, { module?: string; settings?: Record<string, unknown>; enabled?: boolean }>;
  const add = (name: string, where: string, source: 'config' | 'folder', settings: Record<string, unknown>) => {
    try {
      specs.push({ name, url: pathToFileURL(moduleFile(where, config)).href, where, source, settings });
    } catch (e) {
      problems.push({ name, where, source, message: (e as Error).message });
    }
  };
  for (const [name, e] of Object.entries(entries)) {
    if (e.module === undefined || e.enabled === false) continue;
    add(name, e.module, 'config', e.settings ?? {});
  }
  const dir = extensionsDir(config);
  const inFolder = new Set<string>();
  if (existsSync(dir)) {
    for (const f of readdirSync(dir).sort()) {
      if (f.startsWith('.') || f === 'node_modules' || f === 'package.json') continue;
      const full = join(dir, f);
      const isDir = statSync(full).isDirectory();
      const m = /^(.+)\.(mjs|js)$/.exec(f);
      if (!isDir && !m) continue;
      const name = (isDir ? f : (m?.[1] as string)).toLowerCase();
      inFolder.add(name);
      const e = entries[name];
      if (e?.module !== undefined) {
        problems.push({ name, where: full, source: 'folder', message: `the name is taken by extensions_list.${name}; rename one of them` });
        continue;
      }
      if (e?.enabled === false) continue;
      if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) {
        problems.push({ name: name.slice(0, 64), where: full, source: 'folder', message: 'its file name is not a valid extension name (lower-case letters, digits, - and _, at most 64)' });
        continue;
      }
      add(name, full, 'folder', e?.settings ?? {});
    }
  }
  for (const [name, e] of Object.entries(entries)) {
    if (e.module === undefined && e.enabled !== false && !inFolder.has(name)) {
      problems.push({ name, where: join(dir, `${name}.mjs`), source: 'config', message: `extensions_list.${name} has no "module" and ${dir} holds no module of that name` });
    }
  }
  return { specs, problems };
}
