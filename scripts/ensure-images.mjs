// Runs before `npm start` and `npm test`: builds the sandbox image when it is missing (a no-op when present).
// Without a Docker engine it says so and carries on: `execgate serve` starts anyway and /readyz explains.
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const image = process.env.EXECGATE_SANDBOX_IMAGE ?? 'execgate/sandbox:latest';
const ok = (args) => spawnSync('docker', args, { stdio: 'ignore' }).status === 0;

if (!ok(['info'])) {
  process.stderr.write('execgate: no Docker engine answers; the sandbox image cannot be checked or built (as root: bash .ci/setup-docker.sh)\n');
} else if (!ok(['image', 'inspect', image])) {
  process.stderr.write(`execgate: sandbox image ${image} is missing; building it (npm run images)\n`);
  execFileSync('bash', [fileURLToPath(new URL('./build-images.sh', import.meta.url))], { stdio: 'inherit' });
}
