// Hugging Face tokenizers (Rust, via the napi binding of @anush008/tokenizers)
// as the same-run baseline of bench/tokenizer.
// usage: RAYON_NUM_THREADS=N node hf_tokenize.js TOKENIZER_JSON CORPUS_JSONL REPEATS OUT_JSONL
// Prints {"tokens", "seconds", "tokens_per_s"} for the best of REPEATS runs of
// encodeBatch(texts, {addSpecialTokens: false}); writes {"count","fnv1a64"} per
// text to OUT_JSONL so that the caller can compare outputs.
const fs = require('fs');
const path = require('path');
const zlib = require('zlib');
const { Tokenizer } = require(path.join(__dirname, 'node_modules/@anush008/tokenizers'));
const [tokPath, corpus, reps, out] = process.argv.slice(2);
function readText(p) {
  const b = fs.readFileSync(p);
  return (p.endsWith('.gz') ? zlib.gunzipSync(b) : b).toString('utf8');
}
let tokFile = tokPath;
if (tokPath.endsWith('.gz')) { // the napi binding reads plain files only
  tokFile = path.join(require('os').tmpdir(), `hf-tok-${process.pid}.json`);
  fs.writeFileSync(tokFile, readText(tokPath));
}
const t = Tokenizer.fromFile(tokFile);
if (tokFile !== tokPath) fs.unlinkSync(tokFile);
const texts = readText(corpus).split('\n').filter(l => l.length).map(l => JSON.parse(l).text);
function fnv(ids) {
  let h = 0xcbf29ce484222325n; const p = 0x100000001b3n; const m = (1n << 64n) - 1n;
  for (const id of ids) for (let k = 0; k < 4; k++) { h ^= BigInt((id >>> (8 * k)) & 0xff); h = (h * p) & m; }
  return h.toString(16).padStart(16, '0');
}
(async () => {
  await t.encodeBatch(texts.slice(0, 50), { addSpecialTokens: false });
  let best = Infinity, tokens = 0, encs = null;
  for (let r = 0; r < parseInt(reps || '1'); r++) {
    const t0 = process.hrtime.bigint();
    encs = await t.encodeBatch(texts, { addSpecialTokens: false });
    const s = Number(process.hrtime.bigint() - t0) / 1e9;
    best = Math.min(best, s);
  }
  const lines = [];
  for (const e of encs) { const ids = e.getIds(); tokens += ids.length; lines.push(JSON.stringify({ count: ids.length, fnv1a64: fnv(Array.from(ids)) })); }
  if (out) fs.writeFileSync(out, lines.join('\n') + '\n');
  console.log(JSON.stringify({ tokens, seconds: best, tokens_per_s: tokens / best }));
})();
