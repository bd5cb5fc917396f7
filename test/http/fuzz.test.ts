/**
 * Property-based fuzzing of every route of the API (SPEC §3), on the real app with a scripted runner.
 *
 * The routes come from the ROUTES table of src/http/openapi.ts, which the app itself refuses to start without,
 * so a new route is fuzzed without touching this file. Each request is hostile in some way: malformed or
 * oversized JSON, wrongly typed or unknown fields, deep nesting, huge strings, NUL/bidi/lone surrogates,
 * wrong or missing content types, odd Accept values, bad or huge Authorization headers, odd ids and query
 * strings, broken multipart and tar bodies. Promises checked on every answer:
 *   - never a 5xx, and the process never sees an unhandled rejection or exception;
 *   - every non-2xx answer is JSON with exactly the error shape of SPEC §3 (ErrorBodySchema) and a snake_case
 *     code (/mcp's own transport errors are JSON-RPC errors, as MCP clients expect);
 *   - a 400 names the failing field(s);
 *   - a 2xx JSON answer matches the schema the OpenAPI document gives for it.
 * A raw-socket part sends what `inject` cannot: broken HTTP framing, duplicate headers, oversized headers.
 *
 * Reproducible: a fixed seed (FUZZ_SEED to change it), FUZZ_RUNS requests per route (default 150).
 */
import { connect } from 'node:net';
import fc from 'fast-check';
import tar from 'tar-stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { ROUTES, type RouteDoc } from '../../src/http/openapi.js';
import { ErrorBodySchema } from '../../src/http/wire.js';
import { TOKEN_ENTRIES, TOKENS, auth, testApp, type TestApp } from '../support/app.js';
import { ScriptedRunner } from '../support/scripted-runner.js';

const SEED = Number(process.env.FUZZ_SEED ?? 20240808);
const RUNS = Number(process.env.FUZZ_RUNS ?? 150);
/** A small body limit, so that "beyond the limit" is cheap to send. */
const BODY_LIMIT = 64 * 1024;

let t: TestApp;
let runner: ScriptedRunner;
let sessionId = '';
let execId = '';
let approvalId = '';
let ruleId = '';
const waiting: Promise<unknown>[] = [];
/** The only command that asks for approval (a rule), so that fuzzed commands never wait for a human. */
const ASK_MARKER = 'fuzz-ask-marker';
const crashes: unknown[] = [];
const onCrash = (err: unknown) => crashes.push(err);

beforeAll(async () => {
  process.on('unhandledRejection', onCrash);
  process.on('uncaughtException', onCrash);
  t = await testApp({
    raw: (dir) => ({
      gateway: {
        bodyLimitBytes: BODY_LIMIT,
        auth: {
          token: TOKENS.admin,
          tokens: TOKEN_ENTRIES.filter((e) => e.token !== TOKENS.otherHuman),
        },
      },
      agents: {
        // Only the marker commands wait for a human (onDeny: block, mode allowed, one ask rule): any other
        // `ask` would hold a fuzzed request until an approval that never comes.
        defaults: {
          toolPolicies: {
            exec: { mode: 'allowed', blockedPatterns: ['rm -rf', 'sudo'], allowedPaths: [dir], noMatch: 'allow', onDeny: 'block', rules: [{ name: 'marker', pattern: `^${ASK_MARKER}`, action: 'ask' }] },
          },
          sandbox: { user: '1000:1000' },
          files: { maxInputBytes: 32 * 1024, maxEntries: 16 },
          sessions: { maxSessions: 64 },
        },
        teams: { data: {}, web: {} },
      },
      approvals: { timeoutMs: 60_000 },
      store: { path: `${dir}-store` },
    }),
  });
  runner = new ScriptedRunner(t.runner, (c) => ({ stdout: [`ran: ${c.command.slice(0, 64)}\n`], scratch: { 'out.txt': 'artifact' } }));
  // Real ids, so that some fuzzed requests reach past the lookup.
  const e = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), accept: 'application/json' }, payload: { command: 'ls', collect: ['*.txt'] } });
  expect(e.statusCode).toBe(200);
  execId = e.json<{ execId: string }>().execId;
});

/** FUZZ_STATS=1 prints what each route answered, to see how deep the requests reach. */
const stats = new Map<string, Map<string, number>>();
function tally(route: string, a: Answer): void {
  if (!process.env.FUZZ_STATS) return;
  let code = String(a.status);
  if (a.status >= 400) {
    try {
      code += ` ${(JSON.parse(a.body) as { error?: { code?: unknown } }).error?.code as string}`;
    } catch {
      // not JSON
    }
  }
  const m = stats.get(route) ?? new Map<string, number>();
  m.set(code, (m.get(code) ?? 0) + 1);
  stats.set(route, m);
}

/** A pending approval (an exec of the marker command waits on it), made when none is pending. */
async function pendingApproval(command = ASK_MARKER): Promise<string> {
  const find = () => t.service.approvals.list('data', 'pending').find((a) => a.plan.command === command);
  if (!find()) waiting.push(t.app.inject({ method: 'POST', url: '/v1/exec', headers: auth(TOKENS.agent), payload: { command } }));
  for (let i = 0; i < 400 && !find(); i++) await new Promise((r) => setTimeout(r, 5));
  const a = find();
  if (!a) throw new Error('no approval became pending');
  return a.id;
}

