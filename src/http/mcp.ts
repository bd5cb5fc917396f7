import { isUtf8 } from 'node:buffer';
import { StringDecoder } from 'node:string_decoder';
import type { FastifyBaseLogger, FastifyInstance } from 'fastify';
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js';
import type { CallToolResult, RequestId, ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js';
import { z } from 'zod';
import type { AppDeps } from '../app.js';
import { VERSION } from '../version.js';
import type { Decision } from '../policy/types.js';
import { ServiceError, notApprovedCode } from '../service/errors.js';
import { ExecBodySchema } from './schemas.js';
import type { Caller, ExecEvent, PrepareOutcome } from '../service/exec-service.js';
import type { AuthedCaller } from './auth.js';

/**
 * The Model Context Protocol endpoint (Streamable HTTP, stateless): execgate as the shell of any MCP agent.
 *
 * Each POST gets its own McpServer and transport, bound to the caller the route's auth hook found, so a tool
 * call acts with exactly the bearer token of its HTTP request. `exec` is the POST /v1/exec pipeline (policy →
 * approval → quota → sandbox) with its events turned into progress notifications; the answer is one tool
 * result. Nothing is kept between requests except the table of running calls that lets a
 * `notifications/cancelled` (which, without sessions, arrives in a request of its own) stop the call it names.
 */

type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>;

/** Progress is sent at least this often while a call waits (approval, quiet command), so clients that reset their timeout on progress keep waiting. */
const HEARTBEAT_MS = 15_000;


const INSTRUCTIONS = `execgate runs shell commands for you in short-lived, isolated sandbox containers.
- Only the host directories listed by list_allowed_paths are visible, at the same paths; some are read-only. Each exec starts a fresh container: only files written into a read-write allowed path persist.
- A policy checks every command before it runs. It is allowed (it runs), denied (the result says which part of the command and which rule; do not retry the same command — change it or ask the user), or needs a human's approval: the exec call then waits until someone approves or rejects it in execgate's dashboard.
- check_command tells you the decision without running anything.`;

// The same validation as POST /v1/exec (one schema), with descriptions written for an agent.
const body = ExecBodySchema.shape;
const ExecInput = {
  command: body.command.describe('The command line, run with /bin/sh -c. Pipes, &&, ; and redirections work; every part is checked by the policy.'),
  cwd: body.cwd.describe('Working directory: an absolute path inside an allowed path, or a path relative to the default working directory (see list_allowed_paths). Default: the default working directory.'),
  env: body.env.describe('Extra environment variables, e.g. {"DEBUG": "1"}. Variables that change which program runs or what it loads (PATH, LD_PRELOAD, ...) are refused.'),
  secretEnv: body.secretEnv.describe('Names of env variables whose values are secret (at least 8 characters): the approver sees only a hash of them, and they are replaced by [redacted:NAME] in the output you get back.'),
  timeoutMs: body.timeoutMs.describe("Stop the command after this many milliseconds. Capped by the team's limit (see list_allowed_paths)."),
  stdin: body.stdin.describe("Text written to the command's standard input, which is then closed. Part of what a human approves."),
};

const ExecOutput = {
  execId: z.string().describe('The execution id in execgate\'s history'),
  exitCode: z.number().int().nullable().describe('null when the command did not exit on its own'),
  timedOut: z.boolean(),
  truncated: z.boolean().describe("true when the output reached the team's cap and the command was stopped"),
  oomKilled: z.boolean(),
  durationMs: z.number(),
  stdout: z.string(),
  stderr: z.string(),
  invalidUtf8: z.object({ stdout: z.boolean(), stderr: z.boolean() }).describe('true for a stream that had bytes that are not UTF-8 (shown as U+FFFD)'),
  decision: z.enum(['allow', 'ask']),
  approvalId: z.string().optional(),
  approvedBy: z.string().optional(),
};

const CheckInput = {
  command: z.string().min(1).max(65_536).describe('The command line to judge, exactly as it would be given to exec.'),
  cwd: body.cwd.describe('The working directory it would run in (as for exec).'),
};

const SegmentOutput = z.object({
  source: z.string().describe('The part of the command as written'),
  canonical: z.string(),
  layers: z.array(z.string()),
  verdict: z.enum(['allow', 'ask', 'deny']),
  code: z.string(),
  rule: z.string().optional().describe('The rule that decided this part'),
  pattern: z.string().optional().describe('The blocked pattern that decided this part'),
  reason: z.string(),
});

const CheckOutput = {
  decision: z.enum(['allow', 'ask', 'deny']).describe('allow: exec runs it; ask: exec waits for a human approval; deny: exec refuses it'),
  code: z.string(),
  hard: z.boolean().describe('A hard deny can never be approved'),
  reason: z.string(),
  cwd: z.string().describe('The working directory the decision assumed'),
  policyHash: z.string(),
  segments: z.array(SegmentOutput),
};

const PathsOutput = {
  team: z.string(),
  defaultCwd: z.string().describe('Where exec runs when no cwd is given'),
  paths: z.array(z.object({ path: z.string(), readOnly: z.boolean(), mode: z.enum(['ro', 'rw']) })),
  limits: z.object({
    timeoutMs: z.number().describe('The longest a command may run'),
    maxOutputBytes: z.number().describe('stdout+stderr beyond this stops the command'),
    network: z.string().describe('"none": no network at all'),
  }),
};

/**
 * Calls that are running, by (caller, JSON-RPC id), so a `notifications/cancelled` from the same identity
 * can stop one. Request ids are the client's own: when two clients with the same token have a call with the
 * same id running, the cancel is ambiguous and stops neither.
 */
class RunningCalls {
  private readonly calls = new Map<string, Set<AbortController>>();

  private key(caller: Caller, id: RequestId): string {
    return JSON.stringify([caller.team, caller.name, id]);
  }

  add(caller: Caller, id: RequestId, ac: AbortController): () => void {
    const key = this.key(caller, id);
    let set = this.calls.get(key);
    if (!set) this.calls.set(key, (set = new Set()));
    set.add(ac);
    return () => {
      set.delete(ac);
      if (set.size === 0 && this.calls.get(key) === set) this.calls.delete(key);
    };
  }

  cancel(caller: Caller, id: RequestId, reason: unknown): boolean {
    const set = this.calls.get(this.key(caller, id));
    if (!set || set.size !== 1) return false;
    for (const ac of set) ac.abort(reason);
    return true;
  }
}

/** Cancellations in a POST body (one message or a batch): the ids they name. */
function cancelledIds(body: unknown): { id: RequestId; reason: unknown }[] {
  const out: { id: RequestId; reason: unknown }[] = [];
  for (const m of Array.isArray(body) ? body : [body]) {
    if (typeof m !== 'object' || m === null) continue;
    const msg = m as { method?: unknown; params?: { requestId?: unknown; reason?: unknown } };
    const id = msg.params?.requestId;
    if (msg.method === 'notifications/cancelled' && (typeof id === 'string' || typeof id === 'number')) out.push({ id, reason: msg.params?.reason });
  }
  return out;
}

const text = (t: string): CallToolResult['content'][number] => ({ type: 'text', text: t });

/** An error as a tool result: the code first, so an agent can tell a refusal from a failure. */
function failure(code: string, message: string, execId?: string): CallToolResult {
  return { isError: true, content: [text(`error ${code}: ${message}${execId ? `\nexecId: ${execId}` : ''}`)] };
}

function describeSegments(d: Decision): string {
  return d.segments
    .map((s) => {
      const by = s.rule ? `, rule "${s.rule}"` : s.pattern ? `, blocked pattern "${s.pattern}"` : '';
      return `  - \`${s.source}\` → ${s.verdict} (${s.code}${by}): ${s.reason}`;
    })
    .join('\n');
}

function decisionView(d: Decision) {
  return {
    decision: d.decision,
    code: d.code,
    hard: d.hard,
    reason: d.reason,
    cwd: d.cwd,
    policyHash: d.policyHash,
    segments: d.segments.map((s) => ({
      source: s.source,
      canonical: s.canonical,
      layers: s.layers,
      verdict: s.verdict,
      code: s.code,
      ...(s.rule !== undefined ? { rule: s.rule } : {}),
      ...(s.pattern !== undefined ? { pattern: s.pattern } : {}),
      reason: s.reason,
    })),
  };
}

function denied(execId: string, d: Decision): CallToolResult {
  const lines = [
    `error policy_denied: ${d.reason}`,
    `code: ${d.code}${d.hard ? ' (a hard deny: no approval can allow it)' : ''}`,
    ...(d.segments.length > 0 ? ['segments:', describeSegments(d)] : []),
    `cwd: ${d.cwd}`,
    `execId: ${execId}`,
    'Nothing ran. Change the command (check_command tells you the decision without running it) or ask the user.',
  ];
  return { isError: true, content: [text(lines.join('\n'))] };
}

function errorResult(err: unknown, log: FastifyBaseLogger, reqId: string, execId?: string): CallToolResult {
  if (err instanceof ServiceError) return failure(err.code, err.message, execId);
  log.error({ err }, 'mcp tool failed');
  return failure('internal_error', `internal error (request ${reqId})`, execId);
}

/** Progress notifications for one call: a counter that only grows, nothing without a progress token. */
class Progress {
  private count = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** What the heartbeat says while nothing else is sent. */
  waiting = 'working';

  constructor(private readonly extra: Extra) {
    this.arm();
  }

  /** The heartbeat fires HEARTBEAT_MS after the last notification, whatever it was. */
  private arm(): void {
    if (this.extra._meta?.progressToken === undefined || this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.send(`still ${this.waiting}`), HEARTBEAT_MS);
    this.timer.unref();
  }

  async send(message: string): Promise<void> {
    const progressToken = this.extra._meta?.progressToken;
    if (progressToken === undefined || this.extra.signal.aborted || this.stopped) return;
    this.arm();
    try {
      await this.extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: ++this.count, message } });
    } catch {
      // The client went away; the call ends through its signal.
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
  }
}

