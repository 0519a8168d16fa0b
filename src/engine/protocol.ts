import type { RngState } from '../util/rng.ts';
import type { KvSnapshot } from './kv-cache.ts';
import type { SamplingParams } from './sampling/params.ts';
import type { TokenLogprob } from './sampling/sampler.ts';

/**
 * Messages between the engine (main thread) and its model worker. They carry token ids and a
 * few numbers: logits stay in the worker, text stays on the main thread. The one tensor that
 * travels is a sequence's KV cache in a lossless hot swap (transferred, not copied).
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
  /** A draft model for speculative decoding (src/engine/speculative.ts), loaded in the same worker. */
  draft?: DraftConfig;
}

export interface DraftConfig {
  exportDir: string;
  /** Most tokens drafted per step (k adapts in 1..maxDraft). */
  maxDraft?: number;
  /** Larger decode batches run without the draft. */
  maxBatch?: number;
}

/**
 * A stream moving in from another model (hot swap, drain timeout, crash): already admitted work,
 * so the queue bound does not refuse it; with `kv`, its cache moves as is (no prefill).
 */
export interface MovedSequence {
  kv?: KvSnapshot;
  /** How many of the prompt's last tokens were generated (on the model before): they count as output for the penalties. */
  generated?: number;
  /** The random stream where it stopped on the model before, so sampling goes on with it. */
  rng?: RngState;
}

/** What a sequence detached from its model hands on (see Scheduler.detach). */
export interface Detached {
  /** Its KV cache, when asked for and it was decoding; else null. */
  kv: KvSnapshot | null;
  /** Its random stream's state, when it was still running. */
  rng?: RngState;
}

export type ToWorker =
  /** `moved`: the stream of another model moving here (see Scheduler.add). */
  | { type: 'add'; id: number; prompt: number[]; params: SamplingParams; moved?: MovedSequence }
  | { type: 'cancel'; id: number }
  /** Prompt scoring: logprobs of every prompt token after the first, `top` alternatives each. */
  | { type: 'score'; id: number; prompt: number[]; top: number }
  /** Ends a sequence at the next token boundary, handing over its KV cache when `withKv`. */
  | { type: 'detach'; id: number; withKv: boolean }
  | { type: 'shutdown' }
  /** Fault injection (Engine.kill): the worker dies of an uncaught error at its next step boundary. */
  | { type: 'crash' };

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
  /** Set when this sequence failed on its own (its sampling threw); the others go on. */
  error?: string;
}

export interface EngineStats {
  running: number;
  waiting: number;
  kvUsage: number;
  kvBytes: number;
  kvBytesPerToken: number;
  /** Speculative decoding so far: tokens the draft proposed, and those the target accepted. */
  specDrafted: number;
  specAccepted: number;
}

export type FromWorker =
  | {
      type: 'ready';
      device: 'cpu' | 'cuda';
      fallbackReason?: string;
      vocabSize: number;
      maxSeqLen: number;
      /** Whether the draft model loaded and is used, or why not. */
      draft?: { used: true } | { used: false; reason: string };
    }
  /** The request was taken into the queue (not refused): servers may answer with headers now. */
  | { type: 'queued'; id: number }
  | { type: 'admitted'; id: number; queueMs: number }
  | { type: 'step'; updates: SequenceUpdate[]; stats: EngineStats }
  | { type: 'rejected'; id: number; code: string; message: string }
  | { type: 'detached'; id: number; detached: Detached }
  | { type: 'scored'; id: number; tokens: GeneratedToken[] }
  | { type: 'score-failed'; id: number; code: string; message: string }
  | { type: 'fatal'; message: string };
