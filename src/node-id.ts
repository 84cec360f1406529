import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Config } from './config.js';

/**
 * This node's name in a cluster (config node_id), the one definition every part uses (the bus for its
 * lease and routing, the store for whatever it keeps per node). Stable across restarts when derived
 * from a fixed port, so a node that restarts finds what it left; unique per process otherwise.
 */
export function nodeIdOf(config: Pick<Config, 'node_id' | 'http_port'>): string {
  if (config.node_id !== '') return config.node_id;
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 60) || 'node';
  if (config.http_port > 0) return `${host}:${config.http_port}`;
  return `${host}:${process.pid}-${randomBytes(3).toString('hex')}`;
}