interface CallContext {
  deps: AppDeps;
  caller: AuthedCaller;
  running: RunningCalls;
  log: FastifyBaseLogger;
  reqId: string;
}

async function execTool(
  ctx: CallContext,
  args: { command: string; cwd?: string | undefined; env?: Record<string, string> | undefined; secretEnv?: string[] | undefined; timeoutMs?: number | undefined; stdin?: string | undefined },
  extra: Extra,
): Promise<CallToolResult> {
  const { deps, caller } = ctx;
  const { service } = deps;
  if (deps.isDraining?.()) return failure('shutting_down', 'the service is shutting down; retry on another instance');
  const own = new AbortController();
  const signal = AbortSignal.any([extra.signal, own.signal]);
  const unregister = ctx.running.add(caller, extra.requestId, own);
  const progress = new Progress(extra);
  try {
    let outcome: PrepareOutcome;
    try {
      // interactive: an MCP client cannot answer an approval itself, but a human can, in the dashboard or the API.
      outcome = service.prepare(caller, { command: args.command, cwd: args.cwd, env: args.env, secretEnv: args.secretEnv, stdin: args.stdin === undefined ? undefined : Buffer.from(args.stdin, 'utf8'), timeoutMs: args.timeoutMs, interactive: true });
    } catch (err) {
      return errorResult(err, ctx.log, ctx.reqId);
    }
    if (!outcome.ok) return denied(outcome.execId, outcome.decision);
    const p = outcome.prepared;
    let events: AsyncGenerator<ExecEvent, void, void>;
    try {
      events = await service.start(p, signal);
    } catch (err) {
      return errorResult(err, ctx.log, ctx.reqId, p.execId);
    }

    const out: Record<'stdout' | 'stderr', Buffer[]> = { stdout: [], stderr: [] };
    const decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
    let approvalId: string | undefined;
    let approvedBy: string | undefined;
    for await (const e of events) {
      switch (e.type) {
        case 'decision':
          if (e.decision === 'ask') await progress.send(`needs a human approval: ${e.explanation.reason}`);
          break;
        case 'approval_pending':
          approvalId = e.approvalId;
          progress.waiting = `waiting for approval (id ${e.approvalId})`;
          await progress.send(`waiting for approval (id ${e.approvalId}); it expires at ${e.expiresAt}`);
          break;
        case 'approval_resolved':
          approvedBy = e.by;
          progress.waiting = 'running';
          await progress.send(`approved by ${e.by}${e.note ? `: ${e.note}` : ''}`);
          break;
        case 'rejected': {
          const code = notApprovedCode(e.reason);
          const why = e.reason === 'expired' ? 'nobody approved it in time' : e.reason === 'withdrawn' ? 'the request was withdrawn' : `rejected by ${e.by}: ${e.reason}`;
          return failure(code, `not approved (${why}); nothing ran${approvalId ? ` (approval ${approvalId})` : ''}`, p.execId);
        }
        case 'started':
          progress.waiting = 'running';
          break;
        case 'stdout':
        case 'stderr': {
          out[e.type].push(e.bytes);
          // Progress is for reading: a character split across chunks is decoded whole (StringDecoder keeps its start).
          const chunk = decoders[e.type].write(e.bytes);
          if (chunk) await progress.send(e.type === 'stderr' ? `[stderr] ${chunk}` : chunk);
          break;
        }
        case 'error':
          return failure(e.code, e.message, p.execId);
        case 'exit':
          return exitResult(p.execId, p.decision.decision as 'allow' | 'ask', out, e, approvalId, approvedBy);
        case 'artifact':
          break;
      }
    }
    return failure('client_disconnected', 'the call was cancelled before the command finished', p.execId);
  } catch (err) {
    return errorResult(err, ctx.log, ctx.reqId);
  } finally {
    progress.stop();
    unregister();
  }
}

