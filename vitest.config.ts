import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';

/**
 * One real-Docker project per sandbox runtime: the same integration files run once under runc and once under
 * gVisor (runsc). `test.env` is the forked worker's environment, so test/support/sandbox.ts reads the runtime
 * (EXECGATE_TEST_RUNTIME → TEST_RUNTIME) before any test module imports it; `provide` hands the same name to
 * the tests, which check that the containers really got it (test/integration/cis-audit.test.ts).
 */
function integration(name: string, runtime: 'runc' | 'runsc', groupOrder: number): TestProjectInlineConfiguration {
  return {
    test: {
      name,
      include: ['test/integration/**/*.test.ts'],
      globalSetup: ['test/integration/global-setup.ts'],
      testTimeout: 60_000,
      hookTimeout: 120_000,
      env: { EXECGATE_TEST_RUNTIME: runtime },
      provide: { runtime },
      // Containers are the scarce resource on 2 cores, and both runtimes share one engine (global-setup
      // fails a run that leaves containers behind): files run one at a time (fileParallelism: false makes
      // maxWorkers 1), and each Docker project is its own sequence.groupOrder, so groups run one after another
      // (lowest first) and never at the same time.
      fileParallelism: false,
      sequence: { groupOrder },
    },
  };
}

// Pure unit tests, HTTP tests with a fake runner, integration tests on a real Docker engine (twice: runc and
// runsc), and end-to-end tests. Integration tests never skip themselves: test/integration/global-setup.ts
// fails the run when Docker or the sandbox image is missing.
export default defineConfig({
  test: {
    projects: [
      { test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { test: { name: 'http', include: ['test/http/**/*.test.ts'] } },
      integration('integration', 'runc', 1),
      integration('integration-runsc', 'runsc', 2),
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          globalSetup: ['test/integration/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          sequence: { groupOrder: 3 },
        },
      },
    ],
  },
});