// Before each route: an open session, a pending approval and a remembered rule, so that fuzzed requests with
// the real id reach past the lookup (an earlier route may have ended or resolved them).
beforeEach(async () => {
  if (!t.service.sessions.list('data').some((x) => x.id === sessionId)) {
    const s = await t.app.inject({ method: 'POST', url: '/v1/sessions', headers: auth(TOKENS.agent), payload: {} });
    expect(s.statusCode).toBe(201);
    sessionId = s.json<{ id: string }>().id;
  }
  approvalId = await pendingApproval();
  const rules = () => t.app.inject({ url: '/v1/rules/remembered', headers: auth(TOKENS.human) }).then((r) => r.json<{ rules: { id: string }[] }>().rules);
  if ((await rules()).length === 0) {
    const id = await pendingApproval(`${ASK_MARKER}-remembered`);
    const r = await t.app.inject({ method: 'POST', url: `/v1/approvals/${id}/approve`, headers: auth(TOKENS.human), payload: { remember: { scope: 'exact' } } });
    expect(r.statusCode).toBe(200);
  }
  ruleId = (await rules())[0]!.id;
});

afterAll(async () => {
  // Let every exec that waits on an approval end.
  for (const a of t?.service.approvals.list(null, 'pending') ?? []) await t.app.inject({ method: 'POST', url: `/v1/approvals/${a.id}/reject`, headers: auth(TOKENS.admin), payload: {} });
  await Promise.all(waiting);
  // No run outlives its request, whatever the request was.
  expect(runner.runner.live).toBe(0);
  if (process.env.FUZZ_STATS) for (const [route, m] of stats) console.log(route, JSON.stringify(Object.fromEntries([...m].sort((x, y) => y[1] - x[1]))));
  process.off('unhandledRejection', onCrash);
  process.off('uncaughtException', onCrash);
  await t?.close();
});

// ---------------------------------------------------------------------------------------------------------
// Generators

/** Strings that break naive handling: NUL, bidi and zero-width characters, lone surrogates, quotes, `..`. */
const nastyChar = fc.constantFrom(
  '\u0000', '\u0001', '\u001b', '\u007f', '\u0085', '\u202e', '\u2066', '\u200b', '\ufeff', '\ud800', '\udfff', '😀', 'é', '\n', '\r',
  '\t', '"', "'", '\\', '/', '..', '%', '$', '`', ';', '{', '}', '[', ']', '<', '>', '&', '|', '*', '~', '#', ' ', 'a', 'Z', '0', '-',
);
const nastyString = fc.oneof(
  { weight: 4, arbitrary: fc.string({ unit: nastyChar, maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ maxLength: 30 }) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 30 }) },
  { weight: 1, arbitrary: fc.constantFrom('', 'ls', 'echo hi', 'rm -rf /', 'sudo id', '__proto__', 'constructor', 'toString', '../../etc/passwd', '/etc', '/') },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('a', '\u202e', '$(', '\u0000', 'é'), fc.integer({ min: 1_000, max: 80_000 })).map(([c, n]) => c.repeat(n)) },
);
const nastyNumber = fc.oneof(
  fc.integer(), fc.double(), fc.constantFrom(0, -1, 1e308, -1e308, 2 ** 53, 2 ** 63, 0.5, Number.MAX_SAFE_INTEGER + 2),
);
/** Any JSON value, favouring the hostile ones. */
const nastyValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: nastyString },
  { weight: 2, arbitrary: nastyNumber },
  { weight: 1, arbitrary: fc.constantFrom(true, false, null) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 3 }) },
  { weight: 1, arbitrary: fc.dictionary(nastyString, fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }) },
);

/** The object keys a zod schema knows about (request bodies are objects, or unions of them). */
function knownKeys(schema: z.ZodType | null | undefined): string[] {
  const def = (schema as { def?: { type?: string; shape?: Record<string, z.ZodType>; options?: z.ZodType[] } } | null | undefined)?.def;
  if (!def) return [];
  if (def.shape) return Object.keys(def.shape);
  if (def.options) return def.options.flatMap((o) => knownKeys(o));
  return [];
}

/** Objects shaped like a route's body: known keys with good or hostile values, plus unknown and prototype keys. */
function objectFor(route: RouteDoc): fc.Arbitrary<Record<string, unknown>> {
  const keys = [...new Set([...knownKeys(route.body?.['application/json']), 'command', 'files', 'remember', 'enabled', 'jsonrpc', 'method', 'params'])];
  const goodValue: Record<string, fc.Arbitrary<unknown>> = {
    command: fc.constantFrom('ls', 'echo hi', 'cat README.md', 'ls | wc -l', 'rm -rf x', 'sudo ls', 'a'.repeat(17_000)),
    cwd: fc.constantFrom('/', '/tmp', '..', 'sub', t?.dir ?? '/'),
    env: fc.dictionary(nastyString, nastyString, { maxKeys: 3 }),
    stdin: nastyString,
    stdinEncoding: fc.constantFrom('utf8', 'base64', 'hex'),
    timeoutMs: nastyNumber,
    interactive: fc.boolean(),
    files: fc.dictionary(nastyString, fc.oneof(nastyString, fc.record({ data: nastyString, encoding: fc.constantFrom('utf8', 'base64'), mode: nastyNumber })), { maxKeys: 3 }),
    collect: fc.array(nastyString, { maxLength: 3 }),
    remember: fc.record({ scope: fc.constantFrom('exact', 'prefix', 'all'), ttlMs: nastyNumber }, { requiredKeys: [] }),
    enabled: fc.boolean(),
    team: fc.constantFrom('data', 'web', 'default', 'nope', '__proto__', 'constructor', 'hasOwnProperty'),
    jsonrpc: fc.constant('2.0'),
    method: fc.constantFrom('initialize', 'tools/list', 'tools/call', 'notifications/cancelled', 'ping', 'nope'),
    params: fc.oneof(
      fc.record({ name: fc.constantFrom('exec', 'check_command', 'list_allowed_paths', 'nope'), arguments: fc.dictionary(fc.constantFrom('command', 'cwd', 'env', 'stdin', 'timeoutMs', 'x'), nastyValue, { maxKeys: 3 }) }),
      fc.record({ protocolVersion: fc.constantFrom('2025-06-18', '1999-01-01'), capabilities: fc.constant({}), clientInfo: fc.constant({ name: 'fuzz', version: '1' }) }),
      nastyValue,
    ),
  };
  const entry = fc.constantFrom(...keys).chain((k) => fc.tuple(fc.constant(k), fc.oneof({ weight: 2, arbitrary: goodValue[k] ?? nastyValue }, { weight: 1, arbitrary: nastyValue })));
  const unknownEntry = fc.tuple(fc.oneof(nastyString, fc.constantFrom('__proto__', 'constructor', 'prototype', 'id')), nastyValue);
  return fc
    .tuple(fc.array(entry, { maxLength: 5 }), fc.array(unknownEntry, { maxLength: 1 }), fc.boolean())
    .map(([known, unknown, addUnknown]) => {
      const o: Record<string, unknown> = {};
      for (const [k, v] of [...known, ...(addUnknown ? unknown : [])]) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
      if (o.jsonrpc !== undefined && o.id === undefined) o.id = 1;
      return o;
    });
}

