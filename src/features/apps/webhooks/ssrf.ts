import { lookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';

/**
 * The SSRF rule of webhook deliveries: an app's webhook may not make this server call into its own
 * network. Every address a host resolves to is checked, and the request then connects to the checked
 * address itself, so a DNS answer that changes between the check and the connect changes nothing.
 */

const RANGES: ReadonlyArray<readonly [string, number, 'ipv4' | 'ipv6', string]> = [
  ['0.0.0.0', 8, 'ipv4', 'unspecified'],
  ['10.0.0.0', 8, 'ipv4', 'private'],
  ['100.64.0.0', 10, 'ipv4', 'carrier-grade NAT'],
  ['127.0.0.0', 8, 'ipv4', 'loopback'],
  ['169.254.0.0', 16, 'ipv4', 'link-local'],
  ['172.16.0.0', 12, 'ipv4', 'private'],
  ['192.0.0.0', 24, 'ipv4', 'IETF protocol assignments'],
  ['192.168.0.0', 16, 'ipv4', 'private'],
  ['198.18.0.0', 15, 'ipv4', 'benchmarking'],
  ['224.0.0.0', 4, 'ipv4', 'multicast'],
  ['240.0.0.0', 4, 'ipv4', 'reserved'],
  ['::', 128, 'ipv6', 'unspecified'],
  ['::1', 128, 'ipv6', 'loopback'],
  ['fc00::', 7, 'ipv6', 'private'],
  ['fe80::', 10, 'ipv6', 'link-local'],
  ['ff00::', 8, 'ipv6', 'multicast'],
];

const LISTS = RANGES.map(([net, prefix, type, why]) => {
  const list = new BlockList();
  list.addSubnet(net, prefix, type);
  return { list, type, why };
});

/** Why an address is refused (`loopback`, `private`, ...), or null when it is a public address. */
export function refusedAddressKind(address: string): string | null {
  let a = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(a);
  if (mapped) a = mapped[1]!;
  const family = isIP(a);
  if (family === 0) return 'not an IP address';
  const type = family === 4 ? 'ipv4' : 'ipv6';
  for (const r of LISTS) if (r.type === type && r.list.check(a, type)) return r.why;
  return null;
}

export class RefusedAddress extends Error {}

export interface CheckedAddress {
  readonly address: string;
  readonly family: 4 | 6;
}

/**
 * Resolves `hostname` (every address) and returns the one to connect to; rejects with RefusedAddress
 * when any of them is not public, unless private addresses are allowed.
 */
export async function resolveChecked(hostname: string, allowPrivate: boolean): Promise<CheckedAddress> {
  const host = hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
  const literal = isIP(host);
  const all = literal !== 0 ? [{ address: host, family: literal }] : await lookup(host, { all: true, verbatim: true });
  if (all.length === 0) throw new RefusedAddress(`${host} does not resolve`);
  if (!allowPrivate) {
    for (const a of all) {
      const why = refusedAddressKind(a.address);
      if (why !== null) throw new RefusedAddress(`${host} resolves to ${a.address}, a ${why} address; webhooks may only reach public addresses (webhooks_allow_private is off)`);
    }
  }
  const first = all[0]!;
  return { address: first.address, family: first.family === 6 ? 6 : 4 };
}
