/**
 * V8 flags the service runs with, wherever it is started (`npm start`, the `execgate` bin's shebang, the
 * Dockerfile, the bench and the tests; a unit test keeps them in step).
 *
 * Streaming turns every 64 KiB of output into a few short-lived strings. With V8's default young generation
 * (up to 16 MiB per semi-space) that garbage lets the process grow by ~70 MiB while a command streams; with
 * 2 MiB semi-spaces the scavenger runs more often, each run is cheaper, and the peak stays ~40 MiB lower
 * with no measurable loss of streaming throughput (bench, 2 cores).
 */
export const NODE_FLAGS = ['--max-semi-space-size=2'] as const;