interface Body {
  payload?: string | Buffer;
  /** Content type the generator implies; the header generator may override it. */
  type?: string;
  what: string;
}

const json = (v: unknown): string => JSON.stringify(v) ?? 'null';

async function tarOf(entries: { name: string; type?: tar.Header['type']; linkname?: string; data?: string; size?: number }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === undefined || e.type === 'file') pack.entry({ name: e.name, size: Buffer.byteLength(e.data ?? '') }, e.data ?? '');
    else pack.entry({ name: e.name, type: e.type, linkname: e.linkname });
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A handful of tar archives, good and hostile, built once. */
let TARS: Buffer[] = [];
beforeAll(async () => {
  const good = await tarOf([{ name: 'a.txt', data: 'hello' }]);
  TARS = [
    good,
    await tarOf([{ name: '../escape', data: 'x' }]),
    await tarOf([{ name: '/etc/x', data: 'x' }]),
    await tarOf([{ name: 'l', type: 'symlink', linkname: '/etc' }]),
    await tarOf([{ name: 'h', type: 'link', linkname: '/etc/passwd' }]),
    await tarOf([{ name: 'big', data: 'x'.repeat(40 * 1024) }]),
    await tarOf(Array.from({ length: 20 }, (_, i) => ({ name: `f${i}`, data: '' }))),
    await tarOf([{ name: 'a\u0000b', data: 'x' }]),
    await tarOf([{ name: 'p', type: 'fifo' }]),
    good.subarray(0, 700), // cut in the middle of an entry
    good.subarray(0, 100), // cut in the middle of a header
    Buffer.concat([good.subarray(0, 512), Buffer.alloc(512, 0xff)]),
    Buffer.alloc(0),
    Buffer.alloc(1024, 0),
  ];
});

function multipart(parts: { name: string; filename?: string; type?: string; data: string | Buffer }[], boundary = 'fuzz-boundary'): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const disposition = `form-data; name="${p.name}"${p.filename !== undefined ? `; filename="${p.filename}"` : ''}`;
    chunks.push(Buffer.from(`--${boundary}\r\ncontent-disposition: ${disposition}\r\n${p.type ? `content-type: ${p.type}\r\n` : ''}\r\n`), Buffer.from(p.data), Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}

/** Mutates a text: cut it, insert a character, drop a character, or flip one. */
const mutateText = (text: string): fc.Arbitrary<string> =>
  fc.tuple(fc.nat({ max: Math.max(0, text.length) }), fc.constantFrom('"', '{', '}', '[', ']', ',', ':', '\\', '\u0000', 'x', ' ', 'e', '-', '\ud800'), fc.constantFrom('cut', 'insert', 'drop', 'flip')).map(([i, c, op]) => {
    if (op === 'cut') return text.slice(0, i);
    if (op === 'insert') return text.slice(0, i) + c + text.slice(i);
    if (op === 'drop') return text.slice(0, i) + text.slice(i + 1);
    return text.slice(0, i) + c + text.slice(i + 1);
  });

