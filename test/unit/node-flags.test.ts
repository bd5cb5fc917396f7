import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { NODE_FLAGS } from '../../src/node-flags.js';

// Every way of starting the service runs it with the same V8 flags (src/node-flags.ts says why).
describe('the service starts with NODE_FLAGS everywhere', () => {
  const flags = NODE_FLAGS.join(' ');
  it.each<[string, () => string, RegExp]>([
    ['the bin shebang', () => readFileSync('src/main.ts', 'utf8').split('\n')[0]!, /^#!\/usr\/bin\/env -S node (.*)$/],
    ['npm start', () => (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: { start: string } }).scripts.start, /^node (.*) dist\/main\.js serve$/],
    ['the Dockerfile', () => /^ENTRYPOINT (.*)$/m.exec(readFileSync('Dockerfile', 'utf8'))![1]!, /^\["node", (.*), "\/app\/dist\/main\.js"\]$/],
  ])('%s', (_name, read, pattern) => {
    const m = pattern.exec(read());
    expect(m, 'the launcher has the expected shape').not.toBeNull();
    expect(m![1]!.replaceAll('"', '').replaceAll(',', '')).toBe(flags);
  });
});
