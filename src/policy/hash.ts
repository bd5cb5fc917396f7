import { createHash } from 'node:crypto';
import type { ExecPolicy } from './types.js';

/** JSON with sorted object keys and RegExps as `{source, flags}`, so equal policies hash equally. */
export function canonicalJson(value: unknown): string {
  if (value instanceof RegExp) return canonicalJson({ source: value.source, flags: value.flags });
  if (Array.isArray(value)) return `[${value.map((v) => canonicalJson(v)).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** sha256 (hex, first 16 chars) of the canonical JSON of the policy: names the policy in every explanation. */
export function policyHash(policy: ExecPolicy): string {
  return createHash('sha256').update(canonicalJson(policy)).digest('hex').slice(0, 16);
}
