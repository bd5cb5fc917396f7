import tseslint from 'typescript-eslint';

// The import graph shows the architecture: policy/ and approvals/ are pure; only runner/ talks to Docker;
// only http/ (and app.ts/main.ts) know HTTP.
const pure = ['fastify', 'dockerode', 'pino', 'node:fs', 'node:child_process', 'node:net', 'node:http', 'fs', 'child_process'];
const restrict = (names, message) => ({ 'no-restricted-imports': ['error', { paths: names.map((name) => ({ name, message })) }] });

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'coverage/', 'test-artifacts/'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-explicit-any': 'error',
    },
  },
  { files: ['src/policy/**/*.ts', 'src/approvals/**/*.ts'], rules: restrict(pure, 'policy/ and approvals/ are pure: values in, values out') },
  { files: ['src/service/**/*.ts', 'src/config/**/*.ts', 'src/http/**/*.ts', 'src/store/**/*.ts'], rules: restrict(['dockerode'], 'only runner/ talks to Docker') },
  { files: ['src/service/**/*.ts', 'src/runner/**/*.ts', 'src/config/**/*.ts', 'src/store/**/*.ts'], rules: restrict(['fastify'], 'only http/ and app.ts know HTTP') },
);
