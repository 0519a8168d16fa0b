import * as ort from 'onnxruntime-node';
import { fail } from '../util/errors.ts';
import { cudaProblem, shortNativeError } from './cuda.ts';

/**
 * The only module that imports onnxruntime-node. It creates sessions (CUDA with a logged CPU
 * fallback, since ['cuda','cpu'] throws instead of falling back) and runs them with typed,
 * named feeds; a missing or misnamed input is reported with the graph's expected names.
 */

export type Device = 'auto' | 'cpu' | 'cuda';

// onnxruntime's own log lines (a failed provider load prints several, in colour) would reach the
// terminal beside our one-line reason; its errors still arrive as exceptions. Set before the
// first session: the level is read once. TOKENFORMER_ORT_LOG_LEVEL=warning shows them again.
ort.env.logLevel = (process.env.TOKENFORMER_ORT_LOG_LEVEL ?? 'fatal') as typeof ort.env.logLevel;

export interface SessionOptions {
  device?: Device;
  intraOpThreads?: number;
  interOpThreads?: number;
  /** Called with the reason when `auto` falls back to CPU. */
  onFallback?: (reason: string) => void;
  /** onnxruntime's graph optimizations (default `all`). */
  graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /** Writes the graph as onnxruntime optimized it (to see which fusions it made). */
  optimizedModelPath?: string;
  /** Records onnxruntime's per-node profile; `endProfiling()` writes `<prefix>_<time>.json`. */
  profilePrefix?: string;
  /** Where outputs stay: 'gpu-buffer' asks onnxruntime to keep them on the device. */
  preferredOutputLocation?: 'cpu' | 'gpu-buffer';
}

/** float16 data travels as its bits in a Uint16Array. */
export type Feed = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;

/** [data, dims] or [data, dims, 'float16'] (a Uint16Array is uint16 unless marked). */
export type FeedEntry =
  | readonly [Feed, readonly number[]]
  | readonly [Uint16Array, readonly number[], 'float16'];

export interface TensorOut {
  readonly data: Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;
  readonly dims: readonly number[];
  readonly type: string;
  /** 'cpu', or 'gpu-buffer' when the output stayed on the device. */
  readonly location: string;
}

export class OrtSession {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly device: 'cpu' | 'cuda',
  ) {}

  get inputNames(): readonly string[] {
    return this.session.inputNames;
  }

  static async create(model: string | Uint8Array, opts: SessionOptions = {}): Promise<OrtSession> {
    const device = opts.device ?? 'auto';
    const base: ort.InferenceSession.SessionOptions = {
      graphOptimizationLevel: opts.graphOptimization ?? 'all',
      ...(opts.optimizedModelPath ? { optimizedModelFilePath: opts.optimizedModelPath } : {}),
      ...(opts.profilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profilePrefix } : {}),
      ...(opts.preferredOutputLocation ? { preferredOutputLocation: opts.preferredOutputLocation } : {}),
      ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
      ...(opts.interOpThreads ? { interOpNumThreads: opts.interOpThreads } : {}),
    };
    const open = (providers: string[]) => {
      const o = { ...base, executionProviders: providers };
      return typeof model === 'string'
        ? ort.InferenceSession.create(model, o)
        : ort.InferenceSession.create(model, o);
    };
    if (device !== 'cpu') {
      // Missing pieces are named from our own checks; only a complete install reaches onnxruntime.
      const problem = cudaProblem();
      if (problem) {
        if (device === 'cuda') fail('TF_ERR_RUNTIME', `--device cuda: ${problem}`);
        opts.onFallback?.(problem);
      } else {
        try {
          return new OrtSession(await open(['cuda']), 'cuda');
        } catch (err) {
          const reason = `no usable CUDA device: ${shortNativeError(err instanceof Error ? err.message : String(err))}`;
          if (device === 'cuda') fail('TF_ERR_RUNTIME', `--device cuda: ${reason}`, err);
          opts.onFallback?.(reason);
        }
      }
    }
    try {
      return new OrtSession(await open(['cpu']), 'cpu');
    } catch (err) {
      const where = typeof model === 'string' ? model : 'in-memory model';
      fail('TF_ERR_RUNTIME', `onnxruntime could not load ${where}: ${(err as Error).message}`, err);
    }
  }

  /** Runs the graph; `feeds` maps input names to [data, dims]. Inputs are passed without copying. */
  async run(
    feeds: Record<string, FeedEntry>,
    outputs?: readonly string[],
  ): Promise<Record<string, TensorOut>> {
    const missing = this.session.inputNames.filter((n) => !(n in feeds));
    const unknown = Object.keys(feeds).filter((n) => !this.session.inputNames.includes(n));
    if (missing.length || unknown.length) {
      fail(
        'TF_ERR_RUNTIME',
        `graph inputs are [${this.session.inputNames.join(', ')}]` +
          (missing.length ? `; missing: ${missing.join(', ')}` : '') +
          (unknown.length ? `; unknown: ${unknown.join(', ')}` : ''),
      );
    }
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const [name, [data, dims, type]] of Object.entries(feeds)) {
      ortFeeds[name] = type ? new ort.Tensor(type, data, dims) : new ort.Tensor(data, dims);
    }
    const result = outputs
      ? await this.session.run(ortFeeds, [...outputs])
      : await this.session.run(ortFeeds);
    const out: Record<string, TensorOut> = {};
    for (const [name, t] of Object.entries(result)) {
      out[name] =
        t.location === 'cpu'
          ? { data: t.data as TensorOut['data'], dims: t.dims, type: t.type, location: t.location }
          : { data: new Float32Array(0), dims: t.dims, type: t.type, location: t.location };
    }
    return out;
  }

  /** Ends profiling and returns the profile file's path (sessions made with profilePrefix). */
  endProfiling(): string {
    return (this.session as unknown as { endProfiling(): string }).endProfiling() ?? '';
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

export function ortVersion(): string {
  return ort.env.versions.node ?? 'unknown';
}

export interface DeviceOutputProbe {
  /** Where the first run's output stayed ('gpu-buffer' = on the device). */
  location: string | null;
  /** Whether that output could be fed back as the next run's input (a device-resident cache). */
  refed: boolean;
  error?: string;
}

/**
 * Whether outputs can stay on the device between runs: `model` maps input `x` to output `y` of
 * the same float32 shape [n]; a session asks for 'gpu-buffer' outputs, runs once, and feeds `y`
 * back as `x`. The binding's 'gpu-buffer' location is documented for WebGPU; this finds out what
 * it does on the device given.
 */
export async function probeDeviceOutputs(
  model: Uint8Array,
  device: 'cpu' | 'cuda',
): Promise<DeviceOutputProbe> {
  let session: ort.InferenceSession | undefined;
  const result: DeviceOutputProbe = { location: null, refed: false };
  try {
    session = await ort.InferenceSession.create(model, {
      executionProviders: [device],
      preferredOutputLocation: 'gpu-buffer',
    });
    const x = new ort.Tensor('float32', Float32Array.from([1, 2, 3, 4]), [4]);
    const first = (await session.run({ x })).y!;
    result.location = first.location;
    const second = (await session.run({ x: first })).y!;
    result.refed = true;
    first.dispose();
    second.dispose();
  } catch (err) {
    result.error = shortNativeError(err instanceof Error ? err.message : String(err));
  } finally {
    await session?.release();
  }
  return result;
}
