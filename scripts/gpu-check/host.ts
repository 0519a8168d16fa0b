import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { ortVersion } from '../../src/runtime/ort.ts';

/** The machine: GPUs as nvidia-smi reports them (when present), CPU, memory, versions. */
export function hostInfo() {
  const smi = spawnSync(
    'nvidia-smi',
    ['--query-gpu=name,driver_version,memory.total,compute_cap', '--format=csv,noheader'],
    { encoding: 'utf8', timeout: 20_000 },
  );
  const gpus =
    smi.status === 0
      ? smi.stdout
          .trim()
          .split('\n')
          .filter(Boolean)
          .map((l) => {
            const [name, driver, memory, cc] = l.split(',').map((x) => x.trim());
            return { name, driver, memory, compute_capability: cc };
          })
      : null;
  return {
    gpus,
    nvidia_smi: gpus ? 'ok' : smi.error ? 'not found' : `exit ${smi.status}`,
    cpu: `${cpus()[0]?.model ?? 'unknown'} × ${cpus().length}`,
    memory_gib: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    onnxruntime_node: ortVersion(),
    ld_library_path: process.env.LD_LIBRARY_PATH ?? '',
  };
}

/** CUDA and provider libraries this process has loaded (from /proc/self/maps). */
export function loadedCudaLibraries(): string[] {
  let maps = '';
  try {
    maps = readFileSync('/proc/self/maps', 'utf8');
  } catch {
    return [];
  }
  const paths = maps
    .split('\n')
    .map((l) => l.split(/\s+/)[5])
    .filter(
      (p): p is string => !!p && /cublas|cudart|cudnn|curand|cufft|nvrtc|providers_|libcuda\.so/.test(p),
    );
  return [...new Set(paths)].sort();
}
