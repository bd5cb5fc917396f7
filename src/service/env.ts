import { isDangerousVariable } from '../policy/index.js';

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/**
 * Why a request may not set the environment variable `name`, or undefined when it may. The policy never sees
 * the request's env, so a variable that changes what runs (`PATH`, `LD_PRELOAD`, `GIT_SSH_COMMAND`, …) would
 * make an allowed command run something else: the same list the policy applies to `VAR=` prefixes applies here.
 */
export function dangerousEnvName(name: string): string | undefined {
  if (!NAME.test(name)) return 'not a valid variable name';
  if (isDangerousVariable(name)) return 'changes which program runs or what it loads; not allowed';
  return undefined;
}
