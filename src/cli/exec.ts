/** Placeholder until the CLI client lands (being written now). */
export async function execCommand(_argv: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream; env: NodeJS.ProcessEnv }): Promise<number> {
  io.stderr.write('execgate exec: not built yet\n');
  return 2;
}
