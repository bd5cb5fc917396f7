import { z } from 'zod';
import type { Role } from '../config/schema.js';
import {
  ApprovalsQuerySchema,
  ApproveBodySchema,
  CheckBodySchema,
  ExecBodySchema,
  ExecutionsQuerySchema,
  GetFilesQuerySchema,
  IdParamsSchema,
  PutFilesBodySchema,
  RejectBodySchema,
  SafeModeBodySchema,
  SessionBodySchema,
} from './schemas.js';
import {
  ApprovalSchema,
  DecisionSchema,
  ErrorBodySchema,
  ExecEventSchema,
  ExecResultSchema,
  ExecutionSchema,
  FilesPutResultSchema,
  HealthSchema,
  NotReadySchema,
  ReadySchema,
  RememberedRuleSchema,
  SafeModeSchema,
  SessionSchema,
} from './wire.js';

/**
 * Every route of the service, described once. The app refuses to start when a route it registers is missing
 * here or declares another role (app.ts, onRoute), the request schemas are the very zod objects the handlers
 * validate with, and test/http/openapi.test.ts checks real answers against the response schemas. The OpenAPI
 * document served at /openapi.json (and rendered at /docs) is built from this table.
 */

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
type Schema = z.ZodType;

export interface ResponseDoc {
  description: string;
  /** Media type → schema; `null` for bytes (tar, text). */
  content?: Record<string, Schema | null>;
}

export interface RouteDoc {
  method: Method;
  /** Fastify syntax: /v1/sessions/:id. */
  path: string;
  operationId: string;
  summary: string;
  description?: string;
  tag: string;
  /** The role the route needs (`any`: any valid token); null: no authentication. */
  auth: Role | 'any' | null;
  params?: z.ZodObject;
  query?: z.ZodObject;
  /** Media type → schema; `null` for bytes. */
  body?: Record<string, Schema | null>;
  headers?: { name: string; description: string; schema: Schema }[];
  responses: Record<number, ResponseDoc>;
  /** Error codes this route answers besides the common ones (400, 401, 403, 404 for an id). */
  errors?: number[];
}

const json = (schema: Schema) => ({ 'application/json': schema });
const list = (key: string, item: Schema) => z.strictObject({ [key]: z.array(item) });
const tarBytes = { 'application/x-tar': null };

const execBody = {
  'application/json': ExecBodySchema,
  'multipart/form-data': z.object({
    request: ExecBodySchema.describe('the request JSON, as a form field'),
    files: z.string().meta({ contentMediaType: 'application/x-tar' }).describe('a tar archive: the files put into /scratch'),
  }),
  'application/x-tar': null,
};
const execResponses: Record<number, ResponseDoc> = {
  200: {
    description:
      'The run, one event per line (NDJSON, the default), as server-sent events with `Accept: text/event-stream`, one JSON answer at the end with `Accept: application/json`, or binary frames with `Accept: application/vnd.execgate.multiplexed-stream`: each frame an 8-byte header (byte 0 the kind, bytes 1-3 zero, bytes 4-7 the payload length, big-endian) and its payload; kind 1 stdout and 2 stderr carry the output bytes as they are, kind 3 any other event as UTF-8 JSON. The response header X-Execgate-Exec-Id names the execution.',
    content: { 'application/x-ndjson': ExecEventSchema, 'text/event-stream': ExecEventSchema, 'application/json': ExecResultSchema, 'application/vnd.execgate.multiplexed-stream': null },
  },
};
const execHeaders = [{ name: 'x-execgate-request', description: 'With an application/x-tar body: the request JSON', schema: z.string() }];
const execDescription =
  'The policy decides first: a deny answers 403 `policy_denied` naming the segment and rule before any container exists; an `ask` waits for a human (events `approval_pending`, then `approval_resolved` or `rejected`). Files come as a `files` map, a multipart `files` tar part, or an application/x-tar body; they are put into /scratch, and `collect` returns /scratch files as an artifact. The values of the team\'s secret `sandbox.env` variables and of the keys named in `secretEnv` are replaced by `[redacted:NAME]` in stdout and stderr (found across chunk boundaries; the output cap and `bytesOut` count the bytes before redaction). A client that disconnects ends the container.';