function bodyFor(route: RouteDoc): fc.Arbitrary<Body> {
  const obj = objectFor(route);
  const media = Object.keys(route.body ?? {});
  const variants: fc.Arbitrary<Body>[] = [
    obj.map((o) => ({ payload: json(o), type: 'application/json', what: 'object' })),
    obj.map((o) => ({ payload: json([o]), type: 'application/json', what: 'batch' })),
    fc.jsonValue({ maxDepth: 4 }).map((v) => ({ payload: json(v), type: 'application/json', what: 'json value' })),
    obj.chain((o) => mutateText(json(o))).map((s) => ({ payload: s, type: 'application/json', what: 'malformed json' })),
    fc.constantFrom('', ' ', 'null', '{', '}', '[]', '{"command":}', '{"a":1,}', "{'command':'ls'}", 'NaN', '1e999', '"\\ud800"', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{"x":1}}}', '\ufeff{}', '{"command":"ls","command":"rm -rf /"}')
      .map((s) => ({ payload: s, type: 'application/json', what: 'odd json text' })),
    fc.tuple(fc.integer({ min: 100, max: 30_000 }), fc.constantFrom('[', '{"a":')).map(([n, open]) => ({
      payload: open.repeat(n) + '1' + (open === '[' ? ']' : '}').repeat(n), type: 'application/json', what: `nesting ${n}`,
    })),
    fc.constantFrom(BODY_LIMIT + 1, BODY_LIMIT * 2).map((n) => ({ payload: `{"command":"${'a'.repeat(n)}"}`, type: 'application/json', what: 'over the body limit' })),
    fc.uint8Array({ maxLength: 256 }).map((b) => ({ payload: Buffer.from(b), type: 'application/json', what: 'random bytes' })),
    fc.constant({ what: 'no body' }),
  ];
  if (media.includes('application/x-tar') || route.path.includes('files') || route.path.endsWith('exec')) {
    variants.push(fc.nat({ max: 13 }).map((i) => ({ payload: TARS[i], type: 'application/x-tar', what: `tar ${i}` })));
    variants.push(fc.uint8Array({ maxLength: 2048 }).map((b) => ({ payload: Buffer.from(b), type: 'application/x-tar', what: 'random tar bytes' })));
  }
  if (media.includes('multipart/form-data')) {
    const request = fc.oneof(obj.map(json), obj.chain((o) => mutateText(json(o))), nastyString);
    variants.push(
      fc.tuple(request, fc.nat({ max: 13 }), fc.constantFrom('request', 'files', 'other', ''), fc.constantFrom('files', 'request', 'x'), fc.boolean(), fc.boolean()).map(([req, i, f1, f2, withFile, twice]) => {
        const parts: { name: string; filename?: string; type?: string; data: string | Buffer }[] = [{ name: f1, data: req }];
        if (withFile) parts.push({ name: f2, filename: 'in.tar', type: 'application/x-tar', data: TARS[i]! });
        if (twice) parts.push({ name: f2, filename: 'again.tar', data: TARS[0]! });
        return { payload: multipart(parts), type: 'multipart/form-data; boundary=fuzz-boundary', what: 'multipart' };
      }),
      fc.uint8Array({ maxLength: 512 }).map((b) => ({ payload: Buffer.concat([Buffer.from('--fuzz-boundary\r\n'), Buffer.from(b)]), type: 'multipart/form-data; boundary=fuzz-boundary', what: 'broken multipart' })),
      fc.constant({ payload: multipart([{ name: 'request', data: '{"command":"ls"}' }]), type: 'multipart/form-data', what: 'multipart without boundary' }),
    );
  }
  return fc.oneof(...variants);
}

const ID_POOL = ['%00', '..', '%2e%2e', '%2F', 'a%2Fb', '%', '%ZZ', '%E2%80%AE', '%F0%9F%98%80', '%ED%A0%80', '__proto__', 'constructor', ' ', '%20', '-1', '0', 'null', 'undefined', 'a'.repeat(200), 'a'.repeat(201), 'x'.repeat(5000)];
const idArb = fc.oneof(
  { weight: 2, arbitrary: fc.constantFrom(...ID_POOL) },
  { weight: 2, arbitrary: fc.constant('REAL') },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('a', '.', '%', '2', 'e', 'F', '0', '-', '_', '~'), minLength: 1, maxLength: 20 }) },
);

const encodeAny = (s: string): string => s.split(/([\ud800-\udfff])/).map((p, i) => (i % 2 === 1 ? '%ED%A0%80' : encodeURIComponent(p))).join('');
const queryArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '?', '?status=pending', '?status=nope', '?status=pending&status=approved', '?limit=0', '?limit=-1', '?limit=1e400', '?limit=abc', '?limit=5&limit=6',
      '?since=yesterday', '?since=2024-01-01T00:00:00Z', '?decision=maybe', '?team=__proto__', '?team=web', '?include=*.txt', '?include=../../etc/passwd',
      '?include=%00', '?include[]=x', '?__proto__[x]=1', '?constructor[prototype][x]=1', '?a=%ZZ', '?%00=%00', '?x=' + 'y'.repeat(10_000), '?&&&==&', '?;;;', '?limit=%00',
    ),
  },
  // Lone surrogates cannot be percent-encoded: they go on the wire as the invalid UTF-8 they would be.
  { weight: 1, arbitrary: fc.array(fc.tuple(nastyString, nastyString), { maxLength: 3 }).map((kv) => '?' + kv.map(([k, v]) => `${encodeAny(k)}=${encodeAny(v)}`).join('&')) },
);

