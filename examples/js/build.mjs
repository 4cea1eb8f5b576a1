// Builds a JavaScript processor into a component of the
// `wasmstream:processor/processor` world with componentize-js's API (its
// CLI's WASI shim has no preopened directories and fails to read the
// sources). Every default feature (stdio, random, clocks, http, fetch-event)
// is off, so the component imports nothing but the host's interfaces.
//
//   node examples/js/build.mjs <componentize-js dir> <app.js> <out.wasm>
import { writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [moduleDir, source, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node build.mjs <componentize-js dir> <app.js> <out.wasm>');
  process.exit(2);
}
const { componentize } = await import(pathToFileURL(join(moduleDir, 'src/componentize.js')).href);
const wit = resolve(import.meta.dirname, '../../wit');
const { component } = await componentize({
  sourcePath: resolve(source),
  witPath: wit,
  worldName: 'processor',
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await writeFile(out, component);
