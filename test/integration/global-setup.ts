import Docker from 'dockerode';
import { SANDBOX_IMAGE } from '../support/sandbox.js';

/**
 * Integration tests need a real Docker engine and the sandbox image. When either is missing the whole run
 * fails here, loudly, with the fix: these tests never skip themselves.
 */
export default async function setup(): Promise<() => Promise<void>> {
  const docker = new Docker();
  try {
    await docker.ping();
  } catch (err) {
    throw new Error(
      `integration tests need a Docker engine, and none answers (${(err as Error).message}).\n` +
        'Start one (as root: bash .ci/setup-docker.sh) or point DOCKER_HOST at one.',
    );
  }
  try {
    await docker.getImage(SANDBOX_IMAGE).inspect();
  } catch {
    throw new Error(`integration tests need the sandbox image ${SANDBOX_IMAGE}; build it with \`npm run images\`.`);
  }
  const before = new Set((await docker.listContainers({ all: true })).map((c) => c.Id));
  const volumesBefore = new Set(((await docker.listVolumes({ filters: { label: ['io.execgate.managed=true'] } })).Volumes ?? []).map((v) => v.Name));
  return async () => {
    // No container, and no /scratch volume, may outlive the suite.
    const after = await docker.listContainers({ all: true, filters: { label: ['io.execgate.managed=true'] } });
    const leaked = after.filter((c) => !before.has(c.Id));
    for (const c of leaked) await docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => undefined);
    const volumes = ((await docker.listVolumes({ filters: { label: ['io.execgate.managed=true'] } })).Volumes ?? []).filter((v) => !volumesBefore.has(v.Name));
    for (const v of volumes) await docker.getVolume(v.Name).remove().catch(() => undefined);
    if (leaked.length > 0 || volumes.length > 0) {
      throw new Error(`execgate resources outlived the integration suite: ${leaked.length} container(s) ${leaked.map((c) => c.Id.slice(0, 12)).join(', ')}; ${volumes.length} volume(s)`);
    }
  };
}