/** Header values as they can arrive on the wire: Latin-1, no control characters other than TAB. */
const headerText = fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).filter((c) => c !== 0x7f).map((c) => String.fromCharCode(c)), maxLength: 60 });
const authArb = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...Object.values(TOKENS).map((tok) => `Bearer ${tok}`)) },
  {
    weight: 3,
    arbitrary: fc.oneof(
      fc.constantFrom('', 'Bearer', 'Bearer ', 'bearer ' + TOKENS.agent, `Bearer  ${TOKENS.agent}  `, `Bearer ${TOKENS.agent} extra`, `Basic ${Buffer.from('a:b').toString('base64')}`, `Bearer ${TOKENS.agent}\t`),
      fc.integer({ min: 1_000, max: 200_000 }).map((n) => `Bearer ${'A'.repeat(n)}`),
      fc.integer({ min: 100, max: 20_000 }).map((n) => `Bearer ${' '.repeat(n)}x y`),
      headerText.map((h) => `Bearer ${h}`),
      headerText,
    ),
  },
  { weight: 1, arbitrary: fc.constant(undefined) },
);
const contentTypeArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant('IMPLIED') },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      undefined, '', 'application/json', 'APPLICATION/JSON', 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'application/json; charset=latin1',
      'application/json, application/json', 'application/json;application/json', 'application/jsonx', 'application/x-json', 'application/merge-patch+json', 'text/plain',
      'text/html', 'application/x-www-form-urlencoded', 'multipart/form-data', 'multipart/form-data; boundary=', 'multipart/form-data; boundary=fuzz-boundary',
      'multipart/mixed; boundary=x', 'application/x-tar', 'application/octet-stream', '*/*', 'application/*', ';', 'application/json; boundary=x; charset=utf-8',
    ),
  },
  { weight: 1, arbitrary: headerText },
);
const acceptArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      '*/*', 'application/json', 'application/x-ndjson', 'text/event-stream', 'application/json, text/event-stream', 'text/html', 'image/png', '',
      'application/json;q=0', 'text/event-stream;q=0.1, application/json;q=0.9', 'application/*', 'nonsense', ',,,', 'application/json'.repeat(500),
    ),
  },
  { weight: 1, arbitrary: headerText },
);
const teamArb = fc.oneof(
  { weight: 3, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom('data', 'web', 'default', 'nope', '', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf') },
  { weight: 1, arbitrary: headerText },
);

const METHODS = ['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD'] as const;

interface FuzzRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body: Body;
}

/** A request that would succeed, per operation; a route missing here starts from an empty JSON object. */
const VALID_BODY: Record<string, unknown> = {
  checkCommand: { command: 'ls' },
  exec: { command: 'ls' },
  sessionExec: { command: 'ls' },
  createSession: {},
  putSessionFiles: { files: { 'a.txt': 'hi' } },
  approve: { note: 'ok' },
  reject: { reason: 'no' },
  setSafeMode: { enabled: true },
  mcp: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'check_command', arguments: { command: 'ls' } } },
};
const TOKEN_FOR_ROLE: Record<string, string> = { exec: TOKENS.agent, approve: TOKENS.human, any: TOKENS.agent, admin: TOKENS.admin };

function fill(route: RouteDoc, ids: string[]): string {
  let i = 0;
  return route.path.replace(/:(\w+)/g, () => {
    const id = ids[i++] ?? 'REAL';
    if (id !== 'REAL') return id;
    return route.path.startsWith('/v1/sessions') ? sessionId : route.path.startsWith('/v1/approvals') ? approvalId : route.path.startsWith('/v1/rules') ? ruleId : execId;
  });
}

/** The request the route is documented to accept, with real ids and the token of its role (or the admin's). */
function validRequest(route: RouteDoc, admin: boolean): FuzzRequest {
  const headers: Record<string, string> = {};
  if (route.auth) headers.authorization = `Bearer ${admin ? TOKENS.admin : TOKEN_FOR_ROLE[route.auth]}`;
  if (route.path === '/mcp') headers.accept = 'application/json, text/event-stream';
  const body: Body = route.body ? { payload: json(VALID_BODY[route.operationId] ?? {}), type: 'application/json', what: 'valid' } : { what: 'no body' };
  if (body.type) headers['content-type'] = body.type;
  return { method: route.method, url: fill(route, []), headers, body };
}

type Mutation = (r: FuzzRequest) => FuzzRequest;
const setHeader = (name: string, value: fc.Arbitrary<string | undefined>): fc.Arbitrary<Mutation> =>
  value.map((v) => (r: FuzzRequest) => {
    const headers = { ...r.headers };
    if (v === undefined) delete headers[name];
    else headers[name] = v;
    return { ...r, headers };
  });

/** One hostile change to a request: a header, the body, one field of it, an id, the query or the method. */
function mutationFor(route: RouteDoc): fc.Arbitrary<Mutation> {
  const params = (route.path.match(/:(\w+)/g) ?? []).length;
  const keys = [...new Set([...knownKeys(route.body?.['application/json']), 'command', 'x'])];
  const field = fc.tuple(fc.constantFrom(...keys), nastyValue, fc.constantFrom('set', 'delete', 'nest')).map(([k, v, op]) => (r: FuzzRequest): FuzzRequest => {
    let o: Record<string, unknown> = {};
    try {
      const parsed = JSON.parse(String(r.body.payload)) as unknown;
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) o = parsed as Record<string, unknown>;
    } catch {
      // not JSON (yet): start from an empty object
    }
    const target = route.path === '/mcp' ? (((o.params as Record<string, unknown> | undefined)?.arguments as Record<string, unknown> | undefined) ?? o) : o;
    if (op === 'delete') delete target[k];
    else Object.defineProperty(target, k, { value: op === 'nest' ? { [k]: v } : v, enumerable: true, writable: true, configurable: true });
    let payload: string;
    try {
      payload = json(o);
    } catch {
      return r; // a body nested too deep to re-serialise here: leave it as it is
    }
    return { ...r, body: { payload, type: 'application/json', what: `field ${k} ${op}` } };
  });
  return fc.oneof(
    setHeader('authorization', authArb),
    setHeader('content-type', contentTypeArb.map((c) => (c === 'IMPLIED' ? undefined : c))),
    setHeader('accept', acceptArb),
    setHeader('x-execgate-team', teamArb),
    setHeader('x-execgate-request', fc.oneof(fc.constant('{"command":"ls"}'), nastyString.map((x) => json({ command: x })), headerText)),
    setHeader('origin', fc.constantFrom('http://evil.example', 'null', 'http://127.0.0.1')),
    bodyFor(route).map((b) => (r: FuzzRequest) => ({ ...r, body: b, headers: b.type ? { ...r.headers, 'content-type': b.type } : r.headers })),
    field,
    fc.array(idArb, { minLength: params, maxLength: params }).map((ids) => (r: FuzzRequest) => ({ ...r, url: fill(route, ids) + (r.url.includes('?') ? r.url.slice(r.url.indexOf('?')) : '') })),
    queryArb.map((q) => (r: FuzzRequest) => ({ ...r, url: r.url.split('?')[0]! + q })),
    fc.constantFrom(...METHODS).map((m) => (r: FuzzRequest) => ({ ...r, method: m })),
  );
}

