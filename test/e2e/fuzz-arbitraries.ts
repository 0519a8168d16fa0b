import { resolve } from 'node:path';
import fc from 'fast-check';

/**
 * Generators of malformed requests for test/server/fuzz.test.ts. A body is built by mutating a
 * valid one (a field removed, set to a hostile value, an unknown field added), so most requests
 * get past the JSON parser and reach the schema and the value checks, where the bugs live.
 * Values that JSON.stringify cannot write (NaN, 10 000 levels of nesting, raw tokens) are `Raw`
 * JSON text, spliced in by `toJson`.
 */

/** JSON text written as is (possibly not JSON at all: `NaN`, `01`). */
export class Raw {
  constructor(readonly text: string) {}
}

/** JSON text for `v`; Raw pieces are copied verbatim, a Map keeps its keys (even `__proto__`). */
export function toJson(v: unknown): string {
  if (v instanceof Raw) return v.text;
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v); // NaN, Infinity: not JSON
  if (v instanceof Map) return `{${[...v].map(([k, x]) => `${JSON.stringify(k)}:${toJson(x)}`).join(',')}}`;
  if (Array.isArray(v)) return `[${v.map(toJson).join(',')}]`;
  if (typeof v === 'object' && v !== null) return toJson(new Map(Object.entries(v)));
  return JSON.stringify(v) ?? 'null';
}

