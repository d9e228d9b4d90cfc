// Classify texts with an AutoGLM Edge package from Node.js, through the WASI component
// transpiled by jco (`npm run transpile`; see README.md).
//   node classify.mjs PACKAGE.tar "text" ["text" ...]
import { readFile } from 'node:fs/promises';
import { runtime } from './gen/autoglm-edge.js';

/** Loads a package (.tar bytes); throws an Error naming the WIT error variant on failure. */
export async function loadModel(path) {
  try {
    return runtime.Model.load(await readFile(path));
  } catch (e) {
    throw witError(e);
  }
}

/** The component's `error` variant ({tag, val}) as a JavaScript Error with a `tag`. */
export function witError(e) {
  if (e && e.payload && typeof e.payload.tag === 'string') {
    const err = new Error(`${e.payload.tag}: ${e.payload.val}`);
    err.tag = e.payload.tag;
    return err;
  }
  return e;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [pkg, ...texts] = process.argv.slice(2);
  if (!pkg || texts.length === 0) {
    console.error('usage: node classify.mjs PACKAGE.tar TEXT...');
    process.exit(2);
  }
  try {
    const model = await loadModel(pkg);
    const predictions = model.classify(texts);
    predictions.forEach((p, i) => {
      console.log(JSON.stringify({ label: p.label, scores: Array.from(p.scores), text: texts[i] }));
    });
  } catch (e) {
    console.error(`error: ${witError(e).message}`);
    process.exit(1);
  }
}