function exitResult(
  execId: string,
  decision: 'allow' | 'ask',
  out: Record<'stdout' | 'stderr', Buffer[]>,
  e: { exitCode: number | null; durationMs: number; timedOut: boolean; oomKilled: boolean; truncated: boolean; writeQuotaExceeded?: boolean },
  approvalId: string | undefined,
  approvedBy: string | undefined,
): CallToolResult {
  // The runner already stopped the command at the team's output cap; bytes that are not UTF-8 become U+FFFD.
  const stdoutBytes = Buffer.concat(out.stdout);
  const stderrBytes = Buffer.concat(out.stderr);
  const stdout = stdoutBytes.toString('utf8');
  const stderr = stderrBytes.toString('utf8');
  const invalidUtf8 = { stdout: !isUtf8(stdoutBytes), stderr: !isUtf8(stderrBytes) };
  const notes = [
    e.exitCode === null ? 'no exit code' : `exit code ${e.exitCode}`,
    `${e.durationMs} ms`,
    ...(e.timedOut ? ['timed out'] : []),
    ...(e.oomKilled ? ['killed: out of memory'] : []),
    ...(e.truncated ? ["output truncated at the team's cap"] : []),
    ...(e.writeQuotaExceeded ? ["stopped: wrote more than the team's write quota into its allowed paths"] : []),
    ...(invalidUtf8.stdout || invalidUtf8.stderr ? ['bytes that are not UTF-8 are shown as U+FFFD'] : []),
    ...(approvedBy ? [`approved by ${approvedBy}`] : []),
    `execId ${execId}`,
  ];
  const parts: string[] = [];
  if (stdout !== '') parts.push(stdout.endsWith('\n') ? stdout.slice(0, -1) : stdout);
  if (stderr !== '') parts.push(`--- stderr ---\n${stderr.endsWith('\n') ? stderr.slice(0, -1) : stderr}`);
  if (parts.length === 0) parts.push('(no output)');
  parts.push(`--- ${notes.join(', ')} ---`);
  return {
    isError: e.exitCode !== 0,
    content: [text(parts.join('\n'))],
    structuredContent: {
      execId,
      exitCode: e.exitCode,
      timedOut: e.timedOut,
      truncated: e.truncated,
      oomKilled: e.oomKilled,
      durationMs: e.durationMs,
      stdout,
      stderr,
      invalidUtf8,
      decision,
      ...(approvalId !== undefined ? { approvalId } : {}),
      ...(approvedBy !== undefined ? { approvedBy } : {}),
    },
  };
}