/** Half near-valid requests (the valid one with one or two hostile changes, to reach deep into the handler), half wild ones. */
function requestFor(route: RouteDoc): fc.Arbitrary<FuzzRequest> {
  const nearValid = fc.tuple(fc.boolean(), fc.array(mutationFor(route), { minLength: 1, maxLength: 2 })).map(([admin, ms]) => ms.reduce((r, m) => m(r), validRequest(route, admin)));
  return fc.oneof(nearValid, wildRequestFor(route));
}

function wildRequestFor(route: RouteDoc): fc.Arbitrary<FuzzRequest> {
  const params = (route.path.match(/:(\w+)/g) ?? []).length;
  return fc
    .record({
      method: fc.oneof({ weight: 9, arbitrary: fc.constant(route.method) }, { weight: 1, arbitrary: fc.constantFrom(...METHODS) }),
      ids: fc.array(idArb, { minLength: params, maxLength: params }),
      query: queryArb,
      body: bodyFor(route),
      authorization: authArb,
      contentType: contentTypeArb,
      accept: acceptArb,
      team: teamArb,
      request: fc.oneof(fc.constant(undefined), fc.constant('{"command":"ls"}'), nastyString.map((s) => json({ command: s })), headerText, fc.constant('{"command":"ls","files":{"a":"b"}}')),
      originHost: fc.oneof({ weight: 5, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.constantFrom('evil.example', '[::1]', '127.0.0.1:1', 'null', '') }),
    })
    .map((r) => {
      const url = fill(route, r.ids) + r.query;
      const headers: Record<string, string> = {};
      if (r.authorization !== undefined) headers.authorization = r.authorization;
      const type = r.contentType === 'IMPLIED' ? r.body.type : r.contentType;
      if (type !== undefined) headers['content-type'] = type;
      if (r.accept !== undefined) headers.accept = r.accept;
      if (r.team !== undefined) headers['x-execgate-team'] = r.team;
      if (r.request !== undefined) headers['x-execgate-request'] = r.request;
      if (r.originHost !== undefined) headers.origin = `http://${r.originHost}`;
      return { method: r.method, url, headers, body: r.body };
    });
}

// ---------------------------------------------------------------------------------------------------------
// The oracle

const SNAKE = /^[a-z][a-z0-9]*(_[a-z0-9]+)*$/;

interface Answer {
  status: number;
  headers: Record<string, string | string[] | number | undefined>;
  body: string;
}

function describeRequest(r: FuzzRequest): string {
  const payload = r.body.payload === undefined ? '' : typeof r.body.payload === 'string' ? r.body.payload : r.body.payload.toString('latin1');
  return `${r.method} ${r.url.slice(0, 200)} [${r.body.what}] headers=${JSON.stringify(r.headers).slice(0, 300)} body=${JSON.stringify(payload.slice(0, 200))}`;
}

/** The promises every answer keeps; `mcp` allows JSON-RPC error bodies from the MCP transport. */
function checkAnswer(route: RouteDoc | undefined, req: FuzzRequest, a: Answer): void {
  const where = `${describeRequest(req)} → ${a.status} ${a.body.slice(0, 300)}`;
  expect(a.status, where).toBeLessThan(500);
  expect(crashes, where).toEqual([]);
  const type = String(a.headers['content-type'] ?? '');
  if (a.status >= 200 && a.status < 300) {
    const schema = route?.responses[a.status]?.content?.['application/json'];
    if (schema && type.startsWith('application/json') && req.method !== 'HEAD') {
      const r = schema.safeParse(JSON.parse(a.body));
      expect(r.success, `${where}\n${r.error?.message ?? ''}`).toBe(true);
    }
    return;
  }
  if (req.method === 'HEAD' || a.status < 200 || a.status === 204 || a.status === 304) return;
  expect(type, where).toMatch(/^application\/json/);
  const body = JSON.parse(a.body) as Record<string, unknown>;
  if (req.url.split('?')[0] === '/mcp' && body.jsonrpc === '2.0') {
    const e = body.error as { code?: unknown; message?: unknown } | undefined;
    expect(typeof e?.code === 'number' && typeof e.message === 'string', where).toBe(true);
    return;
  }
  const shape = ErrorBodySchema.safeParse(body);
  expect(shape.success, `${where}\n${shape.error?.message ?? ''}`).toBe(true);
  const error = body.error as { code: string; message: string; fields?: { path: string; message: string }[]; entry?: string };
  expect(error.code, where).toMatch(SNAKE);
  expect(error.message.length, where).toBeGreaterThan(0);
  if (a.status === 400) {
    // A 400 names what failed: the fields (invalid_request), or the entry or field (invalid_files).
    expect(['invalid_request', 'invalid_files'], where).toContain(error.code);
    const named = (error.fields ?? []).filter((f) => f.path.length > 0 && f.message.length > 0);
    if (error.code === 'invalid_request' || error.entry === undefined) expect(named.length, where).toBeGreaterThan(0);
  }
}

