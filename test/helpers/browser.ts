/**
 * Debian's Chromium driven by playwright-core, for browser tests. The browser is installed from
 * Debian's packages when missing (CI machines start without it); playwright's own browser download
 * is never used (no internet here but the package mirrors).
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chromium, type Browser } from 'playwright-core';

export const CHROMIUM_PATH = '/usr/bin/chromium';

const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

let installed = false;

/** Installs Debian's chromium package if /usr/bin/chromium is missing (needs root, as in CI). */
export function ensureChromium(): void {
  if (installed || existsSync(CHROMIUM_PATH)) {
    installed = true;
    return;
  }
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '--no-install-recommends', 'chromium'], { stdio: 'inherit', env });
  if (!existsSync(CHROMIUM_PATH)) throw new Error(`apt-get installed chromium but ${CHROMIUM_PATH} is missing`);
  installed = true;
}

/** Launches a headless Chromium; the caller closes it. */
export async function launchBrowser(): Promise<Browser> {
  ensureChromium();
  return chromium.launch({ executablePath: CHROMIUM_PATH, args: FLAGS, headless: true });
}
