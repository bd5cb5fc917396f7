import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.js';

/** Placeholder until the MCP endpoint lands (being written now). */
export async function registerMcp(_app: FastifyInstance, _deps: AppDeps): Promise<void> {}
