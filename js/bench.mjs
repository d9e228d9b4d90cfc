// Latency of the WASI component from Node.js (jco transpile), the same measurement as the
// Rust host's `wasm_vs_native` example: batch 1, texts of exactly 32 and 128 tokens
// ("hello" is one word piece: [CLS] + (n - 2) x hello + [SEP]), median of ITERS calls after
// five warm-up calls (V8 compiles in tiers), plus the package load. Compare with
// `wasm_vs_native` on the same package for the ratio to native.
//   npm run transpile && node bench.mjs PACKAGE.tar [ITERS]
import { performance } from 'node:perf_hooks';
import { loadModel, witError } from './classify.mjs';

const [pkg, itersArg] = process.argv.slice(2);
if (!pkg) {
  console.error('usage: node bench.mjs PACKAGE.tar [ITERS]');
  process.exit(2);
}
const iters = Number(itersArg ?? 20);
if (!Number.isInteger(iters) || iters < 1) {
  console.error(`ITERS must be a positive integer, not ${itersArg}`);
  process.exit(2);
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
};

try {
  let t = performance.now();
  const model = await loadModel(pkg);
  console.log(`load (read + verify + optimize) ${(performance.now() - t).toFixed(1)} ms`);
  console.log('| tokens | batch | node ms |');
  console.log('|---:|---:|---:|');
  for (const tokens of [32, 128]) {
    const text = Array(tokens - 2).fill('hello').join(' ');
    const call = () => model.classify([text]);
    for (let i = 0; i < 5; i++) call();
    const times = [];
    for (let i = 0; i < iters; i++) {
      t = performance.now();
      call();
      times.push(performance.now() - t);
    }
    console.log(`| ${tokens} | 1 | ${median(times).toFixed(2)} |`);
  }
} catch (e) {
  console.error(`error: ${witError(e).message}`);
  process.exit(1);
}
