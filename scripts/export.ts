import { join } from 'node:path';
import { exportCheckpoint } from '../src/export/export.ts';
import { parseQuantization } from '../src/export/quantize.ts';
import { CONFIG_FILE, readCheckpointMeta } from '../src/model/checkpoint.ts';
import { checkTokenizerFits } from '../src/tokenizer/fit.ts';
import { Tokenizer } from '../src/tokenizer/tokenizer.ts';
import {
  type FlagSpec,
  helpText,
  parseCommandLine,
  progress,
  requireFlag,
  runMain,
} from '../src/util/cli.ts';

const USAGE =
  'npm run export -- --checkpoint DIR --out DIR [--dtype float32|float16] [--external-data auto|always|never] ' +
  '[--quantize int8|int4 [--block-size 32] [--accuracy-level 4]]';

const INTRO = `Exports a checkpoint to ONNX for serving: model.onnx (input_ids → logits, no cache), decoder.onnx
(the KV-cache decoder the server runs), manifest.json (config, checksums and sizes of every file,
source checkpoint) and tokenizer.json. --out may be a new or empty folder or an earlier export;
anything else is refused. The checkpoint's weights and tokenizer are checked against the
checksums its config.json records, and the tokenizer must fit the embedding.`;

const FLAGS = {
  checkpoint: { kind: 'string', arg: 'DIR', help: 'the checkpoint directory to export' },
  out: { kind: 'string', arg: 'DIR', help: 'the export directory (replaced atomically)' },
  'external-data': {
    kind: 'string',
    choices: ['auto', 'always', 'never'],
    help: 'weights in a separate .onnx.data file: past 1.5 GiB (auto), always, or never',
    default: 'auto',
  },
  dtype: {
    kind: 'string',
    choices: ['float32', 'float16'],
    help: 'weights, activations and KV cache of the serving graphs (logits stay float32); float16 for GPUs',
    default: 'float32',
  },
  quantize: {
    kind: 'string',
    choices: ['int8', 'int4'],
    help: "weight-only quantization of decoder.onnx's Pattention keys/values and unembedding (MatMulNBits)",
  },
  'block-size': {
    kind: 'int',
    min: 16,
    arg: 'N',
    help: 'weights per quantization block (a power of two)',
    default: '32',
  },
  'accuracy-level': {
    kind: 'int',
    min: 0,
    max: 4,
    arg: 'N',
    help: 'MatMulNBits accuracy_level: 4 = int8 activations (fastest here), 1 = float32 math',
    default: '4',
  },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const checkpoint = requireFlag(USAGE, flags, 'checkpoint');
  const out = requireFlag(USAGE, flags, 'out');
  const quantize = parseQuantization(flags.quantize, flags['block-size'], flags['accuracy-level']);
  const meta = readCheckpointMeta(checkpoint);
  if (meta.tokenizer) {
    // Refused here rather than served: a server would blame its clients for ids past the embedding.
    const tokPath = join(checkpoint, meta.tokenizer.file);
    const tok = Tokenizer.fromFile(tokPath);
    checkTokenizerFits(tokPath, tok.vocabSize, join(checkpoint, CONFIG_FILE), meta.model.vocab_size);
  }
  const manifest = await exportCheckpoint(checkpoint, out, {
    externalData: flags['external-data'] ?? 'auto',
    ...(quantize ? { quantize } : {}),
    dtype: flags.dtype ?? 'float32',
    onProgress: progress('export'),
  });
  const files = manifest.graphs.map((g) => g.file + (g.external_data ? ` (+ ${g.external_data})` : ''));
  console.log(
    `exported ${(manifest.parameters / 1e6).toFixed(2)}M parameters (${flags.dtype ?? 'float32'}) → ${out}: ${files.join(', ')}, manifest.json`,
  );
});