export const ROUTES: readonly RouteDoc[] = [
  { method: 'GET', path: '/healthz', operationId: 'health', summary: 'The process is up', tag: 'service', auth: null, responses: { 200: { description: 'up', content: json(HealthSchema) } } },
  {
    method: 'GET',
    path: '/readyz',
    operationId: 'ready',
    summary: 'Docker answers, the images are present and every team\'s runtime exists',
    tag: 'service',
    auth: null,
    responses: { 200: { description: 'ready', content: json(ReadySchema) }, 503: { description: 'not ready, with the reason', content: json(NotReadySchema) } },
  },
  { method: 'GET', path: '/metrics', operationId: 'metrics', summary: 'Prometheus metrics', tag: 'service', auth: null, responses: { 200: { description: 'Prometheus text format', content: { 'text/plain': null } } } },
  { method: 'GET', path: '/', operationId: 'dashboard', summary: 'The approvals dashboard (sign in with an approver token)', tag: 'service', auth: null, responses: { 200: { description: 'HTML', content: { 'text/html': null } } } },
  { method: 'GET', path: '/docs', operationId: 'docs', summary: 'This API, rendered', tag: 'service', auth: null, responses: { 200: { description: 'HTML', content: { 'text/html': null } } } },
  { method: 'GET', path: '/openapi.json', operationId: 'openapi', summary: 'This API as an OpenAPI 3.1 document', tag: 'service', auth: null, responses: { 200: { description: 'OpenAPI 3.1', content: json(z.record(z.string(), z.unknown())) } } },
  {
    method: 'POST',
    path: '/v1/policy/check',
    operationId: 'checkCommand',
    summary: 'The decision for a command, without running it',
    tag: 'exec',
    auth: 'exec',
    body: json(CheckBodySchema),
    responses: { 200: { description: 'the explanation', content: json(DecisionSchema) } },
  },
  { method: 'POST', path: '/v1/exec', operationId: 'exec', summary: 'Run a command in a fresh sandbox', description: execDescription, tag: 'exec', auth: 'exec', body: execBody, headers: execHeaders, responses: execResponses, errors: [406, 413, 415, 429, 500, 502, 503] },
  {
    method: 'GET',
    path: '/v1/executions/:id/artifacts',
    operationId: 'getArtifacts',
    summary: 'The files an execution collected, as a tar archive',
    tag: 'history',
    auth: 'any',
    params: IdParamsSchema,
    responses: { 200: { description: 'tar archive (X-Execgate-Sha256 carries its hash)', content: tarBytes } },
  },
  {
    method: 'POST',
    path: '/v1/sessions',
    operationId: 'createSession',
    summary: 'Start a sandbox that lives across commands',
    tag: 'sessions',
    auth: 'exec',
    body: json(SessionBodySchema),
    responses: { 201: { description: 'the session', content: json(SessionSchema) } },
    errors: [429, 503],
  },
  { method: 'GET', path: '/v1/sessions', operationId: 'listSessions', summary: 'The team\'s sessions', tag: 'sessions', auth: 'any', responses: { 200: { description: 'sessions', content: json(list('sessions', SessionSchema)) } } },
  { method: 'GET', path: '/v1/sessions/:id', operationId: 'getSession', summary: 'One session', tag: 'sessions', auth: 'any', params: IdParamsSchema, responses: { 200: { description: 'the session', content: json(SessionSchema) } } },
  { method: 'DELETE', path: '/v1/sessions/:id', operationId: 'endSession', summary: 'End a session and remove its container', tag: 'sessions', auth: 'any', params: IdParamsSchema, responses: { 204: { description: 'ended' } } },
  {
    method: 'POST',
    path: '/v1/sessions/:id/exec',
    operationId: 'sessionExec',
    summary: 'Run a command in a session',
    description: `${execDescription} In a session the command runs in the session's container, one at a time (409 session_busy), and /scratch keeps what earlier commands left.`,
    tag: 'sessions',
    auth: 'exec',
    params: IdParamsSchema,
    body: execBody,
    headers: execHeaders,
    responses: execResponses,
    errors: [406, 409, 410, 413, 415, 429, 500, 502, 503],
  },
  {
    method: 'PUT',
    path: '/v1/sessions/:id/files',
    operationId: 'putSessionFiles',
    summary: 'Write files into the session\'s /scratch',
    tag: 'sessions',
    auth: 'exec',
    params: IdParamsSchema,
    body: { 'application/json': PutFilesBodySchema, 'application/x-tar': null },
    responses: { 200: { description: 'what was written', content: json(FilesPutResultSchema) } },
    errors: [409, 410, 413],
  },
  {
    method: 'GET',
    path: '/v1/sessions/:id/files',
    operationId: 'getSessionFiles',
    summary: 'Files of the session\'s /scratch, as a tar archive',
    tag: 'sessions',
    auth: 'exec',
    params: IdParamsSchema,
    query: GetFilesQuerySchema,
    responses: { 200: { description: 'tar archive', content: tarBytes } },
    errors: [409, 410],
  },
  {
    method: 'GET',
    path: '/v1/approvals',
    operationId: 'listApprovals',
    summary: 'Approvals of the team',
    tag: 'approvals',
    auth: 'approve',
    query: ApprovalsQuerySchema,
    responses: { 200: { description: 'approvals', content: json(list('approvals', ApprovalSchema)) } },
  },
  { method: 'GET', path: '/v1/approvals/:id', operationId: 'getApproval', summary: 'One approval', tag: 'approvals', auth: 'approve', params: IdParamsSchema, responses: { 200: { description: 'the approval', content: json(ApprovalSchema) } } },
  {
    method: 'POST',
    path: '/v1/approvals/:id/approve',
    operationId: 'approve',
    summary: 'Approve a pending command (optionally remembering it as an allow rule)',
    tag: 'approvals',
    auth: 'approve',
    params: IdParamsSchema,
    body: json(ApproveBodySchema),
    responses: { 200: { description: 'the approval, approved', content: json(ApprovalSchema) } },
    errors: [409, 422],
  },
  {
    method: 'POST',
    path: '/v1/approvals/:id/reject',
    operationId: 'reject',
    summary: 'Reject a pending command',
    tag: 'approvals',
    auth: 'approve',
    params: IdParamsSchema,
    body: json(RejectBodySchema),
    responses: { 200: { description: 'the approval, rejected', content: json(ApprovalSchema) } },
    errors: [409],
  },
  { method: 'GET', path: '/v1/rules/remembered', operationId: 'listRememberedRules', summary: 'Allow rules learned from approvals', tag: 'approvals', auth: 'approve', responses: { 200: { description: 'rules', content: json(list('rules', RememberedRuleSchema)) } } },
  { method: 'DELETE', path: '/v1/rules/remembered/:id', operationId: 'deleteRememberedRule', summary: 'Forget a remembered rule', tag: 'approvals', auth: 'approve', params: IdParamsSchema, responses: { 204: { description: 'removed' } } },
  { method: 'GET', path: '/v1/safe-mode', operationId: 'getSafeMode', summary: 'Whether `ask` decisions wait for a human', tag: 'approvals', auth: 'approve', responses: { 200: { description: 'safe mode', content: json(SafeModeSchema) } } },
  {
    method: 'PUT',
    path: '/v1/safe-mode',
    operationId: 'setSafeMode',
    summary: 'Switch safe mode (off: `ask` runs without waiting; hard denies stay)',
    tag: 'approvals',
    auth: 'approve',
    body: json(SafeModeBodySchema),
    responses: { 200: { description: 'safe mode', content: json(SafeModeSchema) } },
  },
  {
    method: 'GET',
    path: '/v1/executions',
    operationId: 'listExecutions',
    summary: 'History, newest first',
    tag: 'history',
    auth: 'any',
    query: ExecutionsQuerySchema,
    responses: { 200: { description: 'executions', content: json(list('executions', ExecutionSchema)) } },
  },
  { method: 'GET', path: '/v1/executions/:id', operationId: 'getExecution', summary: 'One execution', tag: 'history', auth: 'any', params: IdParamsSchema, responses: { 200: { description: 'the execution', content: json(ExecutionSchema) } } },
  {
    method: 'GET',
    path: '/v1/events',
    operationId: 'events',
    summary: 'Server-sent events for approvals, executions and sessions (the dashboard\'s feed)',
    tag: 'history',
    auth: 'any',
    responses: { 200: { description: 'text/event-stream; each `data:` is one JSON event with its team', content: { 'text/event-stream': null } } },
  },
  {
    method: 'POST',
    path: '/mcp',
    operationId: 'mcp',
    summary: 'Model Context Protocol (Streamable HTTP, stateless): tools exec, check_command, list_allowed_paths',
    tag: 'mcp',
    auth: 'exec',
    body: json(z.union([z.record(z.string(), z.unknown()), z.array(z.record(z.string(), z.unknown()))]).describe('a JSON-RPC 2.0 message, or a batch of them')),
    responses: { 200: { description: 'JSON-RPC answer, as JSON or an SSE stream (progress notifications, then the result)', content: { 'application/json': null, 'text/event-stream': null } } },
  },
  ...(['GET', 'DELETE'] as const).map(
    (method): RouteDoc => ({
      method,
      path: '/mcp',
      operationId: `mcp${method === 'GET' ? 'Get' : 'Delete'}`,
      summary: 'Not offered: the endpoint is stateless (no standalone SSE stream, no session to end)',
      tag: 'mcp',
      auth: 'exec',
      responses: { 405: { description: 'a JSON-RPC error; Allow: POST', content: { 'application/json': null } } },
    }),
  ),
];

