import { isUtf8 } from 'node:buffer';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ZodError, type z } from 'zod';
import type { AppConfig } from './config/load.js';
import type { Role } from './config/schema.js';
import { authenticate, checkLoopbackRequest, requireRole, type AuthedCaller } from './http/auth.js';
import { dashboardHtml } from './http/dashboard.js';
import {
  ApprovalsQuerySchema,
  ApproveBodySchema,
  CheckBodySchema,
  ExecBodySchema,
  ExecutionsQuerySchema,
  IdParamsSchema,
  GetFilesQuerySchema,
  PutFilesBodySchema,
  RejectBodySchema,
  SafeModeBodySchema,
  SessionBodySchema,
} from './http/schemas.js';
import { EventStream, MultiplexedStream, negotiate, startStream } from './http/streaming.js';
import { ERROR_STATUS, ServiceError, notApprovedCode } from './service/errors.js';
import { approvalView, type ExecEvent, type ExecService, type PrepareOutcome } from './service/exec-service.js';
import { checkCollect, type StagedInput } from './service/files.js';
import { sessionView, type Session } from './service/sessions.js';
import multipart from '@fastify/multipart';
import { createReadStream } from 'node:fs';
import type { Socket } from 'node:net';
import type { StateStore } from './service/state.js';
import type { Runner } from './runner/types.js';
import { registerMcp } from './http/mcp.js';
import { docsHtml, openApiDocument, routeDoc } from './http/openapi.js';
import { VERSION } from './version.js';

export interface AppDeps {
  config: () => AppConfig;
  service: ExecService;
  runner: Runner;
  state: StateStore;
  logger: Logger;
  /** Set while the service drains on SIGTERM: new executions get 503. */
  isDraining?: () => boolean;
}

declare module 'fastify' {
  interface FastifyRequest {
    caller: AuthedCaller;
  }
  interface FastifyContextConfig {
    role?: Role | 'any';
  }
}

function parse<S extends z.ZodType>(schema: S, value: unknown, where: 'body' | 'query' | 'params'): z.infer<S> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const fields = r.error.issues.map((i) => ({ path: i.path.map(String).join('.') || where, message: i.message }));
  throw new ServiceError('invalid_request', `invalid ${where}: ${fields.map((f) => `${f.path}: ${f.message}`).join('; ')}`, { fields });
}

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

/** A multipart body the parser refused: errors with their own 4xx status keep it, the rest are a 400. */
function malformedMultipart(err: unknown): unknown {
  if (err instanceof ServiceError) return err;
  const e = err as Error & { statusCode?: number };
  if (typeof e.statusCode === 'number' && e.statusCode < 500) return err;
  const message = `not valid multipart/form-data: ${e.message ?? String(err)}`;
  return new ServiceError('invalid_request', message, { fields: [{ path: 'multipart', message }] });
}

function parseJsonField(text: string, field: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw new ServiceError('invalid_request', `${field}: not valid JSON`, { fields: [{ path: field, message: 'not valid JSON' }] });
  }
}

