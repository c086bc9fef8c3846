// Builds a JavaScript actor into a wasm component:
//   node guest-sdk/js/build.mjs samples/counter-js/app.js target/samples/counter-js.wasm [WORLD]
// WORLD is `actor` (the default), `event-sourced` (an app that exports `aggregate`)
// or `durable-workflow` (an app that exports `workflowRun`, from 'quark/workflow').
//
// 1. rolldown bundles the actor with this SDK (`import ... from 'quark'`)
//    (or a workflow with `quark/workflow`) into one ES module; the WIT
//    imports (`quark:actor/...`) stay imports.
// 2. componentize-js turns the bundle into a component of the `actor` world
//    of ../../wit. Its `http` and `fetch-event` features are disabled (the
//    actor world has no wasi:http); clocks, random and stdio stay, and the
//    host provides them through WASI 0.2.
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { rolldown } from 'rolldown';
import { componentize } from '@bytecodealliance/componentize-js';

const [source, out, world = 'actor'] = process.argv.slice(2);
if (!source || !out) {
  console.error('usage: node build.mjs ACTOR.js OUT.wasm [actor|event-sourced|durable-workflow]');
  process.exit(2);
}
const here = dirname(fileURLToPath(import.meta.url));
const wit = resolve(here, '../../wit');

const bundler = await rolldown({
  input: resolve(source),
  external: [/^quark:/, /^wasi:/],
  resolve: { alias: { 'quark/workflow': join(here, 'workflow.js'), quark: join(here, 'quark.js') } },
  logLevel: 'warn',
});
const { output } = await bundler.generate({ format: 'esm' });
await bundler.close();

const work = await mkdtemp(join(tmpdir(), 'quark-js-'));
try {
  const bundle = join(work, 'actor.js');
  await writeFile(bundle, output[0].code);
  const { component } = await componentize({
    sourcePath: bundle,
    witPath: wit,
    worldName: world,
    disableFeatures: ['http', 'fetch-event'],
  });
  await mkdir(dirname(resolve(out)), { recursive: true });
  await writeFile(out, component);
} finally {
  await rm(work, { recursive: true, force: true });
}