function checkTool(ctx: CallContext, args: { command: string; cwd?: string | undefined }): CallToolResult {
  let d: Decision;
  try {
    d = ctx.deps.service.check(ctx.caller, { command: args.command, cwd: args.cwd, interactive: true });
  } catch (err) {
    return errorResult(err, ctx.log, ctx.reqId);
  }
  const what = d.decision === 'allow' ? 'exec would run it' : d.decision === 'ask' ? 'exec would wait for a human to approve it' : `exec would refuse it${d.hard ? ' (a hard deny: no approval can allow it)' : ''}`;
  const lines = [`${d.decision} (${d.code}): ${d.reason}`, `${what}.`, ...(d.segments.length > 0 ? ['segments:', describeSegments(d)] : []), `cwd: ${d.cwd}`];
  return { content: [text(lines.join('\n'))], structuredContent: decisionView(d) };
}

function pathsTool(ctx: CallContext): CallToolResult {
  let team;
  try {
    team = ctx.deps.service.team(ctx.caller.team);
  } catch (err) {
    return errorResult(err, ctx.log, ctx.reqId);
  }
  const paths = team.policy.allowedPaths.map((p) => ({ path: p.path, readOnly: p.readOnly, mode: p.readOnly ? ('ro' as const) : ('rw' as const) }));
  const limits = { timeoutMs: team.sandbox.timeoutMs, maxOutputBytes: team.sandbox.maxOutputBytes, network: team.sandbox.network };
  const lines = [
    `Team ${team.name}. Default working directory: ${paths[0]!.path}`,
    'Allowed paths (visible in the sandbox at the same path):',
    ...paths.map((p) => `  - ${p.path} (${p.readOnly ? 'read-only' : 'read-write'})`),
    `Limits: ${limits.timeoutMs} ms per command, ${limits.maxOutputBytes} bytes of output, network: ${limits.network}`,
  ];
  return { content: [text(lines.join('\n'))], structuredContent: { team: team.name, defaultCwd: paths[0]!.path, paths, limits } };
}