/**
 * Builds the HTTP app around the service. Never listens and never reads the environment: main.ts does that,
 * and tests call `app.inject`.
 */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { service } = deps;
  const app = Fastify({
    loggerInstance: deps.logger as FastifyBaseLogger,
    bodyLimit: deps.config().gateway.bodyLimitBytes,
    trustProxy: deps.config().gateway.trustProxy,
    genReqId: () => `req_${Math.random().toString(36).slice(2, 10)}`,
    // Ids are at most 200 characters (IdParamsSchema): a longer one is that schema's 400 naming `id`, not the
    // router's own 414 with a body of its own shape.
    routerOptions: { maxParamLength: 256 },
    // What the router refuses before any route (a path that is not valid percent-encoding, a parameter over
    // maxParamLength) answers in the SPEC §3 error shape too, never Fastify's own.
    frameworkErrors: (err, _req, res) => {
      const reply = res as unknown as FastifyReply;
      const status = err.statusCode ?? 400;
      if (status >= 500) return reply.code(500).send({ error: { code: 'internal_error', message: 'internal error' } });
      const [path, message] =
        err.code === 'FST_ERR_BAD_URL' ? ['url', 'the URL path is not valid percent-encoding']
        : err.code === 'FST_ERR_MAX_PARAM_LENGTH' ? ['params', 'a path parameter is longer than 256 characters']
        : ['url', err.message];
      return reply.code(400).send({ error: { code: 'invalid_request', message, fields: [{ path, message }] } });
    },
    // Requests that are not HTTP at all (a broken request line, a header over the size limit, two
    // Content-Lengths) are answered by Node before Fastify sees them: in the SPEC §3 shape as well.
    clientErrorHandler: clientError,
  });

  app.decorateRequest('caller', null as unknown as AuthedCaller);
  // JSON, or files as tar / multipart: a text/plain body is a client mistake worth a 415, not a string to validate.
  app.removeContentTypeParser('text/plain');
  // A tar body is handed to the route as the raw stream: it is checked entry by entry while it arrives, and
  // the team's files limits (not the JSON body limit) bound it.
  app.addContentTypeParser('application/x-tar', (_req, payload, done) => done(null, payload));
  await app.register(multipart, { limits: { files: 1, fields: 4, fieldSize: 8 * 1024 * 1024, parts: 5, fileSize: 1 << 30 } });

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string; validation?: unknown }, req, reply) => {
    if (err instanceof ServiceError) {
      if (err.code === 'too_many_requests') reply.header('retry-after', String(err.details.retryAfterSeconds ?? 1));
      return reply.code(err.status).send({ error: { code: err.code, message: err.message, ...err.details } });
    }
    if (err instanceof ZodError) {
      return reply.code(400).send({ error: { code: 'invalid_request', message: 'invalid request', fields: err.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) } });
    }
    const status = err.statusCode ?? 500;
    if (status < 500) {
      const code = status === 413 ? 'payload_too_large' : status === 415 ? 'unsupported_media_type' : status === 404 ? 'not_found' : 'invalid_request';
      const fields = code === 'invalid_request' ? [{ path: 'body', message: err.message }] : undefined;
      return reply.code(code === 'invalid_request' ? 400 : status).send({ error: { code, message: err.message, fields } });
    }
    req.log.error({ err }, 'unhandled error');
    return reply.code(500).send({ error: { code: 'internal_error', message: `internal error (request ${req.id})` } });
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send({ error: { code: 'not_found', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  // Auth for every /v1 route: the role comes from the route's config.
  // Auth is decided by the route that matched (its `role`), never by the URL string: the router decodes
  // the path, so `/%761/exec` reaches `/v1/exec` while `req.url` does not start with `/v1/`.
  app.addHook('onRequest', async (req) => {
    const role = req.routeOptions.config?.role;
    if (!role) return;
    checkLoopbackRequest(deps.config(), req.headers.host, req.headers.origin);
    const header = req.headers['x-execgate-team'];
    req.caller = authenticate(deps.config(), req.headers.authorization, Array.isArray(header) ? header[0] : header);
    if (role !== 'any') requireRole(req.caller, role);
  });
  app.addHook('onRoute', (route) => {
    const role = (route.config as { role?: string } | undefined)?.role;
    // Every /v1 route must say which role it needs; a route that forgot would otherwise be public.
    if (route.url.startsWith('/v1') && !role) throw new Error(`route ${route.method} ${route.url} declares no role`);
    // And every route is in the OpenAPI table with that same role: the document cannot miss or misstate one.
    for (const method of [route.method].flat()) {
      if (method === 'HEAD') continue;
      const doc = routeDoc(method, route.url);
      if (!doc) throw new Error(`route ${method} ${route.url} is not described in src/http/openapi.ts`);
      if ((doc.auth ?? undefined) !== role) throw new Error(`route ${method} ${route.url} needs role "${role ?? 'none'}" but openapi.ts says "${doc.auth ?? 'none'}"`);
    }
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/readyz', async (_req, reply) => {
    const cfg = deps.config();
    const teams = Object.values(cfg.teams);
    const state = await deps.runner.ready([...new Set(teams.map((t) => t.sandbox.image))]);
    const missingRuntime = state.runtimes ? teams.filter((t) => !state.runtimes!.includes(t.sandbox.runtime)) : [];
    if (state.ok && missingRuntime.length > 0) {
      state.ok = false;
      state.reason = missingRuntime.map((t) => `team "${t.name}" wants runtime "${t.sandbox.runtime}", which dockerd does not offer`).join('; ');
    }
    if (deps.isDraining?.()) {
      state.ok = false;
      state.reason = 'shutting down';
    }
    if (!state.ok) return reply.code(503).send({ error: { code: 'not_ready', message: state.reason }, runtimes: state.runtimes, images: state.images });
    return { status: 'ready', runtimes: state.runtimes, images: state.images };
  });

  // Built on first request (about 30 ms of schema conversion that start-up need not pay), then kept.
  let openapi: Record<string, unknown> | undefined;
  app.get('/openapi.json', async () => (openapi ??= openApiDocument({ version: VERSION })));
  app.get('/docs', async (_req, reply) => reply.type('text/html; charset=utf-8').header('content-security-policy', "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'").send(docsHtml()));

  app.get('/metrics', async (_req, reply) => reply.type(service.metrics.contentType).send(await service.metrics.text()));

  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').header('content-security-policy', "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'").send(dashboardHtml()));

  app.post('/v1/policy/check', { config: { role: 'exec' } }, async (req) => {
    const body = parse(CheckBodySchema, req.body, 'body');
    return service.check(req.caller, body);
  });

  /**
   * The body of an exec, in any of its three forms: JSON (files as a map), multipart/form-data (a `request`
   * JSON field and a `files` tar part), or application/x-tar (the tar as the body, the request JSON in the
   * X-Execgate-Request header). Tar input is checked entry by entry as it arrives and staged on disk.
   */
  async function readExec(req: FastifyRequest): Promise<{ body: z.infer<typeof ExecBodySchema>; input?: StagedInput | undefined }> {
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    let input: StagedInput | undefined;
    try {
      if (type === 'application/x-tar') {
        const header = req.headers['x-execgate-request'];
        if (typeof header !== 'string') throw new ServiceError('invalid_request', 'x-execgate-request: the request JSON goes in this header with a tar body', { fields: [{ path: 'x-execgate-request', message: 'required' }] });
        const body = parse(ExecBodySchema, parseJsonField(header, 'x-execgate-request'), 'body');
        if (body.files) throw new ServiceError('invalid_request', 'files: given both as a map and as a tar body', { fields: [{ path: 'files', message: 'given twice' }] });
        input = await service.stageFiles(req.caller, { tar: req.body as AsyncIterable<Uint8Array> }, 'body');
        return { body, input };
      }
      if (type === 'multipart/form-data') {
        let raw: unknown;
        // A body that is not well-formed multipart (no boundary, cut short, a broken part header) is the
        // client's mistake: busboy's plain errors, from the parts iterator or from a file part's stream,
        // become a 400 naming `multipart`, never a 500. Errors of our own (staging, limits) pass unchanged.
        const parts = req.parts()[Symbol.asyncIterator]();
        for (;;) {
          let next: Awaited<ReturnType<typeof parts.next>>;
          try {
            next = await parts.next();
          } catch (err) {
            throw malformedMultipart(err);
          }
          if (next.done) break;
          const part = next.value;
          if (part.type === 'file') {
            if (part.fieldname !== 'files' || input) throw new ServiceError('invalid_request', `${part.fieldname || 'multipart'}: one tar part named "files" is expected`, { fields: [{ path: part.fieldname || 'multipart', message: 'unexpected file part' }] });
            let streamError: unknown;
            part.file.once('error', (err) => (streamError = err));
            try {
              input = await service.stageFiles(req.caller, { tar: part.file }, 'files');
            } catch (err) {
              // The stream's `error` event may come after its iterator rejected: `errored` is set at once.
              const source = streamError ?? part.file.errored;
              throw source !== undefined && source !== null ? malformedMultipart(source) : err;
            }
          } else if (part.fieldname === 'request') {
            raw = parseJsonField(String(part.value), 'request');
          } else {
            const name = part.fieldname || 'multipart';
            throw new ServiceError('invalid_request', `${name}: unexpected ${part.fieldname ? 'field' : 'unnamed part'} (expected "request" and "files")`, { fields: [{ path: name, message: 'unexpected field' }] });
          }
        }
        if (raw === undefined) throw new ServiceError('invalid_request', 'request: the request JSON field is missing', { fields: [{ path: 'request', message: 'required' }] });
        const body = parse(ExecBodySchema, raw, 'body');
        if (body.files && input) throw new ServiceError('invalid_request', 'files: given both as a map and as a tar part', { fields: [{ path: 'files', message: 'given twice' }] });
        if (body.files) input = await service.stageFiles(req.caller, { map: body.files });
        return { body, input };
      }
      const body = parse(ExecBodySchema, req.body, 'body');
      if (body.files) input = await service.stageFiles(req.caller, { map: body.files });
      return { body, input };
    } catch (err) {
      service.staging.release(input);
      throw err;
    }
  }

  async function handleExec(req: FastifyRequest, reply: FastifyReply, session: Session | undefined): Promise<unknown> {
    if (deps.isDraining?.()) throw new ServiceError('shutting_down', 'the service is shutting down; retry on another instance');
    const { body, input } = await readExec(req);
    let outcome: PrepareOutcome;
    try {
      if (body.stdin !== undefined && body.stdinEncoding === 'base64' && !BASE64.test(body.stdin)) {
        throw new ServiceError('invalid_request', 'stdin: not valid base64', { fields: [{ path: 'stdin', message: 'not valid base64' }] });
      }
      const stdin = body.stdin === undefined ? undefined : Buffer.from(body.stdin, body.stdinEncoding === 'base64' ? 'base64' : 'utf8');
      outcome = service.prepare(req.caller, { command: body.command, cwd: body.cwd, env: body.env, secretEnv: body.secretEnv, stdin, timeoutMs: body.timeoutMs, interactive: body.interactive, input, collect: body.collect, session });
    } catch (err) {
      service.staging.release(input);
      throw err;
    }
    if (!outcome.ok) {
      throw new ServiceError('policy_denied', outcome.decision.reason, { execId: outcome.execId, decision: outcome.decision });
    }
    const ac = new AbortController();
    const onClose = () => {
      if (!reply.raw.writableFinished) ac.abort();
    };
    reply.raw.on('close', onClose);
    if (reply.raw.destroyed || req.raw.socket.destroyed) ac.abort();
    const events = await service.start(outcome.prepared, ac.signal);
    const format = negotiate(req.headers.accept);
    if (format === 'json') return answerOnce(reply, outcome.prepared.execId, events);

    reply.hijack();
    startStream(reply.raw, format, { 'x-execgate-exec-id': outcome.prepared.execId });
    const stream = format === 'multiplexed' ? new MultiplexedStream(reply.raw) : new EventStream(reply.raw, format);
    try {
      for await (const event of events) {
        if (reply.raw.destroyed) break;
        await stream.write(event);
      }
    } catch (err) {
      req.log.error({ err }, 'exec stream failed');
      if (!reply.raw.destroyed) await stream.write({ type: 'error', code: 'internal_error', message: `internal error (request ${req.id})` });
    } finally {
      reply.raw.end();
    }
    return undefined;
  }

  app.post('/v1/exec', { config: { role: 'exec' } }, async (req, reply) => handleExec(req, reply, undefined));

  app.get('/v1/executions/:id/artifacts', { config: { role: 'any' } }, async (req, reply) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const found = service.artifacts.open(req.caller.visibleTeam, id);
    if (!found) throw new ServiceError('artifact_not_found', `no artifacts for execution ${id} (none were collected, or they expired)`);
    return reply
      .type('application/x-tar')
      .header('content-length', String(found.info.bytes))
      .header('content-disposition', `attachment; filename="${id}.tar"`)
      .header('x-execgate-sha256', found.info.sha256)
      .header('cache-control', 'no-store')
      .send(found.stream);
  });

  // Sessions: a sandbox that lives across commands. Listed and ended by anyone of the team (the dashboard
  // uses approver tokens); created and used by exec tokens.
  app.post('/v1/sessions', { config: { role: 'exec' } }, async (req, reply) => {
    if (deps.isDraining?.()) throw new ServiceError('shutting_down', 'the service is shutting down; retry on another instance');
    const body = parse(SessionBodySchema, req.body ?? {}, 'body');
    const session = await service.sessions.create(service.team(req.caller.team), req.caller.name, body);
    return reply.code(201).send(sessionView(session));
  });
  app.get('/v1/sessions', { config: { role: 'any' } }, async (req) => ({ sessions: service.sessions.list(req.caller.visibleTeam).map(sessionView) }));
  app.get('/v1/sessions/:id', { config: { role: 'any' } }, async (req) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    return sessionView(service.sessions.get(req.caller.visibleTeam, id));
  });
  app.delete('/v1/sessions/:id', { config: { role: 'any' } }, async (req, reply) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    await service.sessions.end(service.sessions.get(req.caller.visibleTeam, id), `deleted by ${req.caller.name}`);
    return reply.code(204).send();
  });
  app.post('/v1/sessions/:id/exec', { config: { role: 'exec' } }, async (req, reply) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    // Acting in a session needs the session's own team: an admin acting for another team gets 404 too.
    return handleExec(req, reply, service.sessions.get(req.caller.team, id));
  });
  app.put('/v1/sessions/:id/files', { config: { role: 'exec' } }, async (req, reply) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const session = service.sessions.get(req.caller.team, id);
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    const input =
      type === 'application/x-tar'
        ? await service.stageFiles(req.caller, { tar: req.body as AsyncIterable<Uint8Array> }, 'body')
        : await service.stageFiles(req.caller, { map: parse(PutFilesBodySchema, req.body, 'body').files });
    const release = service.sessions.begin(session, service.team(req.caller.team));
    try {
      await session.handle.putArchive(createReadStream(input.path), service.team(req.caller.team).sandbox.timeoutMs);
    } catch (err) {
      throw new ServiceError('invalid_files', `the files could not be written into the session: ${(err as Error).message}`, { fields: [{ path: 'files', message: (err as Error).message }] });
    } finally {
      release();
      service.staging.release(input);
    }
    return reply.code(200).send({ sessionId: id, entries: input.entries, bytes: input.bytes, sha256: input.sha256 });
  });
  app.get('/v1/sessions/:id/files', { config: { role: 'exec' } }, async (req, reply) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const q = parse(GetFilesQuerySchema, req.query, 'query');
    const session = service.sessions.get(req.caller.team, id);
    const include = checkCollect(q.include === undefined ? undefined : Array.isArray(q.include) ? q.include : [q.include]);
    // Checked entry by entry into a file first, then sent: a refused entry (a link planted in /scratch that
    // points outside it, say) is a clear 400 naming it, never a download cut short.
    const staged = await service.sessionFiles(session, include);
    const stream = createReadStream(staged.path);
    stream.on('close', () => service.staging.release(staged));
    return reply
      .type('application/x-tar')
      .header('content-length', String(staged.bytes))
      .header('content-disposition', `attachment; filename="${id}.tar"`)
      .header('x-execgate-sha256', staged.sha256)
      .header('cache-control', 'no-store')
      .send(stream);
  });

  app.get('/v1/approvals', { config: { role: 'approve' } }, async (req) => {
    const q = parse(ApprovalsQuerySchema, req.query, 'query');
    return { approvals: service.approvals.list(req.caller.visibleTeam, q.status).map(approvalView) };
  });

  app.get('/v1/approvals/:id', { config: { role: 'approve' } }, async (req) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const a = service.approvals.get(id, req.caller.visibleTeam);
    if (!a) throw new ServiceError('approval_not_found', `no approval ${id}`);
    return approvalView(a);
  });

  app.post('/v1/approvals/:id/approve', { config: { role: 'approve' } }, async (req) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const body = parse(ApproveBodySchema, req.body ?? {}, 'body');
    return approvalView(service.approve(req.caller, id, body));
  });

  app.post('/v1/approvals/:id/reject', { config: { role: 'approve' } }, async (req) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const body = parse(RejectBodySchema, req.body ?? {}, 'body');
    return approvalView(service.reject(req.caller, id, body.reason));
  });

  app.get('/v1/rules/remembered', { config: { role: 'approve' } }, async (req) => ({
    rules: service.listRemembered(req.caller).map((r) => ({ ...r, createdAt: new Date(r.createdAt).toISOString(), expiresAt: r.expiresAt ? new Date(r.expiresAt).toISOString() : undefined })),
  }));

  app.delete('/v1/rules/remembered/:id', { config: { role: 'approve' } }, async (req, reply) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    service.removeRemembered(req.caller, id);
    return reply.code(204).send();
  });

  app.get('/v1/safe-mode', { config: { role: 'approve' } }, async (req) => ({ team: req.caller.team, enabled: service.safeMode(req.caller.team) }));

  app.put('/v1/safe-mode', { config: { role: 'approve' } }, async (req) => {
    const body = parse(SafeModeBodySchema, req.body, 'body');
    let team = req.caller.team;
    if (body.team !== undefined && body.team !== team) {
      if (!req.caller.admin) throw new ServiceError('forbidden', 'only admin tokens may switch another team\'s safe mode');
      team = body.team;
    }
    service.setSafeMode(team, body.enabled, req.caller.name);
    return { team, enabled: service.safeMode(team) };
  });

  app.get('/v1/executions', { config: { role: 'any' } }, async (req) => {
    const q = parse(ExecutionsQuerySchema, req.query, 'query');
    let team = req.caller.visibleTeam;
    if (q.team !== undefined) {
      if (team !== null && q.team !== team) return { executions: [] };
      team = q.team;
    }
    const rows = deps.state.listExecutions({ team, decision: q.decision, since: q.since ? Date.parse(q.since) : undefined, limit: q.limit });
    return { executions: rows.map(executionView) };
  });

  app.get('/v1/executions/:id', { config: { role: 'any' } }, async (req) => {
    const { id } = parse(IdParamsSchema, req.params, 'params');
    const r = deps.state.getExecution(id);
    if (!r || (req.caller.visibleTeam !== null && r.team !== req.caller.visibleTeam)) throw new ServiceError('execution_not_found', `no execution ${id}`);
    return executionView(r);
  });

  // The Model Context Protocol endpoint: the same service as tools for any MCP agent.
  await registerMcp(app, deps);

  app.get('/v1/events', { config: { role: 'any' } }, async (req, reply) => {
    reply.hijack();
    startStream(reply.raw, 'sse');
    reply.raw.write(`: connected\n\n`);
    const unsubscribe = service.events.subscribe(req.caller.visibleTeam, (e) => {
      if (reply.raw.destroyed) return;
      // A subscriber that does not read is cut off rather than buffered without bound; it can reconnect.
      if (reply.raw.writableLength > 1 << 20) {
        reply.raw.destroy();
        return;
      }
      reply.raw.write(`data: ${JSON.stringify({ team: e.team, ...e.payload })}\n\n`);
    });
    const heartbeat = setInterval(() => reply.raw.write(': keep-alive\n\n'), 15_000);
    reply.raw.on('close', () => {
      clearInterval(heartbeat);
      unsubscribe();
    });
  });

  return app;
}

