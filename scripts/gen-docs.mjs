// Writes openapi.json and config.schema.json from the zod schemas (via the built dist/), so they can be
// committed, diffed in review and used without a running service. Tests fail when either is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { openApiDocument } from '../dist/http/openapi.js';
import { configJsonSchema } from '../dist/cli/config.js';

const root = new URL('..', import.meta.url);
const { version } = JSON.parse(readFileSync(new URL('package.json', root), 'utf8'));
writeFileSync(new URL('openapi.json', root), `${JSON.stringify(openApiDocument({ version }), null, 2)}\n`);
writeFileSync(new URL('config.schema.json', root), `${JSON.stringify(configJsonSchema(), null, 2)}\n`);
console.log('wrote openapi.json and config.schema.json');