/**
 * The MCP SDK, loaded on the first MCP request: a service that never serves MCP does not carry it (about 5 MB
 * of RSS at idle, 95 against 100 MB measured). Only a broken install fails to load it; then MCP requests answer 500.
 */
type Sdk = {
  McpServer: typeof McpServer;
  StreamableHTTPServerTransport: typeof import('@modelcontextprotocol/sdk/server/streamableHttp.js').StreamableHTTPServerTransport;
};
let sdk: Promise<Sdk> | undefined;
function loadSdk(): Promise<Sdk> {
  sdk ??= (async () => {
    const [m, t] = await Promise.all([import('@modelcontextprotocol/sdk/server/mcp.js'), import('@modelcontextprotocol/sdk/server/streamableHttp.js')]);
    return { McpServer: m.McpServer, StreamableHTTPServerTransport: t.StreamableHTTPServerTransport };
  })().catch((err: unknown) => {
    sdk = undefined;
    throw err;
  });
  return sdk;
}

/** One server per request (the SDK's stateless pattern), its tools bound to the request's caller. */
function buildServer(McpServerClass: typeof McpServer, ctx: CallContext): McpServer {
  const server = new McpServerClass({ name: 'execgate', title: 'execgate', version: VERSION }, { instructions: INSTRUCTIONS });
  server.registerTool(
    'exec',
    {
      title: 'Run a shell command in a sandbox',
      description:
        'Run a shell command (/bin/sh -c) in a fresh, isolated sandbox container and return its output and exit code. ' +
        'Only the directories from list_allowed_paths are visible (at the same paths; some read-only), and the network is usually off. ' +
        'A policy checks the command first: it runs; or it is denied (the result names the part of the command and the rule — change the command rather than retrying it); ' +
        'or it needs a human approval, and the call waits until someone approves or rejects it (progress notifications say so). ' +
        'A nonzero exit code is returned as an error result that still carries the output. Output beyond the team\'s cap is cut off (truncated).',
      inputSchema: ExecInput,
      outputSchema: ExecOutput,
      annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: false, openWorldHint: true },
    },
    (args, extra) => execTool(ctx, args, extra),
  );
  server.registerTool(
    'check_command',
    {
      title: 'Check a command against the policy',
      description:
        'Ask whether exec would run a command, wait for a human approval, or refuse it — and why (which part of the command, which rule) — without running anything. ' +
        'Use it to find an acceptable form of a command before calling exec.',
      inputSchema: CheckInput,
      outputSchema: CheckOutput,
      annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
    },
    (args) => checkTool(ctx, args),
  );
  server.registerTool(
    'list_allowed_paths',
    {
      title: 'List the directories commands can see',
      description: 'The host directories your commands can see (read-only or read-write), the default working directory, and the limits of each command (time, output, network).',
      inputSchema: {},
      outputSchema: PathsOutput,
      annotations: { readOnlyHint: true, idempotentHint: true, openWorldHint: false },
    },
    () => pathsTool(ctx),
  );
  return server;
}

