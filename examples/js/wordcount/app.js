// Word count, in JavaScript: the same processor as the Rust example
// (examples/wordcount), output for output.
//
// Splits each record's value into words (lower-cased, split at anything that
// is not a letter, a number or an apostrophe, apostrophes trimmed from both
// ends), keeps one counter per word in host state under "w/" + word (8 bytes
// big-endian, as the Rust SDK's put_u64), and emits one `word -> count` record
// per word occurrence, the count being the running total after it, with a
// `source-partition` header. Its snapshot is the number of records it has
// processed, 8 bytes big-endian.
//
// Config ([processor.config]): `min-length` (default 1) drops shorter words.
//
// Where it differs from Rust: componentize-js's engine (SpiderMonkey without
// ICU) has no Unicode property escapes (`\p{L}`), so a word character here is
// an ASCII digit, an apostrophe, or a character with case (one whose lower
// and upper case differ): the letters of Latin, Greek, Cyrillic, Armenian and
// other cased scripts. Letters of uncased scripts (CJK, Arabic, Hebrew,
// Devanagari...) and non-ASCII digits separate words here where Rust's
// char::is_alphanumeric keeps them, and a final capital sigma lower-cases to
// σ, not ς.

import { fail, output, state, text, u64Restore, u64Snapshot, utf8 } from '../wasmstream-guest.js';

let processed = 0n;
let minLength = 1;

function isWordChar(c) {
  return c === "'" || (c >= '0' && c <= '9') || c.toLowerCase() !== c.toUpperCase();
}

export function words(s) {
  const out = [];
  let current = '';
  // Iterating a string yields code points.
  for (const c of s + ' ') {
    if (isWordChar(c)) {
      current += c;
    } else if (current !== '') {
      const w = current.replace(/^'+|'+$/g, '').toLowerCase();
      if (w !== '') out.push(w);
      current = '';
    }
  }
  return out;
}

export function init(config) {
  for (const [key, value] of config) {
    if (key === 'min-length') {
      if (!/^[0-9]+$/.test(value)) fail(`processor config \`min-length\` = ${JSON.stringify(value)}: not a non-negative integer`);
      minLength = Number(value);
    }
  }
}

export function process(input) {
  let s;
  try {
    s = text(input.value);
  } catch (e) {
    fail(`value of ${input.topic}/${input.partition}@${input.offset} is not UTF-8: ${e.message}`);
  }
  const partition = utf8(String(input.partition));
  const outputs = [];
  for (const word of words(s)) {
    // Code points, as Rust's chars().count().
    if ([...word].length < minLength) continue;
    const key = utf8('w/' + word);
    const count = (state.getU64(key) ?? 0n) + 1n;
    state.putU64(key, count);
    outputs.push(output(utf8(word), utf8(count.toString()), [['source-partition', partition]]));
  }
  processed += 1n;
  return outputs;
}

export function snapshot() {
  return u64Snapshot(processed);
}

/** `origin` ({ moduleDigest, sameModule }): which module took the snapshot; one format so far. */
export function restore(bytes, origin) {
  processed = u64Restore(bytes);
}
