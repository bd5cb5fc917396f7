/**
 * V8 flags the service runs with, wherever it is started (`npm start`, the `execgate` bin's shebang, the
 * Dockerfile, the bench and the tests; a unit test keeps them in step). SERVICE_ENV below is set in the same
 * places.
 *
 * - `--max-semi-space-size=2`: streaming turns every 64 KiB of output into a few short-lived objects. With
 *   V8's default young generation (up to 16 MiB per semi-space) that garbage lets the process grow by ~30 MiB
 *   more while a command streams; with 2 MiB semi-spaces the scavenger runs more often and each run is cheaper.
 * - `--liftoff-only`: the policy's bash parser is WebAssembly (tree-sitter). Once it is hot, V8 recompiles
 *   its big lexer and parser functions with TurboFan on background threads, and that compilation takes
 *   ~40 MiB of malloc'd memory at once, which glibc then keeps. It happened during the first command that
 *   streamed: 200 MB through a fresh service peaked at 137–150 MiB with it, 100–114 MiB without (2 cores,
 *   measured by the service's VmHWM). Liftoff, V8's baseline WebAssembly compiler, is fast enough here: policy
 *   decisions per second are the same within noise with and without it (bench/policy-bench.ts in a process
 *   started each way: 29–31 thousand a second; `POST /v1/policy/check` on the service: 3,000–3,300 a second).
 *   `--no-wasm-tier-up` did not lower the peak (V8's dynamic tiering still recompiles).
 * - `--expose-gc` gives the GC pacer (src/gc-pacer.ts) its collector.
 */
export const NODE_FLAGS = ['--max-semi-space-size=2', '--liftoff-only', '--expose-gc'] as const;

/**
 * glibc malloc settings, read when the process starts (so they are set by whatever starts node). One arena
 * keeps what every thread allocates in one heap instead of one per thread: RSS at start 88 vs 94 MiB, peak
 * while streaming 200 MB 105 vs 114 MiB (2 cores). Other allocators ignore it.
 */
export const SERVICE_ENV = { MALLOC_ARENA_MAX: '1' } as const;

/**
 * The built service as a child process of the tests and benches: `node NODE_FLAGS [extra] dist/main.js serve
 * --config PATH`, with SERVICE_ENV over the caller's environment and `env` over both.
 */
export function serviceLaunch(configPath: string, env: NodeJS.ProcessEnv = {}, extraFlags: readonly string[] = []): { args: string[]; env: NodeJS.ProcessEnv } {
  return { args: [...NODE_FLAGS, ...extraFlags, 'dist/main.js', 'serve', '--config', configPath], env: { ...process.env, ...SERVICE_ENV, ...env } };
}
