/**
 * The policy engine: pure decisions about shell commands (SPEC §2). Loads the bash grammar once; after
 * that every call is synchronous and free of I/O.
 */
import { createRequire } from 'node:module';
import { Language, Parser } from 'web-tree-sitter';
import { Engine, type PolicyEngine } from './engine.js';
import { DEFAULT_BUDGET, type ParseBudget } from './shell.js';

export * from './types.js';
export type { PolicyEngine, CanonicalSegment, SegmentsResult, RuleWithExamples } from './engine.js';
export { policyHash, canonicalJson } from './hash.js';
export { isDangerousVariable, runsArbitraryCode } from './tools.js';
export { MAX_COMMAND_BYTES } from './text.js';
export { DEFAULT_BUDGET, type BudgetPhase, type ParseBudget } from './shell.js';

let language: Promise<Language> | null = null;

function loadLanguage(): Promise<Language> {
  language ??= (async () => {
    await Parser.init();
    const require = createRequire(import.meta.url);
    return Language.load(require.resolve('tree-sitter-bash/tree-sitter-bash.wasm'));
  })();
  return language;
}

/**
 * Creates an engine with its own parser; the wasm grammar is loaded once per process and shared. `budget`
 * bounds the parse and analysis of each decision (DEFAULT_BUDGET otherwise); past it the command is denied.
 */
export async function createPolicyEngine(options: { budget?: Partial<ParseBudget> } = {}): Promise<PolicyEngine> {
  const lang = await loadLanguage();
  const parser = new Parser();
  parser.setLanguage(lang);
  return new Engine(parser, { ...DEFAULT_BUDGET, ...options.budget });
}
