import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NODE_FLAGS, SERVICE_ENV } from '../../src/node-flags.js';

// Every way of starting the service runs it with the same V8 flags and malloc settings (src/node-flags.ts says why).
describe('the service starts with NODE_FLAGS everywhere', () => {
  const flags = NODE_FLAGS.join(' ');
  const env = Object.entries(SERVICE_ENV).map(([k, v]) => `${k}=${v}`).join(' ');
  it.each<[string, () => string]>([
    ['the bin shebang', () => readFileSync('src/main.ts', 'utf8').split('\n')[0]!.replace(/^#!\/usr\/bin\/env -S /, '')],
    ['npm start', () => (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start],
  ])('%s sets SERVICE_ENV before node', (_name, read) => {
    expect(read().startsWith(`${env} node `)).toBe(true);
  });

  it('the Dockerfile sets SERVICE_ENV', () => {
    const set = [...readFileSync('Dockerfile', 'utf8').matchAll(/^ENV (.*)$/gm)].flatMap((m) => m[1]!.split(' '));
    for (const [k, v] of Object.entries(SERVICE_ENV)) expect(set).toContain(`${k}=${v}`);
    // and no malloc setting SERVICE_ENV has dropped
    expect(set.filter((w) => w.startsWith('MALLOC_')).sort()).toEqual(Object.entries(SERVICE_ENV).map(([k, v]) => `${k}=${v}`).sort());
  });

  it.each<[string, () => string, RegExp]>([
    ['the bin shebang', () => readFileSync('src/main.ts', 'utf8').split('\n')[0]!, /^#!\/usr\/bin\/env -S (?:\S+=\S+ )*node (.*)$/],
    ['npm start', () => (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start, /^(?:\S+=\S+ )*node (.*) dist\/main\.js serve$/],
    ['the Dockerfile', () => /^ENTRYPOINT (.*)$/m.exec(readFileSync('Dockerfile', 'utf8'))![1]!, /^\["node", (.*), "\/app\/dist\/main\.js"\]$/],
  ])('%s', (_name, read, pattern) => {
    const m = pattern.exec(read());
    expect(m, 'the launcher has the expected shape').not.toBeNull();
    expect(m![1]!.replaceAll('"', '').replaceAll(',', '')).toBe(flags);
  });
});