/** Sends one request with inject; a feed that never ends (SSE of /v1/events) is read up to its first chunk. */
async function send(r: FuzzRequest): Promise<Answer> {
  const res = await t.app.inject({
    method: r.method as 'GET',
    url: r.url,
    headers: r.headers,
    ...(r.body.payload !== undefined && r.method !== 'GET' && r.method !== 'HEAD' ? { payload: r.body.payload } : {}),
    payloadAsStream: true,
  });
  const stream = res.stream();
  const chunks: Buffer[] = [];
  const feed = res.statusCode === 200 && String(res.headers['content-type'] ?? '').startsWith('text/event-stream') && (r.method === 'GET' || r.method === 'HEAD');
  if (feed) stream.destroy();
  else for await (const c of stream) chunks.push(Buffer.from(c as Buffer));
  return { status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') };
}

// ---------------------------------------------------------------------------------------------------------

describe('fuzzing every route: never a 5xx, never a crash, always the SPEC §3 error shape', () => {
  it('the fuzzed route list is the ROUTES table of the OpenAPI document', () => {
    expect(ROUTES.length).toBeGreaterThan(20);
    expect(ROUTES.map((r) => `${r.method} ${r.path}`)).toContain('POST /mcp');
    expect(ROUTES.map((r) => `${r.method} ${r.path}`)).toContain('PUT /v1/sessions/:id/files');
  });

  it.each(ROUTES.map((r) => [`${r.method} ${r.path}`, r] as const))('%s', async (_name, route) => {
    await fc.assert(
      fc.asyncProperty(requestFor(route), async (req) => {
        const answer = await send(req);
        tally(`${route.method} ${route.path}`, answer);
        checkAnswer(route.method === req.method ? route : undefined, req, answer);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
  }, 120_000);

  it('paths no route has, with any method', async () => {
    const pathArb = fc.oneof(
      fc.constantFrom('/v1', '/v1/', '/v2/exec', '/v1/exec/', '//v1/exec', '/v1//exec', '/v1/exec%00', '/v1/%2e%2e/exec', '/%2e%2e/etc/passwd', '/v1/executions/a/b/c', '/mcp/x', '/*', '/%', '/' + 'a'.repeat(10_000)),
      fc.string({ unit: fc.constantFrom('/', 'v', '1', '%', '2', 'e', '.', 'x', '?', '#', '&', '='), maxLength: 30 }).map((s) => '/' + s),
    );
    await fc.assert(
      fc.asyncProperty(pathArb, fc.constantFrom(...METHODS), authArb, async (url, method, authorization) => {
        const req: FuzzRequest = { method, url, headers: authorization === undefined ? {} : { authorization }, body: { what: 'none' } };
        checkAnswer(undefined, req, await send(req));
      }),
      { seed: SEED, numRuns: RUNS * 2, endOnFailure: true },
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// What the fuzzer found, pinned as examples (each was a 5xx or an answer of another shape).

describe('regressions found by the fuzzer', () => {
  const admin = (team: string) => ({ ...auth(TOKENS.admin), 'x-execgate-team': team });

  it.each(['constructor', '__proto__', 'toString', 'hasOwnProperty'])('an admin acting for team %j (an Object.prototype name) gets 404 team_not_found, not a 500', async (team) => {
    for (const [method, url, payload] of [['POST', '/v1/policy/check', { command: 'ls' }], ['POST', '/v1/exec', { command: 'ls' }], ['POST', '/v1/sessions', {}]] as const) {
      const r = await t.app.inject({ method, url, headers: admin(team), payload });
      expect(r.statusCode, `${method} ${url}`).toBe(404);
      expect(r.json().error.code).toBe('team_not_found');
    }
    // The same name in a body: safe mode is not switched (nor stored) for a team that does not exist.
    const s = await t.app.inject({ method: 'PUT', url: '/v1/safe-mode', headers: auth(TOKENS.admin), payload: { enabled: false, team } });
    expect(s.statusCode).toBe(404);
    expect(s.json().error.code).toBe('team_not_found');
  });

  it.each([
    ['a part cut short after the boundary', 'multipart/form-data; boundary=b', '--b\r\n'],
    ['no closing boundary', 'multipart/form-data; boundary=b', '--b\r\ncontent-disposition: form-data; name="request"\r\n\r\n{"command":"ls"}'],
    ['a file part cut short', 'multipart/form-data; boundary=b', '--b\r\ncontent-disposition: form-data; name="files"; filename="x"\r\n\r\nabc'],
    ['no boundary parameter', 'multipart/form-data', '--b\r\n\r\n--b--\r\n'],
    ['garbage', 'multipart/form-data; boundary=b', 'garbage'],
  ])('a broken multipart body (%s) is a 400 naming `multipart`, not a 500', async (_name, type, body) => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': type }, payload: body });
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'invalid_request', fields: [{ path: 'multipart' }] });
  });

  it('a multipart part with an empty name is a 400 naming the part, not a field with an empty path', async () => {
    const r = await t.app.inject({ method: 'POST', url: '/v1/exec', headers: { ...auth(TOKENS.agent), 'content-type': 'multipart/form-data; boundary=fuzz-boundary' }, payload: multipart([{ name: '', data: '{}' }]) });
    expect(r.statusCode).toBe(400);
    expect(r.json().error).toMatchObject({ code: 'invalid_request', fields: [{ path: 'multipart' }] });
  });

  it.each([['/v1/executions/%'], ['/v1/sessions/a%ZZ'], ['/v1/approvals/ee%a-%~02F/approve'], ['/1%1=1=']])('a path that is not valid percent-encoding (%s) is a 400 in the SPEC shape, naming `url`', async (url) => {
    const r = await t.app.inject({ method: 'GET', url, headers: auth(TOKENS.admin) });
    expect(r.statusCode).toBe(400);
    expect(ErrorBodySchema.parse(r.json()).error).toMatchObject({ code: 'invalid_request', fields: [{ path: 'url' }] });
  });

  it.each([[201, 'id'], [5000, 'params']])('an id of %i characters is a 400 in the SPEC shape, naming %s', async (n, path) => {
    const r = await t.app.inject({ method: 'GET', url: `/v1/executions/${'a'.repeat(n)}`, headers: auth(TOKENS.admin) });
    expect(r.statusCode).toBe(400);
    expect(ErrorBodySchema.parse(r.json()).error).toMatchObject({ code: 'invalid_request', fields: [{ path }] });
  });
});

// ---------------------------------------------------------------------------------------------------------
// Raw HTTP: what inject cannot send.

function raw(port: number, bytes: Buffer | string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c) => chunks.push(c));
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(Buffer.concat(chunks).toString('latin1')));
    socket.write(bytes, () => socket.end());
    // A request the server still waits on (its body announced but never sent): end it from our side.
    setTimeout(() => socket.destroy(), 3_000).unref();
  });
}

function parseRaw(text: string): Answer[] {
  const out: Answer[] = [];
  let rest = text;
  while (rest.startsWith('HTTP/1.1 ')) {
    const head = rest.indexOf('\r\n\r\n');
    if (head === -1) break;
    const lines = rest.slice(0, head).split('\r\n');
    const status = Number(lines[0]!.split(' ')[1]);
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) {
      const i = l.indexOf(':');
      headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
    }
    let body = '';
    rest = rest.slice(head + 4);
    if (status < 200) {
      // an interim answer: no body
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      body = rest.slice(0, n);
      rest = rest.slice(n);
    } else if (headers['transfer-encoding'] === 'chunked') {
      for (;;) {
        const eol = rest.indexOf('\r\n');
        const n = parseInt(rest.slice(0, eol), 16);
        if (eol === -1 || Number.isNaN(n)) break;
        body += rest.slice(eol + 2, eol + 2 + n);
        rest = rest.slice(eol + 2 + n + 2);
        if (n === 0) break;
      }
    } else {
      body = rest;
      rest = '';
    }
    out.push({ status, headers, body: Buffer.from(body, 'latin1').toString('utf8') });
  }
  return out;
}

