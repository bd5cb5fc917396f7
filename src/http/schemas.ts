import { z } from 'zod';

const noNul = (s: string) => !s.includes('\0');

export const ExecBodySchema = z
  .object({
    command: z.string().max(65_536).describe('The shell command, run with /bin/sh -c after the policy allows it (over 16 KiB it is denied)'),
    cwd: z.string().max(4096).refine(noNul, 'must not contain NUL').optional().describe('Working directory; default: the first allowed path'),
    env: z
      .record(z.string().max(256), z.string().max(65_536).refine(noNul, 'must not contain NUL'))
      .refine((e) => Object.keys(e).length <= 256, 'at most 256 variables')
      .optional(),
    stdin: z.string().max(4 * 1024 * 1024).optional().describe('Sent to the command\'s standard input, then closed; part of what an approval covers'),
    stdinEncoding: z.enum(['utf8', 'base64']).default('utf8'),
    timeoutMs: z.number().int().positive().optional().describe('Capped by the team\'s sandbox.timeoutMs'),
    interactive: z.boolean().optional().describe('false: nobody can approve, so `ask` becomes a deny'),
  })
  .strict();

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
