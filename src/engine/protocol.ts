import type { SamplingParams } from './sampling/params.ts';
import type { TokenLogprob } from './sampling/sampler.ts';

/**
 * Messages between the engine (main thread) and its model worker. They carry token ids and a
 * few numbers, never tensors: logits stay in the worker, text stays on the main thread.
 */

export interface WorkerConfig {
  exportDir: string;
  device: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  /** Sequences decoded together (KV-cache slots). */
  maxSequences: number;
  /** Requests waiting for a slot before new ones are refused. */
  maxQueue: number;
  /** Prompt tokens prefilled per scheduler step (chunked prefill keeps decode latency low). */
  prefillChunk: number;
  eosTokenId: number | null;
}

export type ToWorker =
  | { type: 'add'; id: number; prompt: number[]; params: SamplingParams }
  | { type: 'cancel'; id: number }
  | { type: 'shutdown' };

export type FinishReason = 'stop' | 'length';

export interface GeneratedToken extends TokenLogprob {
  rank?: number;
  top?: TokenLogprob[];
}

export interface SequenceUpdate {
  id: number;
  tokens: GeneratedToken[];
  /** Set on the update that ends the sequence (`stop`: end-of-text; `length`: max_tokens or context). */
  finish?: FinishReason;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvUsage: number;
  kvBytes: number;
  kvBytesPerToken: number;
}

export type FromWorker =
  | { type: 'ready'; device: 'cpu' | 'cuda'; fallbackReason?: string; vocabSize: number; maxSeqLen: number }
  | { type: 'admitted'; id: number; queueMs: number }
  | { type: 'step'; updates: SequenceUpdate[]; stats: EngineStats }
  | { type: 'rejected'; id: number; code: string; message: string }
  | { type: 'fatal'; message: string };