export const routeKey = (method: string, path: string): string => `${method.toUpperCase()} ${path}`;
const BY_KEY = new Map(ROUTES.map((r) => [routeKey(r.method, r.path), r]));
export const routeDoc = (method: string, path: string): RouteDoc | undefined => BY_KEY.get(routeKey(method, path));

const STATUS_TEXT: Record<number, string> = {
  400: 'invalid input: `invalid_request` with the failing fields (or `invalid_files` naming the entry)',
  401: 'missing or invalid token',
  403: 'the token lacks the role, or (exec) the policy denied the command or a human rejected it',
  404: 'not found, or not visible to this team',
  406: 'the Accept header asks for nothing this route sends',
  409: 'conflict: already resolved, or the session is running another command',
  410: 'the session has ended',
  413: 'the body or the files are over the limit',
  415: 'unsupported content type',
  500: 'an internal error, or (JSON answers) a run that failed for a reason of its own (`error` event code)',
  502: 'the sandbox could not be run (`runner_failed`)',
  422: 'the approval cannot be remembered as asked',
  429: 'the team\'s queue (or session limit) is full; Retry-After says when to retry',
  503: 'Docker is unavailable, or the service is shutting down',
};

/** zod → JSON Schema 2020-12 (OpenAPI 3.1's dialect), with named schemas moved to components. */
function toSchema(schema: Schema, io: 'input' | 'output', components: Record<string, unknown>): Record<string, unknown> {
  const out = z.toJSONSchema(schema, { io, unrepresentable: 'any', target: 'draft-2020-12' }) as Record<string, unknown>;
  delete out.$schema;
  const defs = out.$defs as Record<string, unknown> | undefined;
  delete out.$defs;
  const rewrite = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(rewrite);
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, k === '$ref' && typeof x === 'string' ? x.replace('#/$defs/', '#/components/schemas/') : rewrite(x)]));
    }
    return v;
  };
  for (const [name, def] of Object.entries(defs ?? {})) components[name] ??= rewrite(def);
  const id = out.id;
  if (typeof id === 'string') {
    delete out.id;
    components[id] ??= rewrite(out);
    return { $ref: `#/components/schemas/${id}` };
  }
  return rewrite(out) as Record<string, unknown>;
}

