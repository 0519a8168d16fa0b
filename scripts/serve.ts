import { existsSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { findModelDir } from '../src/engine/model-dir.ts';
import { cudaProblem } from '../src/runtime/cuda.ts';
import { parseApiKeys, parseCorsOrigins } from '../src/server/auth.ts';
import { ChatTemplate } from '../src/server/chat-template.ts';
import { SERVE_DEFAULTS as D } from '../src/server/defaults.ts';
import { handleProcessSignals, ModelServer } from '../src/server/lifecycle.ts';
import { type FlagSpec, helpText, parseCommandLine, runMain } from '../src/util/cli.ts';
import { fail } from '../src/util/errors.ts';

const USAGE =
  'npm run serve -- --model DIR [--port N] [--host H] [--device auto|cpu|cuda] [--models-dir DIR] ' +
  '[--threads N] [--max-sequences N] [--max-queue N] [--prefill-chunk N] [--timeout-ms N] ' +
  '[--drain-timeout-ms N] [--memory-budget-mb N] [--draft-model NAME|auto|none] [--draft-max-batch N] [--watch MS] [--log-level LEVEL] [--api-key-file PATH] [--cors-origin ORIGIN[,ORIGIN]] ' +
  '[--served-model-name NAME[,ALIAS…]] [--chat-template FILE]';

const INTRO = `OpenAI-compatible completions and chat server for a TokenFormer model (exported on first
use). API keys: TOKENFORMER_API_KEY (comma-separated) and/or --api-key-file; admin routes need
TOKENFORMER_ADMIN_TOKEN.`;

const FLAGS = {
  model: {
    kind: 'string',
    arg: 'DIR',
    help: 'model directory or name under --models-dir (required)',
    env: 'MODEL',
  },
  port: { kind: 'int', min: 0, help: 'TCP port (0: any free one)', default: String(D.port), env: 'PORT' },
  host: { kind: 'string', arg: 'H', help: 'address to listen on', default: D.host, env: 'HOST' },
  device: {
    kind: 'string',
    choices: ['auto', 'cpu', 'cuda'],
    help: 'where the model runs',
    default: D.device,
    env: 'DEVICE',
  },
  'models-dir': { kind: 'string', arg: 'DIR', help: 'root of the served models', default: D.modelsDir },
  threads: {
    kind: 'int',
    min: 0,
    help: "onnxruntime intra-op threads (0: onnxruntime's choice)",
    default: '0',
  },
  'max-sequences': {
    kind: 'int',
    min: 1,
    help: 'sequences decoded together',
    default: String(D.maxSequences),
  },
  'max-queue': {
    kind: 'int',
    min: 0,
    help: 'requests waiting beyond those; more get 429',
    default: String(D.maxQueue),
  },
  'prefill-chunk': {
    kind: 'int',
    min: 1,
    help: 'prompt tokens prefilled per step',
    default: String(D.prefillChunk),
  },
  'timeout-ms': { kind: 'int', min: 0, help: 'per-request time limit (0: none)', default: '0' },
  'drain-timeout-ms': {
    kind: 'int',
    min: 0,
    help: 'how long a shutdown or swap waits for requests',
    default: String(D.drainTimeoutMs),
  },
  'memory-budget-mb': {
    kind: 'int',
    min: 0,
    help: 'memory the models and KV caches may use (0: 80 % of what the process may use)',
    default: '0',
    env: 'TOKENFORMER_MEMORY_BUDGET_MB',
  },
  'draft-model': {
    kind: 'string',
    arg: 'NAME|auto|none',
    help: "speculative decoding's draft model; auto: the served model's parent under the models root",
    default: 'auto',
    env: 'TOKENFORMER_DRAFT_MODEL',
  },
  'draft-max-batch': {
    kind: 'int',
    min: 0,
    help: 'most sequences drafted at once (0: no limit)',
    default: '0',
  },
  watch: {
    kind: 'int',
    min: 0,
    arg: 'MS',
    help: 'poll the model directory for a new version every MS (0: off)',
    default: '0',
  },
  'log-level': { kind: 'string', arg: 'LEVEL', help: 'pino log level', default: 'info', env: 'LOG_LEVEL' },
  'api-key-file': {
    kind: 'string',
    arg: 'PATH',
    help: 'API keys, one per line (adds to TOKENFORMER_API_KEY)',
  },
  'cors-origin': {
    kind: 'string',
    arg: 'ORIGIN[,ORIGIN]',
    help: 'browser origins allowed (env TOKENFORMER_CORS_ORIGINS)',
  },
  'served-model-name': {
    kind: 'string',
    arg: 'NAME[,ALIAS…]',
    help: 'names clients send as `model`',
    default: "the model directory's name",
    env: 'SERVED_MODEL_NAME',
  },
  'chat-template': { kind: 'string', arg: 'FILE', help: 'Jinja chat template for /v1/chat/completions' },
} as const satisfies Record<string, FlagSpec>;

runMain(async () => {
  const flags = parseCommandLine(USAGE, FLAGS);
  if (flags.help) return void console.log(helpText(USAGE, INTRO, FLAGS));
  const env = process.env;
  const model = flags.model;
  if (!model) fail('TF_ERR_BAD_ARGS', `--model is required (or set MODEL)\nusage: ${USAGE}`);
  const device = flags.device ?? D.device;
  // Before listening or exporting anything: a missing CUDA piece is one line, at once.
  const cuda = device === 'cuda' ? cudaProblem() : undefined;
  if (cuda) fail('TF_ERR_RUNTIME', `--device cuda: ${cuda}`);
  const threads = flags.threads ?? 0;
  const drainTimeoutMs = flags['drain-timeout-ms'] ?? D.drainTimeoutMs;
  // 0 (default): 80 % of the memory the process may use (cgroup limit, else the machine's).
  const memoryBudgetMb = flags['memory-budget-mb'] ?? 0;
  // Speculative decoding: `auto` drafts with the served model's parent when it is under the models root.
  const draftModel = flags['draft-model'] ?? 'auto';
  if (draftModel.trim() === '')
    fail('TF_ERR_BAD_ARGS', `--draft-model must be auto, none or a model name\nusage: ${USAGE}`);
  const draftMaxBatch = flags['draft-max-batch'] ?? 0;
  const modelsDir = flags['models-dir'] ?? D.modelsDir;
  const modelDir = findModelDir(model, modelsDir);
  // API keys: TOKENFORMER_API_KEY (comma-separated) and/or --api-key-file (one per line); both add up.
  const keyFile = flags['api-key-file'];
  if (keyFile !== undefined && !existsSync(keyFile))
    fail('TF_ERR_NOT_FOUND', `--api-key-file: ${keyFile} does not exist`);
  const apiKeys = [
    ...parseApiKeys(env.TOKENFORMER_API_KEY ?? '', 'TOKENFORMER_API_KEY'),
    ...(keyFile === undefined ? [] : parseApiKeys(readFileSync(keyFile, 'utf8'), keyFile)),
  ];
  if (keyFile !== undefined && apiKeys.length === 0)
    fail('TF_ERR_BAD_ARGS', `--api-key-file: ${keyFile} holds no key`);
  const corsFlag = flags['cors-origin'] ?? env.TOKENFORMER_CORS_ORIGINS ?? '';
  const corsOrigins = parseCorsOrigins(
    corsFlag,
    flags['cors-origin'] ? '--cors-origin' : 'TOKENFORMER_CORS_ORIGINS',
  );
  // The names clients send as `model`, whichever version serves: default the model directory's name.
  const servedNames = (flags['served-model-name'] ?? basename(resolve(modelDir)))
    .split(',')
    .map((n) => n.trim());
  if (servedNames.some((n) => n === ''))
    fail('TF_ERR_BAD_ARGS', `--served-model-name must be NAME[,ALIAS…] without empty names\nusage: ${USAGE}`);
  // Checked before listening: a template that does not parse is a startup error, not a 500 later.
  const chatTemplate = flags['chat-template'] ? ChatTemplate.fromFile(flags['chat-template']) : undefined;
  const server = new ModelServer({
    modelDir,
    host: flags.host ?? D.host,
    port: flags.port ?? D.port,
    drainTimeoutMs,
    app: {
      servedNames,
      limits: { requestTimeoutMs: flags['timeout-ms'] ?? 0 },
      logger: { level: flags['log-level'] ?? 'info' },
      ...(env.TOKENFORMER_ADMIN_TOKEN ? { adminToken: env.TOKENFORMER_ADMIN_TOKEN } : {}),
      ...(apiKeys.length > 0 ? { apiKeys } : {}),
      ...(corsOrigins.length > 0 ? { corsOrigins } : {}),
      ...(chatTemplate ? { chatTemplate } : {}),
    },
    registry: {
      modelsRoot: modelsDir,
      cacheDir: '.cache',
      draft: { model: draftModel, ...(draftMaxBatch > 0 ? { maxBatch: draftMaxBatch } : {}) },
      engine: {
        device,
        ...(threads > 0 ? { threads } : {}),
        maxSequences: flags['max-sequences'] ?? D.maxSequences,
        maxQueue: flags['max-queue'] ?? D.maxQueue,
        prefillChunk: flags['prefill-chunk'] ?? D.prefillChunk,
      },
      drainTimeoutMs,
      ...(memoryBudgetMb > 0 ? { memoryBudgetBytes: memoryBudgetMb * 1024 * 1024 } : {}),
    },
  });
  handleProcessSignals(server, flags.watch ?? 0);
  await server.start();
});
