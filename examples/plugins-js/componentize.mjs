// Builds out/plugin.wasm from plugin.js against ../../wit (world `plugin`).
// Uses componentize-js's API: the `jco componentize` command failed here with a path error.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: resolve(here, 'plugin.js'),
  witPath: resolve(here, '../../wit'),
  worldName: 'plugin',
  // stdio stays on: an uncaught error's message and stack go to stderr, which the gateway shows.
  disableFeatures: ['random', 'clocks', 'http', 'fetch-event'],
});
await mkdir(resolve(here, 'out'), { recursive: true });
await writeFile(resolve(here, 'out/plugin.wasm'), component);
console.log(`out/plugin.wasm: ${component.byteLength} bytes`);
