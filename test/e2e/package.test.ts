import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * What `npm pack` ships, installed from the tarball into an empty project: the `execgate` bin (serve, exec,
 * config, policy) and the `execgate/client` export, in JavaScript and in TypeScript. Packed from a staging
 * copy, so the checkout's dist/ (other tests run it) is never rebuilt under them.
 */

const run = promisify(execFile);
const root = join(import.meta.dirname, '../..');
const TOKEN = 'package-test-token-0123456789';
let work: string;
let app: string;
let project: string;
let server: ChildProcess | undefined;
let url: string;

const bin = (...args: string[]) => run(join(app, 'node_modules/.bin/execgate'), args, { cwd: app, env: { ...process.env, EXECGATE_URL: url, EXECGATE_TOKEN: TOKEN } });

beforeAll(async () => {
  work = mkdtempSync('/var/tmp/execgate-pack-');
  const stage = join(work, 'stage');
  mkdirSync(stage);
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { files: string[] };
  for (const f of ['package.json', 'package-lock.json', 'README.md', 'CHANGELOG.md', 'openapi.json', 'config.schema.json', 'images']) cpSync(join(root, f), join(stage, f), { recursive: true });
  execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.build.json'), '--outDir', join(stage, 'dist')]);
  expect(pkg.files).toContain('dist');
  const packed = JSON.parse(execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', work], { cwd: stage, encoding: 'utf8' })) as { filename: string; files: { path: string }[] }[];
  const files = packed[0]!.files.map((f) => f.path);
  expect(files).toEqual(expect.arrayContaining(['dist/main.js', 'dist/client/index.js', 'dist/client/index.d.ts', 'dist/app.js', 'openapi.json', 'config.schema.json', 'CHANGELOG.md', 'images/sandbox/Dockerfile']));
  expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/') || f.endsWith('.map'))).toEqual([]);

  app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  // No install scripts: the registry's native builds are not what this checks. The SQLite addon (needed only
  // by `serve`) is the one this checkout built for this same node.
  execFileSync('npm', ['install', join(work, packed[0]!.filename), '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: app, stdio: ['ignore', 'ignore', 'inherit'] });
  cpSync(join(root, 'node_modules/better-sqlite3/build'), join(app, 'node_modules/better-sqlite3/build'), { recursive: true });

  project = join(work, 'project');
  mkdirSync(project);
  writeFileSync(join(work, 'config.yaml'), `gateway: { port: 0, auth: { token: ${TOKEN} } }\nagents: { defaults: { toolPolicies: { exec: { mode: allowed, allowedPaths: [${project}] } }, sandbox: { pool: { size: 0, maxIdleMs: 1000 } } } }\nstore: { path: ${work}/store }\n`);
  server = spawn(join(app, 'node_modules/.bin/execgate'), ['serve', '--config', join(work, 'config.yaml')], { cwd: app, stdio: ['ignore', 'pipe', 'pipe'] });
  url = await new Promise<string>((resolve, reject) => {
    let log = '';
    const onData = (b: Buffer) => {
      log += b.toString();
      const m = /"address":"(http:\/\/[^"]+)"/.exec(log);
      if (m) resolve(m[1]!);
    };
    server!.stdout!.on('data', onData);
    server!.stderr!.on('data', (b: Buffer) => (log += b.toString()));
    server!.on('exit', (code) => reject(new Error(`execgate serve exited ${code}: ${log}`)));
  });
}, 240_000);

afterAll(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server!.on('exit', r));
    server.kill('SIGTERM');
    await exited;
  }
  rmSync(work, { recursive: true, force: true });
}, 60_000);

describe('the npm package, installed from its tarball', () => {
  it('has a working bin: help, config schema, policy test', async () => {
    const help = await bin('--help');
    for (const cmd of ['serve', 'exec', 'config check', 'config schema', 'policy test', 'audit verify']) expect(help.stdout).toContain(`execgate ${cmd}`);
    const schema = JSON.parse((await bin('config', 'schema')).stdout) as { $id: string };
    expect(schema.$id).toMatch(/config\.json$/);
    const policy = await bin('policy', 'test', join(work, 'config.yaml'), 'ls -la | wc -l');
    expect(policy.stdout).toMatch(/^ALLOW/);
    expect(readdirSync(join(app, 'node_modules/execgate'))).toContain('openapi.json');
  });

  it('serves from the installed bin, and `execgate exec` runs a command through it with its exit code', async () => {
    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);
    const ok = await bin('exec', '--', 'echo', 'from-the-package');
    expect(ok.stdout).toBe('from-the-package\n');
    const failed = await bin('exec', '--', 'exit 7').catch((e: { code: number; stderr: string }) => e);
    expect((failed as { code: number }).code).toBe(7);
  });

  it('exports execgate/client to JavaScript and TypeScript consumers', async () => {
    writeFileSync(
      join(app, 'use.mjs'),
      `import { ExecgateClient, ExecgateError } from 'execgate/client';
const client = new ExecgateClient({ url: process.env.EXECGATE_URL, token: process.env.EXECGATE_TOKEN });
const d = await client.check('git status');
const run = client.exec({ command: 'printf packaged' });
let out = '';
for await (const e of run) if (e.type === 'stdout') out += e.data;
const r = await run.result;
let code;
try { await new ExecgateClient({ url: process.env.EXECGATE_URL, token: 'wrong-token-000000' }).check('ls'); } catch (e) { code = e instanceof ExecgateError && e.code; }
console.log(JSON.stringify({ decision: d.decision, out, exitCode: r.exitCode, code }));
`,
    );
    const { stdout } = await run(process.execPath, ['use.mjs'], { cwd: app, env: { ...process.env, EXECGATE_URL: url, EXECGATE_TOKEN: TOKEN } });
    expect(JSON.parse(stdout)).toEqual({ decision: 'allow', out: 'packaged', exitCode: 0, code: 'unauthorized' });

    writeFileSync(
      join(app, 'use.ts'),
      `import { ExecgateClient, ExecgateError, type ExecEvent } from 'execgate/client';
const client = new ExecgateClient({ url: 'http://127.0.0.1:8787', token: 't' });
export async function main(): Promise<number | null> {
  const run = client.exec({ command: 'ls', env: { A: '1' }, timeoutMs: 1000 }, { signal: AbortSignal.timeout(5000) });
  for await (const e of run) { const t: ExecEvent['type'] = e.type; void t; }
  try { return (await run.result).exitCode; } catch (e) { if (e instanceof ExecgateError) return e.code.length; throw e; }
}
`,
    );
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    await run(process.execPath, [tsc, '--noEmit', '--strict', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--typeRoots', join(root, 'node_modules/@types'), '--types', 'node', 'use.ts'], { cwd: app });
  });
});