/** `depth` levels of arrays or objects around `1`, as text (JSON.stringify overflows its stack). */
export function deepJson(depth: number, kind: 'array' | 'object'): Raw {
  return kind === 'array'
    ? new Raw(`${'['.repeat(depth)}1${']'.repeat(depth)}`)
    : new Raw(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`);
}

export const MODEL = 'export'; // the served model is named after its directory
export const VOCAB = 512; // test/engine/served-model.ts

/** The valid completion every mutation starts from; max_tokens small so valid ones finish fast. */
export const VALID_COMPLETION: Record<string, unknown> = {
  model: MODEL,
  prompt: 'Call me Ishmael.',
  max_tokens: 2,
  temperature: 0.7,
  seed: 7,
};

export const COMPLETION_FIELDS = [
  'model',
  'prompt',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'presence_penalty',
  'frequency_penalty',
  'repetition_penalty',
  'stop',
  'seed',
  'n',
  'logprobs',
  'echo',
  'stream',
  'stream_options',
  'user',
  'ignore_eos',
  'best_of',
  'suffix',
  'logit_bias',
  'min_tokens',
  'stop_token_ids',
  'response_format',
  'tools',
  'tool_choice',
  'functions',
] as const;

const HOSTILE_CONSTANTS: unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1,
  2,
  16,
  17,
  20,
  21,
  0.5,
  -0.5,
  1e308,
  -1e308,
  2 ** 31,
  2 ** 53,
  2 ** 53 + 2,
  -(2 ** 63),
  Number.MIN_VALUE,
  Number.NaN,
  Number.POSITIVE_INFINITY,
  '',
  'NaN',
  'Infinity',
  '-1',
  '1',
  'true',
  'null',
  '\u0000',
  '\ud800', // a lone surrogate: JSON can carry it, UTF-8 cannot
  'a\udfffb',
  '\ufeff',
  '😀',
  '</s>',
  '<|endoftext|>',
  [],
  {},
  [[]],
  [''],
  [null],
  ['a', 'b', 'c', 'd', 'e'],
  [-1],
  [VOCAB],
  [VOCAB - 1],
  [0.5],
  [1e308],
  [1, 'a'],
  ['a', 1],
  [[1], []],
  [[1], ['a']],
  [[1, 2], [VOCAB + 1]],
  { include_usage: 'yes' },
  { include_usage: true, extra: [1] },
  { '1': 5 },
];

/** Raw number-like tokens: invalid JSON (NaN, 01) or JSON that parses to surprises (1e999 → ∞). */
const RAW_TOKENS = [
  'NaN',
  'Infinity',
  '-Infinity',
  'undefined',
  '1e999',
  '-1e999',
  '1e-999',
  '-0',
  '01',
  '.5',
  '+1',
  '0x10',
  '1.',
  '123456789012345678901234567890',
  '"\\ud800"',
  '"\\u0000"',
  "'single'",
  '[1,]',
  '{"a":1,}',
  '/* c */ 1',
].map((t) => new Raw(t));

/** ~1 MB strings are example-based in the test (they cost seconds to tokenize); these stay ≤ 100 kB. */
const longString = fc
  .constantFrom(1_000, 10_000, 100_000)
  .chain((n) => fc.constantFrom('x', 'the sea ', '😀', '\u0000').map((unit) => unit.repeat(n / unit.length)));

const anyString = fc.string({ unit: 'binary', maxLength: 40 });

/** A value for any field: wrong types, edge numbers, deep nesting, mixed arrays, long strings. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(...HOSTILE_CONSTANTS) },
  { weight: 2, arbitrary: fc.integer() },
  { weight: 2, arbitrary: fc.double() },
  { weight: 3, arbitrary: anyString },
  { weight: 2, arbitrary: fc.constantFrom(...RAW_TOKENS) },
  {
    weight: 2,
    arbitrary: fc.array(
      fc.oneof(fc.integer({ min: -5, max: 600 }), fc.string({ maxLength: 5 }), fc.boolean()),
      {
        maxLength: 8,
      },
    ),
  },
  // token ids in and out of the vocabulary
  { weight: 2, arbitrary: fc.array(fc.integer({ min: -10, max: VOCAB + 10 }), { maxLength: 30 }) },
  {
    weight: 1,
    arbitrary: fc.array(fc.array(fc.integer({ min: -2, max: VOCAB + 2 }), { maxLength: 4 }), {
      maxLength: 20,
    }),
  },
  // stop lists, also too long and with empty strings
  { weight: 2, arbitrary: fc.array(fc.string({ maxLength: 6 }), { maxLength: 12 }) },
  {
    weight: 1,
    arbitrary: fc
      .record({ depth: fc.constantFrom(10, 100, 1_000, 10_000), kind: fc.constantFrom('array', 'object') })
      .map(({ depth, kind }) => deepJson(depth, kind as 'array' | 'object')),
  },
  { weight: 1, arbitrary: longString },
  {
    weight: 1,
    arbitrary: fc.dictionary(fc.string({ maxLength: 10 }), fc.oneof(fc.integer(), anyString), { maxKeys: 4 }),
  },
);

const unknownField = fc.oneof(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'type', 'id', '', 'Prompt', 'max_tokens '),
  fc.string({ maxLength: 20 }),
);

const fieldName = (known: readonly string[]) =>
  fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...known) }, { weight: 1, arbitrary: unknownField });

export type Mutation = { op: 'delete'; field: string } | { op: 'set'; field: string; value: unknown };

const mutation = (known: readonly string[]): fc.Arbitrary<Mutation> =>
  fc.oneof(
    { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), field: fieldName(known) }) },
    {
      weight: 5,
      arbitrary: fc.record({ op: fc.constant('set' as const), field: fieldName(known), value: hostileValue }),
    },
  );

export function applyMutations(
  base: Record<string, unknown>,
  mutations: readonly Mutation[],
): Map<string, unknown> {
  const body = new Map(Object.entries(base));
  for (const m of mutations) {
    if (m.op === 'delete') body.delete(m.field);
    else body.set(m.field, m.value);
  }
  return body;
}

/** A body: the valid one with 1 to 3 mutations, or (rarely) something that is not an object. */
export const mutatedBody = (base: Record<string, unknown>, known: readonly string[]): fc.Arbitrary<unknown> =>
  fc.oneof(
    {
      weight: 12,
      arbitrary: fc
        .array(mutation(known), { minLength: 1, maxLength: 3 })
        .map((ms) => applyMutations(base, ms)),
    },
    { weight: 1, arbitrary: hostileValue },
  );

export const completionBody = mutatedBody(VALID_COMPLETION, COMPLETION_FIELDS);
export const tokenizeBody = mutatedBody({ model: MODEL, prompt: 'Call me Ishmael.' }, ['model', 'prompt']);
export const detokenizeBody = mutatedBody({ model: MODEL, tokens: [1, 2, 3] }, ['model', 'tokens']);

/** Byte-level damage to a valid JSON text: truncation, stray bytes, invalid UTF-8, junk around it. */
const INVALID_UTF8 = [
  [0xff],
  [0xfe, 0xff],
  [0xc0, 0xaf], // overlong '/'
  [0xed, 0xa0, 0x80], // an encoded surrogate
  [0xf4, 0x90, 0x80, 0x80], // beyond U+10FFFF
  [0xe2, 0x82], // truncated sequence
  [0x80], // lone continuation byte
  [0x00],
];

export type TextDamage =
  | { kind: 'truncate'; at: number }
  | { kind: 'insert'; at: number; bytes: number[] }
  | { kind: 'utf8-in-string'; bytes: number[] }
  | { kind: 'wrap'; before: string; after: string }
  | { kind: 'whole'; text: string };

export const textDamage: fc.Arbitrary<TextDamage> = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({
    kind: fc.constant('insert' as const),
    at: fc.nat(),
    bytes: fc.oneof(
      fc.constantFrom(...INVALID_UTF8),
      fc.array(fc.constantFrom(0x7b, 0x7d, 0x5b, 0x5d, 0x2c, 0x3a, 0x22, 0x5c, 0x20, 0x0a), {
        minLength: 1,
        maxLength: 3,
      }),
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: 6 }),
    ),
  }),
  fc.record({ kind: fc.constant('utf8-in-string' as const), bytes: fc.constantFrom(...INVALID_UTF8) }),
  fc.record({
    kind: fc.constant('wrap' as const),
    before: fc.constantFrom('', '\ufeff', ' \n\t', '[', 'x', '{"a":1}'),
    after: fc.constantFrom('', 'x', ' {}', ',', ']', '}', '\u0000', '\n\n'),
  }),
  fc.record({
    kind: fc.constant('whole' as const),
    text: fc.constantFrom(
      '',
      ' ',
      'null',
      '[]',
      '"prompt"',
      '42',
      'true',
      '{',
      '}',
      '{"prompt":',
      '{"prompt":"a","prompt":5}',
      '{"__proto__":{"prompt":"a"},"prompt":"a"}',
      '{"constructor":{"prototype":{"x":1}},"prompt":"a"}',
      '{"prompt":"a"}{"prompt":"b"}',
      '{"prompt":"a" // comment\n}',
      "{'prompt':'a'}",
      '{prompt:"a"}',
      '{"prompt":"\\x41"}',
      '{"prompt":"\\u12"}',
      '{"prompt":"a\u0001b"}',
    ),
  }),
);

/** Applies `d` to the JSON text of `body`; the string fields' quotes locate "inside a string". */
export function damage(json: string, d: TextDamage): Buffer {
  const bytes = Buffer.from(json, 'utf8');
  switch (d.kind) {
    case 'truncate':
      return bytes.subarray(0, d.at % Math.max(1, bytes.length));
    case 'insert': {
      const at = d.at % (bytes.length + 1);
      return Buffer.concat([bytes.subarray(0, at), Buffer.from(d.bytes), bytes.subarray(at)]);
    }
    case 'utf8-in-string': {
      // Just after the first string's opening quote that follows a colon: inside a value.
      const at = json.indexOf(':"');
      const i = at < 0 ? 1 : Buffer.byteLength(json.slice(0, at + 2));
      return Buffer.concat([bytes.subarray(0, i), Buffer.from(d.bytes), bytes.subarray(i)]);
    }
    case 'wrap':
      return Buffer.concat([Buffer.from(d.before), bytes, Buffer.from(d.after)]);
    case 'whole':
      return Buffer.from(d.text);
  }
}

export const CONTENT_TYPES = [
  'application/json',
  'application/json; charset=utf-8',
  'application/json; charset=latin1',
  'application/json;charset=UTF-8',
  'APPLICATION/JSON',
  'application/jsonx',
  'application/vnd.api+json',
  'text/plain',
  'text/plain; charset=utf-8',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/octet-stream',
  'text/event-stream',
  'json',
  '*/*',
  ';',
  '',
  undefined,
] as const;

/** Content types, mostly JSON (so the body is parsed) and sometimes not (415, or text parsing). */
export const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant('application/json' as string | undefined) },
  { weight: 2, arbitrary: fc.constantFrom<string | undefined>(...CONTENT_TYPES) },
);

export const ADMIN_TOKEN = 'fuzz-admin-token';

/** Model names for POST /admin/swap; none may name a real model (a swap would load it). */
export function swapName(realModels: readonly string[]): fc.Arbitrary<unknown> {
  const root = '/models-root';
  const real = new Set(realModels.map((m) => resolve(root, m)));
  return fc
    .oneof(
      fc.constantFrom(
        '..',
        '../',
        '../../etc/passwd',
        '/',
        '/etc',
        '.',
        './',
        '%2e%2e',
        'a\u0000b',
        'tokenizer.json', // a file under the root: not a model (422)
        'nope',
        '~',
        ' ',
        'x'.repeat(300),
        'con',
      ),
      fc.string({ unit: 'binary', maxLength: 30 }),
      hostileValue,
    )
    .filter((v) => typeof v !== 'string' || !real.has(resolve(root, v)));
}

export const authHeader = fc.oneof(
  fc.constant(`Bearer ${ADMIN_TOKEN}`),
  fc.constantFrom(
    undefined,
    '',
    'Bearer',
    'Bearer ',
    `bearer ${ADMIN_TOKEN}`,
    `Bearer  ${ADMIN_TOKEN}`,
    `Bearer ${ADMIN_TOKEN} `,
    `Basic ${Buffer.from(`admin:${ADMIN_TOKEN}`).toString('base64')}`,
    ADMIN_TOKEN,
    `Bearer ${ADMIN_TOKEN.slice(0, -1)}`,
    `Bearer ${'x'.repeat(4000)}`,
  ),
  fc.string({ unit: 'grapheme-ascii', maxLength: 40 }).map((s) => `Bearer ${s}`),
);

export const METHODS = [
  'GET',
  'POST',
  'PUT',
  'DELETE',
  'PATCH',
  'OPTIONS',
  'HEAD',
  'TRACE',
  'PROPFIND',
  'SEARCH',
  'PURGE',
  'MKCOL',
  'LOCK',
  'COPY',
  'QUERY',
] as const;

export const KNOWN_PATHS = [
  '/',
  '/v1/completions',
  '/v1/models',
  '/v1/stream',
  '/tokenize',
  '/detokenize',
  '/health',
  '/ready',
  '/metrics',
  '/admin/swap',
  '/admin/models',
] as const;

/** Characters node's http client sends unescaped in a path (0x21–0x7e). */
const pathChar = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));

const pathJunk = fc.oneof(
  fc.constantFrom(
    '',
    '/',
    '//',
    '/..',
    '/../..',
    '/%2e%2e',
    '/%FF',
    '/%00',
    '/%',
    '/%zz',
    '/%C0%AF',
    '/%ED%A0%80',
    ';x',
    '?',
    '?a=%FF&b',
    '?prompt=%00&max_tokens=NaN',
    '#frag',
    '/./',
    '\\',
    '/v1',
  ),
  fc.string({ unit: pathChar, maxLength: 30 }).map((s) => `/${s}`),
  fc.constantFrom(1_000, 4_000).map((n) => `/${'a'.repeat(n)}`),
);

/** A path: a known route with junk appended or prepended, or junk alone. */
export const anyPath = fc.oneof(
  fc.tuple(fc.constantFrom(...KNOWN_PATHS), pathJunk).map(([p, j]) => p + j),
  fc.tuple(pathJunk, fc.constantFrom(...KNOWN_PATHS)).map(([j, p]) => (j.startsWith('/') ? j : `/${j}`) + p),
  pathJunk.map((j) => (j.startsWith('/') ? j : `/${j}`)),
  fc.constantFrom(...KNOWN_PATHS),
);

export const smallBody = fc.oneof(
  fc.constant(undefined),
  fc.constant(Buffer.from(toJson(VALID_COMPLETION))),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
  hostileValue.map((v) => Buffer.from(toJson(v))),
);

/** One step of a WebSocket session (actions that end the socket come last; see `wsScript`). */
export type WsAction =
  | { kind: 'create'; id: unknown; body: unknown }
  | { kind: 'cancel'; id: unknown }
  | { kind: 'ping'; id: unknown }
  | { kind: 'text'; text: string }
  | { kind: 'binary'; bytes: Uint8Array }
  | { kind: 'fragments'; parts: string[] }
  | { kind: 'wait'; ms: number };

export type WsEnd =
  | { kind: 'none' }
  | { kind: 'close' }
  | { kind: 'terminate' }
  | { kind: 'invalid-utf8' }
  | { kind: 'oversize' };

/** Ids from a small pool, so duplicates and cancels of ids in flight happen often. */
const wsId = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom<unknown>('a', 'b', 'c', 1, 2) },
  {
    weight: 2,
    arbitrary: fc.constantFrom<unknown>(
      undefined,
      null,
      '',
      0,
      -1,
      1.5,
      Number.NaN,
      1e308,
      'x'.repeat(200),
      'x'.repeat(201),
      [],
      {},
      ['a'],
      true,
    ),
  },
  { weight: 1, arbitrary: hostileValue },
);

const wsBody = fc.oneof(
  { weight: 3, arbitrary: fc.constant(VALID_COMPLETION as unknown) },
  { weight: 4, arbitrary: completionBody },
);

export const wsAction: fc.Arbitrary<WsAction> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ kind: fc.constant('create' as const), id: wsId, body: wsBody }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('cancel' as const), id: wsId }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('ping' as const), id: wsId }) },
  {
    weight: 3,
    arbitrary: fc.record({
      kind: fc.constant('text' as const),
      text: fc.oneof(
        fc.constantFrom(
          '',
          'null',
          '[]',
          '42',
          '"create"',
          '{}',
          '{"type":null}',
          '{"type":"completion.create"}',
          '{"type":"completion.cancel"}',
          '{"type":"completion.delta","id":"a"}',
          '{"type":"pong"}',
          '{"type":"ping","id":[1]}',
          '{"type":"completion.create","id":"z","prompt":NaN}',
          '{"__proto__":{"type":"ping"}}',
        ),
        anyString,
        fc
          .record({
            type: fc.oneof(fc.constantFrom('completion.create', 'completion.cancel', 'ping'), hostileValue),
            id: hostileValue,
          })
          .map((m) => toJson(new Map(Object.entries(m)))),
        fc
          .record({ field: fc.constantFrom('type', 'id'), depth: fc.constantFrom(1_000, 10_000, 100_000) })
          .map(({ field, depth }) =>
            toJson(
              new Map<string, unknown>([
                ['type', field === 'type' ? deepJson(depth, 'array') : 'completion.cancel'],
                ['id', field === 'id' ? deepJson(depth, 'array') : 'a'],
              ]),
            ),
          ),
      ),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ kind: fc.constant('binary' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('fragments' as const),
      parts: fc.oneof(
        fc.array(anyString, { minLength: 2, maxLength: 4 }),
        fc.integer({ min: 1, max: 20 }).map((k) => {
          // a valid create split in pieces: one message once reassembled
          const text = toJson({ type: 'completion.create', id: 'frag', ...VALID_COMPLETION });
          const step = Math.ceil(text.length / (k + 1));
          return Array.from({ length: Math.ceil(text.length / step) }, (_, i) =>
            text.slice(i * step, (i + 1) * step),
          );
        }),
      ),
    }),
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('wait' as const), ms: fc.constantFrom(0, 5, 20) }) },
);

export const wsEnd: fc.Arbitrary<WsEnd> = fc.oneof(
  { weight: 6, arbitrary: fc.constant({ kind: 'none' as const }) },
  { weight: 1, arbitrary: fc.constantFrom<WsEnd>({ kind: 'close' }, { kind: 'terminate' }) },
  { weight: 1, arbitrary: fc.constantFrom<WsEnd>({ kind: 'invalid-utf8' }, { kind: 'oversize' }) },
);

export const wsScript = fc.record({
  actions: fc.array(wsAction, { minLength: 1, maxLength: 12 }),
  end: wsEnd,
});

/** A raw WebSocket frame, well-formed or not (client frames must be masked; opcodes 3–7, 11–15 are reserved). */
export interface RawFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
}

const framePayload = fc.oneof(
  fc.uint8Array({ maxLength: 40 }),
  fc.constantFrom(
    Buffer.from('{"type":"ping"}'),
    Buffer.from(toJson({ type: 'completion.create', id: 'r', ...VALID_COMPLETION })),
    Buffer.from([0xff, 0xfe]),
    Buffer.from([0x03, 0xe8]), // close 1000
    Buffer.from([0x03, 0xe7]), // close 999 (invalid)
    Buffer.from([0x03, 0xed]), // close 1005 (may not be sent)
    Buffer.from([0x03]), // a 1-byte close payload
    Buffer.alloc(126, 0x61), // too long for a control frame
  ),
);

export const rawFrame: fc.Arbitrary<RawFrame> = fc.oneof(
  // well-formed frames with odd opcodes or fragmentation
  fc.record({
    fin: fc.boolean(),
    rsv: fc.constant(0),
    opcode: fc.constantFrom(0, 1, 2, 8, 9, 10),
    masked: fc.constant(true),
    payload: framePayload,
  }),
  // protocol violations
  fc.record({
    fin: fc.boolean(),
    rsv: fc.integer({ min: 0, max: 7 }),
    opcode: fc.integer({ min: 0, max: 15 }),
    masked: fc.boolean(),
    payload: framePayload,
  }),
);
