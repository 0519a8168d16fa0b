import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Shapes } from './models.ts';

/**
 * PyTorch eager on the same machine, from the anchor folder (`../shared/oracle`, or the bundle's
 * `anchor/`): `torch_decode_bench.py` and `torch_train_bench.py` with the shapes gpu-check uses.
 */

export interface TorchInfo {
  python: string;
  torch?: string;
  cuda?: boolean;
  device?: string | null;
  error?: string;
}

export function torchInfo(python: string): TorchInfo {
  const r = spawnSync(
    python,
    [
      '-c',
      'import json, torch; c = torch.cuda.is_available(); print(json.dumps({"torch": torch.__version__, "cuda": c, "device": torch.cuda.get_device_name(0) if c else None}))',
    ],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (r.error) return { python, error: `${python} not found` };
  if (r.status !== 0)
    return { python, error: (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`).slice(0, 200) };
  return { python, ...(JSON.parse(r.stdout.trim().split('\n').pop()!) as Omit<TorchInfo, 'python'>) };
}

function modelArgs(s: Shapes): string[] {
  const m = s.model;
  return [
    '--layers',
    m.layers,
    '--hidden',
    m.hidden,
    '--heads',
    m.heads,
    '--qkv',
    m.qkv,
    '--proj',
    m.proj,
    '--ffn',
    m.ffn,
    '--vocab',
    m.vocab,
  ].map(String);
}

function runJson(
  python: string,
  script: string,
  args: string[],
  timeoutS: number,
  extraEnv: NodeJS.ProcessEnv = {},
): Record<string, unknown> {
  const r = spawnSync(python, [script, ...args], {
    encoding: 'utf8',
    timeout: timeoutS * 1000,
    env: { ...process.env, ...extraEnv },
    maxBuffer: 16 * 2 ** 20,
  });
  if (r.error || r.signal)
    throw new Error(`${script.split('/').pop()} stopped after ${timeoutS} s (time budget)`);
  if (r.status !== 0)
    throw new Error(`${script.split('/').pop()} failed: ${r.stderr.trim().split('\n').pop()?.slice(0, 300)}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

export function anchorScripts(anchor: string) {
  const decode = join(anchor, 'torch_decode_bench.py');
  const train = join(anchor, 'torch_train_bench.py');
  if (!existsSync(decode) || !existsSync(train))
    throw new Error(`${anchor} has no torch_decode_bench.py / torch_train_bench.py`);
  return { decode, train };
}

/** Decode at batch 1 and each larger batch (prompt + new tokens as ours), fp16 on cuda. */
export function torchDecode(
  python: string,
  anchor: string,
  s: Shapes,
  device: 'cpu' | 'cuda',
  batch: number,
  timeoutS: number,
) {
  const dtype = device === 'cuda' ? 'float16' : 'float32';
  return runJson(
    python,
    anchorScripts(anchor).decode,
    [
      ...modelArgs(s),
      '--batch',
      String(batch),
      '--prompt',
      String(s.decodePrompt),
      '--new',
      String(s.decodeNew),
      '--device',
      device,
      '--dtype',
      dtype,
    ],
    timeoutS,
  );
}

/** Prefill of the long prompt at batch 1 (its `batch1.prefill_tok_s`). */
export function torchPrefill(
  python: string,
  anchor: string,
  s: Shapes,
  device: 'cpu' | 'cuda',
  timeoutS: number,
) {
  const dtype = device === 'cuda' ? 'float16' : 'float32';
  return runJson(
    python,
    anchorScripts(anchor).decode,
    [
      ...modelArgs(s),
      '--batch',
      '1',
      '--prompt',
      String(s.prefillTokens),
      '--new',
      '2',
      '--device',
      device,
      '--dtype',
      dtype,
    ],
    timeoutS,
  );
}

export function torchTrain(
  python: string,
  anchor: string,
  s: Shapes,
  device: 'cpu' | 'cuda',
  timeoutS: number,
) {
  return runJson(
    python,
    anchorScripts(anchor).train,
    [
      ...modelArgs(s),
      '--batch',
      String(s.train.batch),
      '--seq',
      String(s.train.seq),
      '--steps',
      String(s.train.steps + 2),
      '--device',
      device,
    ],
    timeoutS,
  );
}
