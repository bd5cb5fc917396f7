import { z } from 'zod';

const noNul = (s: string) => !s.includes('\0');

/** Relative path → UTF-8 text, or { data, encoding: base64, mode }. Paths and sizes are checked when packed. */
export const FilesSchema = z
  .record(
    z.string().min(1).max(4096),
    z.union([
      z.string(),
      z
        .object({
          data: z.string(),
          encoding: z.enum(['utf8', 'base64']).optional(),
          mode: z.number().int().min(0).max(0o7777).optional(),
        })
        .strict(),
    ]),
  )
  .refine((m) => Object.keys(m).length > 0, 'at least one file');

export const SessionBodySchema = z
  .object({
    image: z.string().min(1).max(512).optional().describe('sandbox.image of the team, or one of its sessions.allowedImages'),
    memoryMb: z.number().int().positive().optional(),
    cpus: z.number().positive().optional(),
    pidsLimit: z.number().int().positive().optional(),
    idleTimeoutMs: z.number().int().positive().optional(),
    maxLifetimeMs: z.number().int().positive().optional(),
  })
  .strict();

export const PutFilesBodySchema = z.object({ files: FilesSchema }).strict();

export const GetFilesQuerySchema = z
  .object({
    include: z.union([z.string(), z.array(z.string())]).optional().describe('Globs relative to /scratch; default: everything'),
  })
  .strict();

export const ExecBodySchema = z
  .object({
    command: z.string().max(65_536).describe('The shell command, run with /bin/sh -c after the policy allows it (over 16 KiB it is denied)'),
    cwd: z.string().max(4096).refine(noNul, 'must not contain NUL').optional().describe('Working directory; default: the first allowed path'),
    env: z
      .record(z.string().max(256), z.string().max(65_536).refine(noNul, 'must not contain NUL'))
      .refine((e) => Object.keys(e).length <= 256, 'at most 256 variables')
      .optional()
      .describe('Environment variables for the command (names that change what runs, such as PATH or LD_PRELOAD, and those the team\'s sandbox.env sets are refused); part of what an approval covers'),
    secretEnv: z
      .array(z.string().max(256))
      .max(256)
      .optional()
      .describe('Keys of env whose values are secret (at least 8 characters each): approvals, history and events show them only as [secret hmac:…], and they are replaced by [redacted:NAME] in the output'),
    stdin: z.string().max(4 * 1024 * 1024).optional().describe('Sent to the command\'s standard input, then closed; part of what an approval covers'),
    stdinEncoding: z.enum(['utf8', 'base64']).default('utf8'),
    timeoutMs: z.number().int().positive().optional().describe('Capped by the team\'s sandbox.timeoutMs'),
    interactive: z.boolean().optional().describe('false: nobody can approve, so `ask` becomes a deny'),
    files: FilesSchema.optional().describe('Files written into /scratch before the command runs; the command then runs in /scratch unless cwd says otherwise'),
    collect: z.array(z.string().max(1024)).max(64).optional().describe('Globs of /scratch files returned after the command as an `artifact` event with a download URL'),
  })
  .strict()
  .meta({ id: 'ExecRequest' });

export const CheckBodySchema = z
  .object({
    command: z.string().max(65_536),
    cwd: z.string().max(4096).refine(noNul, 'must not contain NUL').optional(),
    interactive: z.boolean().optional(),
  })
  .strict();

export const ApproveBodySchema = z
  .object({
    note: z.string().max(2000).optional(),
    remember: z
      .object({
        scope: z.enum(['exact', 'prefix']),
        ttlMs: z.number().int().positive().max(366 * 24 * 3600_000).optional(),
      })
      .strict()
      .optional(),
  })
  .strict();

export const RejectBodySchema = z.object({ reason: z.string().max(2000).optional() }).strict();

export const SafeModeBodySchema = z.object({ enabled: z.boolean(), team: z.string().optional() }).strict();

export const ApprovalsQuerySchema = z.object({ status: z.enum(['pending', 'approved', 'rejected', 'expired', 'withdrawn']).optional() }).strict();

export const ExecutionsQuerySchema = z
  .object({
    team: z.string().optional(),
    decision: z.enum(['allow', 'ask', 'deny']).optional(),
    since: z.string().datetime({ offset: true }).optional(),
    limit: z.coerce.number().int().min(1).max(1000).default(100),
  })
  .strict();

export const IdParamsSchema = z.object({ id: z.string().min(1).max(200) });