const METHOD_NOT_ALLOWED = JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this MCP endpoint is stateless; POST JSON-RPC messages to it.' }, id: null });

export async function registerMcp(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const running = new RunningCalls();

  app.post('/mcp', { config: { role: 'exec' } }, async (req, reply) => {
    // Without sessions a cancellation comes in a request of its own: it stops the caller's call it names.
    for (const c of cancelledIds(req.body)) running.cancel(req.caller, c.id, c.reason ?? 'cancelled by the client');

    const { McpServer: McpServerClass, StreamableHTTPServerTransport } = await loadSdk();
    const server = buildServer(McpServerClass, { deps, caller: req.caller, running, log: req.log, reqId: req.id });
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined });
    transport.onerror = (err) => req.log.debug({ err }, 'mcp transport');
    reply.hijack();
    const res = reply.raw;
    // The response closing (answered, or the client gone) ends the server: a running call's signal aborts.
    const end = () => {
      transport.close().catch(() => undefined);
      server.close().catch(() => undefined);
    };
    res.on('close', end);
    // A client that left while its body was read already closed the response: run nothing for it.
    if (res.destroyed || req.raw.socket.destroyed) {
      end();
      return;
    }
    try {
      await server.connect(transport);
      await transport.handleRequest(req.raw, res, req.body);
    } catch (err) {
      req.log.error({ err }, 'mcp request failed');
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32603, message: `internal error (request ${req.id})` }, id: null }));
      } else {
        res.end();
      }
    }
  });

  // Stateless: no standalone SSE stream to GET and no session to DELETE (as the SDK's stateless example answers).
  for (const method of ['GET', 'DELETE'] as const) {
    app.route({
      method,
      url: '/mcp',
      config: { role: 'exec' },
      handler: async (_req, reply) => reply.code(405).header('allow', 'POST').type('application/json').send(METHOD_NOT_ALLOWED),
    });
  }
}