function content(media: Record<string, Schema | null>, io: 'input' | 'output', components: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(media).map(([type, schema]) => [
      type,
      { schema: schema ? toSchema(schema, io, components) : type === 'text/plain' || type === 'text/html' || type === 'text/event-stream' ? { type: 'string' } : { type: 'string', contentMediaType: type } },
    ]),
  );
}

function parameters(route: RouteDoc, components: Record<string, unknown>): unknown[] {
  const params: unknown[] = [];
  const add = (where: 'path' | 'query', obj: z.ZodObject | undefined) => {
    if (!obj) return;
    const s = toSchema(obj, 'input', components) as { properties?: Record<string, Record<string, unknown>>; required?: string[] };
    for (const [name, schema] of Object.entries(s.properties ?? {})) {
      const { description, ...rest } = schema;
      params.push({ name, in: where, required: where === 'path' || (s.required ?? []).includes(name), schema: rest, ...(description ? { description } : {}) });
    }
  };
  add('path', route.params);
  add('query', route.query);
  for (const h of route.headers ?? []) params.push({ name: h.name, in: 'header', required: false, description: h.description, schema: toSchema(h.schema, 'input', components) });
  if (route.auth && route.path.startsWith('/v1')) {
    params.push({ name: 'x-execgate-team', in: 'header', required: false, description: 'Admin tokens only: act for this team', schema: { type: 'string' } });
  }
  return params;
}

export interface OpenApiOptions {
  version: string;
  serverUrl?: string | undefined;
}