describe('raw HTTP framing: never a 5xx, and any JSON error has the SPEC §3 shape', () => {
  let port = 0;
  beforeAll(async () => {
    await t.app.listen({ host: '127.0.0.1', port: 0 });
    port = (t.app.server.address() as { port: number }).port;
  });

  const a = auth(TOKENS.agent).authorization;
  // What each answers: a 400 for what is not HTTP, 413/431 for what is too big, the route's own answer
  // otherwise; CONNECT has no handler, so Node closes the connection without an answer.
  const cases: [string, string, number[]][] = [
    ['a request line that is not HTTP', 'HELLO\r\n\r\n', [400]],
    ['an unknown HTTP version', 'GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n', [400]],
    ['a space in the target', 'GET /v1/exec utions HTTP/1.1\r\nHost: x\r\n\r\n', [400]],
    ['two content-lengths that differ', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 16\r\n\r\n{"command":"ls"}`, [400]],
    ['content-length and chunked together', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nContent-Length: 16\r\nTransfer-Encoding: chunked\r\n\r\n{"command":"ls"}`, [400]],
    ['a broken chunk size', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`, [400]],
    ['a chunked body over the body limit', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${(BODY_LIMIT + 10).toString(16)}\r\n${'a'.repeat(BODY_LIMIT + 10)}\r\n0\r\n\r\n`, [413]],
    ['a content-length over the body limit, body never sent', `POST /v1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\n\r\n{`, [413]],
    ['a negative content-length', `POST /v1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nContent-Length: -1\r\n\r\n`, [400]],
    ['two content types (the first counts)', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: text/plain\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"command":"ls"}`, [415]],
    ['two Authorization headers', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"command":"ls"}`, [401]],
    ['two X-Execgate-Team headers', `POST /v1/policy/check HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth(TOKENS.admin).authorization}\r\nX-Execgate-Team: web\r\nX-Execgate-Team: data\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"command":"ls"}`, [404]],
    ['a header over the size limit', `GET /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'A'.repeat(20_000)}\r\n\r\n`, [431]],
    ['a NUL in a header', `GET /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\u0000b\r\n\r\n`, [400]],
    ['a header without a colon', 'GET /v1/executions HTTP/1.1\r\nHost: x\r\nAuthorization\r\n\r\n', [400]],
    ['a bare LF request', `GET /healthz HTTP/1.1\nHost: x\n\n`, [400]],
    ['an absolute-form target', 'GET http://evil.example/v1/executions HTTP/1.1\r\nHost: x\r\n\r\n', [401]],
    ['an asterisk target', 'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n', [404]],
    ['a CONNECT request', 'CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: x\r\n\r\n', []],
    ['an upgrade to websocket', 'GET /v1/events HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n', [401]],
    ['pipelined requests, the second broken', 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost x\r\n\r\n', [400]],
    ['an expect: 100-continue with no body', `POST /v1/exec HTTP/1.1\r\nHost: x\r\nAuthorization: ${a}\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 16\r\n\r\n`, [100, 400]],
  ];

  it.each(cases)('%s', async (name, request, statuses) => {
    const answers = parseRaw(await raw(port, request));
    expect(answers.map((x) => x.status)).toEqual(statuses);
    for (const answer of answers) checkAnswer(undefined, { method: 'RAW', url: name, headers: {}, body: { what: 'raw' } }, answer);
    expect(crashes).toEqual([]);
  });
});
