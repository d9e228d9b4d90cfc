// The component under Node.js (jco transpile + preview2 shim) against the native runtime.
// tools/check/test-js.sh writes the native answers to $AUTOGLM_EXPECTED first.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { loadModel, witError } from '../classify.mjs';

// The fp32 sentiment package tools/check/test-js.sh exports (int8 packages differ between engines by
// quantization steps, not float noise: see crates/autoglm-cli/tests/it/wasm.rs).
const pkg = process.env.AUTOGLM_PACKAGE;

const lines = async (path) =>
  (await readFile(path, 'utf8')).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));

test('classifies like the native runtime (scores within 1e-5)', async () => {
  const texts = (await lines(new URL('texts.jsonl', import.meta.url))).map((l) => l.text);
  // `autoglm classify --json` (native) on the same texts: {"label", "scores": {label: p}}.
  const expected = await lines(process.env.AUTOGLM_EXPECTED);
  const model = await loadModel(pkg);
  const labels = Array.from(model.labels());
  assert.deepEqual(labels, ['negative', 'positive']);
  const got = model.classify(texts);
  assert.equal(got.length, texts.length);
  assert.equal(expected.length, texts.length);
  got.forEach((p, i) => {
    assert.equal(p.label, expected[i].label, texts[i]);
    labels.forEach((label, j) => {
      const want = expected[i].scores[label];
      assert.ok(Math.abs(p.scores[j] - want) < 1e-5, `${texts[i]}: ${p.scores[j]} vs ${want}`);
    });
  });
});

test('a corrupt package is refused with the invalid-package variant', async () => {
  const bytes = await readFile(pkg);
  bytes[bytes.length >> 1] ^= 0xff;
  const { runtime } = await import('../gen/autoglm-edge.js');
  assert.throws(() => {
    try {
      runtime.Model.load(bytes);
    } catch (e) {
      throw witError(e);
    }
  }, (e) => e.tag === 'invalid-package');
});
