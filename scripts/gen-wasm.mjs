// Compiles src/service/json-escape.wat (with wabt, a dev dependency) into src/service/json-escape-wasm.ts, the
// module's bytes as base64, so the service needs neither wabt nor a file next to its JavaScript at run time.
// With --stdout it prints the file instead: test/unit/json-escape.test.ts fails when the committed one is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import wabtInit from 'wabt';

async function wasmModuleSource() {
  const wat = new URL('../src/service/json-escape.wat', import.meta.url);
  const wabt = await wabtInit();
  const parsed = wabt.parseWat('json-escape.wat', readFileSync(wat, 'utf8'), { simd: true });
  try {
    parsed.validate();
    const { buffer } = parsed.toBinary({});
    return [
      '// Generated from json-escape.wat by scripts/gen-wasm.mjs: do not edit; change the .wat and run the script.',
      `export const JSON_ESCAPE_WASM = '${Buffer.from(buffer).toString('base64')}';`,
      '',
    ].join('\n');
  } finally {
    parsed.destroy();
  }
}

if (process.argv.includes('--stdout')) process.stdout.write(await wasmModuleSource());
else {
  writeFileSync(new URL('../src/service/json-escape-wasm.ts', import.meta.url), await wasmModuleSource());
  console.log('wrote src/service/json-escape-wasm.ts');
}