/** The OpenAPI 3.1 document of ROUTES. */
export function openApiDocument(options: OpenApiOptions): Record<string, unknown> {
  const components: Record<string, unknown> = {};
  const paths: Record<string, Record<string, unknown>> = {};
  for (const route of ROUTES) {
    const path = route.path.replace(/:([A-Za-z]+)/g, '{$1}');
    const responses: Record<string, unknown> = {};
    for (const [status, r] of Object.entries(route.responses)) {
      responses[status] = { description: r.description, ...(r.content ? { content: content(r.content, 'output', components) } : {}) };
    }
    const errorStatuses = new Set<number>(route.errors ?? []);
    if (route.body || route.query || route.params) errorStatuses.add(400);
    if (route.auth) {
      errorStatuses.add(401);
      errorStatuses.add(403);
    }
    if (route.params) errorStatuses.add(404);
    for (const status of [...errorStatuses].sort()) {
      if (responses[status]) continue;
      responses[status] = { description: STATUS_TEXT[status] ?? 'error', content: { 'application/json': { schema: toSchema(ErrorBodySchema, 'output', components) } } };
    }
    const params = parameters(route, components);
    (paths[path] ??= {})[route.method.toLowerCase()] = {
      operationId: route.operationId,
      summary: route.summary,
      ...(route.description ? { description: route.description } : {}),
      tags: [route.tag],
      ...(route.auth === null ? { security: [] } : { 'x-execgate-role': route.auth }),
      ...(params.length ? { parameters: params } : {}),
      ...(route.body ? { requestBody: { required: true, content: content(route.body, 'input', components) } } : {}),
      responses,
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'execgate',
      version: options.version,
      description:
        'A sandboxed exec gateway: a policy decides which shell commands may run, a human approves when asked, and approved commands run in short-lived hardened Docker containers. Every /v1 route and /mcp need `Authorization: Bearer TOKEN`; `x-execgate-role` names the role the token needs (`any`: any valid token). Admin tokens may act for another team with X-Execgate-Team.',
      license: { name: 'Apache-2.0', identifier: 'Apache-2.0' },
    },
    ...(options.serverUrl ? { servers: [{ url: options.serverUrl }] } : {}),
    security: [{ bearer: [] }],
    tags: ['exec', 'sessions', 'approvals', 'history', 'mcp', 'service'].map((name) => ({ name })),
    paths,
    components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } }, schemas: Object.fromEntries(Object.entries(components).sort(([a], [b]) => a.localeCompare(b))) },
  };
}

/** /docs: the document rendered in the page itself (no CDN, no script from elsewhere). */
export function docsHtml(): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>execgate API</title>
<meta name="viewport" content="width=device-width,initial-scale=1">
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h2{margin-top:2em;border-bottom:1px solid #ddd}.op{border:1px solid #ddd;border-radius:6px;margin:.6em 0}
summary{cursor:pointer;padding:.5em .8em}.m{display:inline-block;min-width:4.5em;font-weight:600}.GET{color:#0a6}.POST{color:#06c}.PUT{color:#a60}.DELETE{color:#c22}
.role{float:right;color:#777;font-size:.85em}pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:12px;max-height:30em}.body{padding:0 .8em .8em}</style></head>
<body><h1>execgate API</h1><p>Machine-readable: <a href="/openapi.json">/openapi.json</a> (OpenAPI 3.1). Every <code>/v1</code> route and <code>/mcp</code> need <code>Authorization: Bearer TOKEN</code>.</p><div id="ops">loading…</div>
<script>
fetch('/openapi.json').then(r=>r.json()).then(doc=>{
  const el=document.getElementById('ops');el.textContent='';
  const esc=s=>String(s).replace(/[&<>"]/g,c=>({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
  const byTag={};
  for(const [p,ops] of Object.entries(doc.paths))for(const [m,op] of Object.entries(ops))(byTag[op.tags[0]]??=[]).push([m.toUpperCase(),p,op]);
  for(const [tag,ops] of Object.entries(byTag)){
    const h=document.createElement('h2');h.textContent=tag;el.appendChild(h);
    for(const [m,p,op] of ops){
      const d=document.createElement('details');d.className='op';
      d.innerHTML='<summary><span class="m '+m+'">'+m+'</span><code>'+esc(p)+'</code> — '+esc(op.summary)+'<span class="role">'+esc(op['x-execgate-role']?'role: '+op['x-execgate-role']:'no auth')+'</span></summary><div class="body">'+(op.description?'<p>'+esc(op.description)+'</p>':'')+'<pre>'+esc(JSON.stringify({parameters:op.parameters,requestBody:op.requestBody,responses:op.responses},null,2))+'</pre></div>';
      el.appendChild(d);
    }
  }
  const h=document.createElement('h2');h.textContent='schemas';el.appendChild(h);
  const pre=document.createElement('pre');pre.textContent=JSON.stringify(doc.components.schemas,null,2);el.appendChild(pre);
});
</script></body></html>`;
}
