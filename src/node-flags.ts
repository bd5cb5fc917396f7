/**
 * V8 flags the service runs with, wherever it is started (`npm start`, the `execgate` bin's shebang, the
 * Dockerfile, the bench and the tests; a unit test keeps them in step). SERVICE_ENV below is set in the same
 * places.
 *
 * Streaming turns every 64 KiB of output into a few short-lived strings. With V8's default young generation
 * (up to 16 MiB per semi-space) that garbage lets the process grow by ~70 MiB while a command streams; with
 * 2 MiB semi-spaces the scavenger runs more often, each run is cheaper, and the peak stays ~40 MiB lower
 * with no measurable loss of streaming throughput (bench, 2 cores). `--expose-gc` gives the GC pacer
 * (src/gc-pacer.ts) its collector.
 */
export const NODE_FLAGS = ['--max-semi-space-size=2', '--expose-gc'] as const;

/**
 * glibc malloc settings, read when the process starts (so they are set by whatever starts node). Every socket
 * read of a streaming command is a 64 KiB buffer that Node shrinks to what arrived (often 4 KiB) and frees a
 * GC later; in glibc's heaps that leaves holes that later reads do not fit, and the process keeps them. From
 * 64 KiB on, buffers are their own mappings and go back to the system when freed; one arena keeps the rest
 * in one heap instead of one per thread that allocates. Measured on 2 cores, 200 MB to a slow reader (the
 * integration test): peak RSS 92 → 160 MiB without, 84–88 → 135–143 MiB with; a pooled binary stream: peak 151 vs
 * 136–141 MiB; service CPU per stream the same within the noise (±20%). Other allocators ignore them.
 */
export const SERVICE_ENV = { MALLOC_ARENA_MAX: '1', MALLOC_MMAP_THRESHOLD_: '65536' } as const;