async function answerOnce(reply: FastifyReply, execId: string, events: AsyncGenerator<ExecEvent>): Promise<unknown> {
  const out: Record<'stdout' | 'stderr', Buffer[]> = { stdout: [], stderr: [] };
  let decision: string | undefined;
  let approvalId: string | undefined;
  let artifact: Record<string, unknown> | undefined;
  for await (const e of events) {
    if (e.type === 'decision') decision = e.decision;
    else if (e.type === 'artifact') {
      const { type: _type, ...rest } = e;
      artifact = rest;
    }
    else if (e.type === 'approval_pending') approvalId = e.approvalId;
    else if (e.type === 'stdout' || e.type === 'stderr') out[e.type].push(e.bytes);
    else if (e.type === 'rejected') {
      throw new ServiceError(notApprovedCode(e.reason), `not approved: ${e.reason}`, { execId, approvalId, reason: e.reason, by: e.by });
    } else if (e.type === 'error') {
      const status = ['docker_unavailable', 'image_missing', 'runtime_unavailable'].includes(e.code) ? 503 : (ERROR_STATUS as Record<string, number>)[e.code] ?? 500;
      return reply.code(status).send({ error: { code: e.code, message: e.message, execId } });
    } else if (e.type === 'exit') {
      // Bytes that are not UTF-8 come base64-encoded, as in the stream, with `stdoutEncoding: "base64"`.
      const text = (b: Buffer[]) => {
        const buf = Buffer.concat(b);
        return isUtf8(buf) ? { data: buf.toString('utf8') } : { data: buf.toString('base64'), encoding: 'base64' as const };
      };
      const stdout = text(out.stdout);
      const stderr = text(out.stderr);
      return {
        execId,
        decision,
        approvalId,
        exitCode: e.exitCode,
        stdout: stdout.data,
        stderr: stderr.data,
        ...(stdout.encoding ? { stdoutEncoding: stdout.encoding } : {}),
        ...(stderr.encoding ? { stderrEncoding: stderr.encoding } : {}),
        durationMs: e.durationMs,
        timedOut: e.timedOut,
        oomKilled: e.oomKilled,
        truncated: e.truncated,
        writeQuotaExceeded: e.writeQuotaExceeded,
        ...(artifact ? { artifact } : {}),
      };
    }
  }
  return reply.code(499).send({ error: { code: 'client_disconnected', message: 'the client went away', execId } });
}

/** Node's `clientError`: the request could not be parsed as HTTP. Answered in the SPEC §3 error shape, then closed. */
function clientError(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, text, code, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? [408, 'Request Timeout', 'request_timeout', 'the request was not received in time']
    : err.code === 'HPE_HEADER_OVERFLOW' ? [431, 'Request Header Fields Too Large', 'headers_too_large', 'the request headers are over the size limit']
    : [400, 'Bad Request', 'invalid_request', `the request is not valid HTTP${err.code ? ` (${err.code})` : ''}`];
  const body = JSON.stringify({ error: { code, message, ...(status === 400 ? { fields: [{ path: 'http', message }] } : {}) } });
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${text}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}

function executionView(r: ReturnType<StateStore['getExecution']> & object): Record<string, unknown> {
  return {
    ...r,
    createdAt: new Date(r.createdAt).toISOString(),
    finishedAt: r.finishedAt ? new Date(r.finishedAt).toISOString() : undefined,
  };
}

export type { FastifyRequest };
