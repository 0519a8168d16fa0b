import { join } from 'node:path';
import {
  DECODER_INPUT_IDS,
  DECODER_LOGIT_POSITIONS,
  DECODER_LOGITS,
  DECODER_PAST_LENGTHS,
  DECODER_POSITIONS,
  pastKeyName,
  pastValueName,
  presentKeyName,
  presentValueName,
} from '../export/decoder.ts';
import { type Manifest, manifestDType, readManifest } from '../export/export.ts';
import { headDim, type TokenFormerConfig } from '../model/config.ts';
import { type Device, type FeedEntry, OrtSession } from '../runtime/ort.ts';
import { fail, TokenFormerError } from '../util/errors.ts';
import { type KvArray, KvCache, type KvCacheStats, type KvSnapshot } from './kv-cache.ts';
import { SequenceSlots } from './kv-slots.ts';

/**
 * Runs the KV-cache decoder (`decoder.onnx`) of one export directory over many sequences.
 * Inputs and outputs are plain token-id arrays and Float32Array logits, and there is no
 * module state, so the runner can live in a worker thread (`run()` blocks its thread).
 *
 * Calls are serialized: `prefill` and `decode` queue behind each other (one ORT session runs
 * one call at a time anyway), so the cache never changes under a run. `release` takes effect at
 * once for callers (the id is gone), and frees the slot when the current run ends.
 */

export interface RunnerOptions {
  device?: Device;
  /** onnxruntime intra-op threads (default: onnxruntime's choice). */
  threads?: number;
  /** Sequences held at once: the KV-cache slots and the largest decode batch. */
  maxSequences: number;
  /** Starting KV-cache capacity in positions (it doubles on demand up to max_seq_len). */
  initialCapacity?: number;
  /** Called with the reason when `auto` falls back to CPU. */
  onFallback?: (reason: string) => void;
}

export class ModelRunner {
  readonly config: TokenFormerConfig;
  /**
   * The decoder takes `logit_positions` (exports since the verification variant): `extend` can
   * return logits for every fed position and feed rows of different lengths in one run.
   */
  readonly canVerify: boolean;
  private readonly cache: KvCache;
  private readonly slots: SequenceSlots;
  private readonly released = new Set<number>(); // released during a run, freed after it
  private nextId = 1;
  private busy = false;
  private closed = false;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(
    readonly manifest: Manifest,
    private readonly session: OrtSession,
    maxSequences: number,
    initialCapacity: number | undefined,
  ) {
    this.config = manifest.model;
    this.canVerify = session.inputNames.includes(DECODER_LOGIT_POSITIONS);
    this.cache = new KvCache({
      dtype: manifestDType(manifest),
      layers: this.config.num_layers,
      heads: this.config.num_heads,
      headDim: headDim(this.config),
      slots: maxSequences,
      maxLength: this.config.max_seq_len,
      ...(initialCapacity === undefined ? {} : { initialCapacity }),
    });
    this.slots = new SequenceSlots(this.cache);
  }

  /** Loads `exportDir/manifest.json` and its decoder graph. */
  static async create(exportDir: string, opts: RunnerOptions): Promise<ModelRunner> {
    if (!Number.isInteger(opts.maxSequences) || opts.maxSequences <= 0) {
      fail('TF_ERR_BAD_ARGS', `maxSequences must be a positive integer, got ${opts.maxSequences}`);
    }
    const manifest = readManifest(exportDir);
    const entry = manifest.graphs.find((g) => g.role === 'decoder');
    if (!entry) {
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        `${exportDir}: the manifest lists no decoder graph (exported before the KV-cache decoder existed?); ` +
          're-export it with `npm run export`',
      );
    }
    const session = await OrtSession.create(join(exportDir, entry.file), {
      device: opts.device ?? 'auto',
      ...(opts.threads ? { intraOpThreads: opts.threads } : {}),
      ...(opts.onFallback ? { onFallback: opts.onFallback } : {}),
    });
    const expected = [DECODER_INPUT_IDS, DECODER_POSITIONS, DECODER_PAST_LENGTHS];
    for (let i = 0; i < manifest.model.num_layers; i++) expected.push(pastKeyName(i), pastValueName(i));
    if (session.inputNames.includes(DECODER_LOGIT_POSITIONS)) expected.push(DECODER_LOGIT_POSITIONS);
    const missing = expected.filter((n) => !session.inputNames.includes(n));
    if (missing.length || session.inputNames.length !== expected.length) {
      await session.release();
      fail(
        'TF_ERR_BAD_CHECKPOINT',
        `${join(exportDir, entry.file)}: decoder inputs are [${session.inputNames.join(', ')}], ` +
          `expected [${expected.join(', ')}]`,
      );
    }
    return new ModelRunner(manifest, session, opts.maxSequences, opts.initialCapacity);
  }

  get device(): 'cpu' | 'cuda' {
    return this.session.device;
  }

  get vocabSize(): number {
    return this.config.vocab_size;
  }

  /** Sequences currently held (released ones excluded). */
  get sequenceCount(): number {
    return this.slots.size - this.released.size;
  }

  /** Starts an empty sequence; fails with TF_ERR_NO_CAPACITY when every slot is in use. */
  addSequence(): number {
    if (this.closed) fail('TF_ERR_RUNTIME', 'the model runner is closed');
    const id = this.nextId;
    if (this.slots.add(id) === undefined) {
      fail('TF_ERR_NO_CAPACITY', `all ${this.cache.slots} sequence slots are in use; release one first`);
    }
    this.nextId++;
    return id;
  }

  /** Copies a sequence's KV cache out (for a lossless move to another model). */
  snapshot(id: number): KvSnapshot {
    return this.cache.read(this.slotFor(id));
  }

  /**
   * Starts a sequence from another model's KV cache (same layer/head shapes, and the same keys
   * and values for the same tokens — the caller checks the models allow it).
   */
  addSequenceFrom(snap: KvSnapshot): number {
    if (snap.length > this.config.max_seq_len)
      fail(
        'TF_ERR_CONTEXT_LENGTH',
        `a KV snapshot of ${snap.length} positions exceeds max_seq_len ${this.config.max_seq_len}`,
      );
    const id = this.addSequence();
    try {
      this.cache.write(this.slotFor(id), snap);
    } catch (err) {
      this.slots.free(id);
      throw err;
    }
    return id;
  }

  /** Tokens in a sequence's cache (its context so far). */
  length(id: number): number {
    return this.cache.length(this.slotFor(id));
  }

  /**
   * Feeds `tokens` to sequence `id` in chunks of at most `chunkSize` (one batch-1 decoder run
   * each) and returns the logits [V] after the last token.
   */
  prefill(id: number, tokens: readonly number[], chunkSize = 256): Promise<Float32Array> {
    return this.exclusive(async () => {
      const slot = this.slotFor(id);
      if (tokens.length === 0) fail('TF_ERR_BAD_ARGS', `sequence ${id}: prefill needs at least one token`);
      if (!Number.isInteger(chunkSize) || chunkSize <= 0) {
        fail('TF_ERR_BAD_ARGS', `chunkSize must be a positive integer, got ${chunkSize}`);
      }
      this.checkTokens(tokens);
      this.checkContext(id, slot, tokens.length);
      let logits: Float32Array | undefined;
      for (let i = 0; i < tokens.length; i += chunkSize) {
        logits = await this.run(slot, [tokens.slice(i, i + chunkSize)]);
      }
      return logits!;
    });
  }

  /**
   * One decode step: token `tokens[j]` is appended to sequence `ids[j]`, all in one run.
   * Returns logits [ids.length × V], row j for ids[j].
   */
  decode(ids: readonly number[], tokens: readonly number[]): Promise<Float32Array> {
    if (ids.length === 0 || ids.length !== tokens.length) {
      return Promise.reject(
        new TokenFormerError(
          'TF_ERR_BAD_ARGS',
          `decode needs one token per sequence: ${ids.length} ids, ${tokens.length} tokens`,
        ),
      );
    }
    return this.extend(
      ids,
      tokens.map((t) => [t]),
      'last',
    );
  }

  /**
   * Appends `rows[j]` (one or more tokens, lengths may differ) to sequence `ids[j]`, all in one
   * run. `last`: logits after each row's last token, [ids.length × V], row j for ids[j]. `all`:
   * logits after every fed token, rows in the order of `ids`, [Σ rows[j].length × V] — what
   * speculative verification reads. Rows of different lengths, and `all`, need `canVerify`.
   */
  extend(
    ids: readonly number[],
    rows: readonly (readonly number[])[],
    logits: 'last' | 'all',
  ): Promise<Float32Array> {
    return this.exclusive(async () => {
      if (ids.length === 0 || ids.length !== rows.length)
        fail('TF_ERR_BAD_ARGS', `extend needs one row per sequence: ${ids.length} ids, ${rows.length} rows`);
      if (new Set(ids).size !== ids.length)
        fail('TF_ERR_BAD_ARGS', `decode: duplicate sequence ids in [${ids}]`);
      const ragged = rows.some((r) => r.length !== rows[0]!.length);
      if ((ragged || logits === 'all') && !this.canVerify) {
        fail(
          'TF_ERR_BAD_ARGS',
          'this export has no logit_positions input (exported before speculative decoding); re-export it',
        );
      }
      rows.forEach((r, j) => {
        if (r.length === 0) fail('TF_ERR_BAD_ARGS', `sequence ${ids[j]}: an empty row`);
        this.checkTokens(r);
        this.checkContext(ids[j]!, this.slotFor(ids[j]!), r.length);
      });
      const first = this.slots.contiguous(ids);
      const order = ids.map((_, j) => j).sort((a, b) => this.slotFor(ids[a]!) - this.slotFor(ids[b]!));
      const sorted = order.map((j) => rows[j]!);
      const out = await this.run(first, sorted, logits === 'all');
      const v = this.config.vocab_size;
      const m = Math.max(...rows.map((r) => r.length));
      if (logits === 'last') {
        if (order.every((j, row) => j === row)) return out;
        const res = new Float32Array(ids.length * v);
        order.forEach((j, row) => {
          res.set(out.subarray(row * v, (row + 1) * v), j * v);
        });
        return res;
      }
      // `out` is [B, m, V] in slot order; gather each row's first rows[j].length positions.
      const offsets: number[] = [];
      let total = 0;
      for (const r of rows) {
        offsets.push(total);
        total += r.length;
      }
      const res = new Float32Array(total * v);
      order.forEach((j, row) => {
        const n = rows[j]!.length;
        res.set(out.subarray(row * m * v, (row * m + n) * v), offsets[j]! * v);
      });
      return res;
    });
  }

  /**
   * Rolls a sequence back to its first `length` cached tokens (speculative tokens the target
   * rejected). Only ever shortens.
   */
  truncate(id: number, length: number): void {
    const slot = this.slotFor(id);
    const have = this.cache.length(slot);
    if (!Number.isInteger(length) || length < 0 || length > have)
      fail('TF_ERR_BAD_ARGS', `sequence ${id}: cannot truncate ${have} cached tokens to ${length}`);
    if (this.busy) fail('TF_ERR_RUNTIME', `sequence ${id}: truncate during a run`);
    this.cache.truncate(slot, length);
  }

  /** Ends a sequence and frees its slot (after the current run, if one is in flight). */
  release(id: number): void {
    this.slotFor(id);
    if (this.busy) this.released.add(id);
    else this.slots.free(id);
  }

  stats(): KvCacheStats {
    return this.cache.stats();
  }

  /** Waits for queued calls, then releases the session. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue;
    await this.session.release();
  }

  // ---- internals -----------------------------------------------------------------------------

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    if (this.closed)
      return Promise.reject(new TokenFormerError('TF_ERR_RUNTIME', 'the model runner is closed'));
    const run = this.queue.then(async () => {
      this.busy = true;
      try {
        return await fn();
      } finally {
        this.busy = false;
        for (const id of this.released) this.slots.free(id);
        this.released.clear();
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  private slotFor(id: number): number {
    const slot = this.slots.slot(id);
    if (slot === undefined || this.released.has(id)) fail('TF_ERR_NOT_FOUND', `unknown sequence id ${id}`);
    return slot;
  }

  private checkTokens(tokens: readonly number[]): void {
    const v = this.config.vocab_size;
    tokens.forEach((t, i) => {
      if (!Number.isInteger(t) || t < 0 || t >= v) {
        fail('TF_ERR_BAD_ARGS', `token id ${t} at index ${i} is out of range: ids are integers in [0, ${v})`);
      }
    });
  }

  private checkContext(id: number, slot: number, adding: number): void {
    const past = this.cache.length(slot);
    const max = this.config.max_seq_len;
    if (past + adding > max) {
      fail(
        'TF_ERR_CONTEXT_LENGTH',
        `sequence ${id}: ${past} cached + ${adding} new tokens = ${past + adding} exceeds max_seq_len ${max}`,
      );
    }
  }

  /**
   * One decoder run over the contiguous slots first..first+rows.length−1. Shorter rows are
   * padded to the longest (their last token repeated; the padding's keys/values are not kept,
   * and causal attention keeps it from touching the real positions). Writes the new keys/values
   * into the cache and returns logits: each row's last token [rows × V], or with `all` every
   * position [rows × n × V] (padding included; the caller drops it).
   */
  private async run(first: number, rows: readonly (readonly number[])[], all = false): Promise<Float32Array> {
    const b = rows.length;
    const n = Math.max(...rows.map((r) => r.length));
    let needed = 0;
    for (let r = 0; r < b; r++) needed = Math.max(needed, this.cache.length(first + r) + rows[r]!.length);
    this.cache.reserve(needed); // before taking views: growth re-lays out the buffers
    const ids = new BigInt64Array(b * n);
    const positions = new BigInt64Array(b * n);
    const pastLengths = new BigInt64Array(b);
    const m = all ? n : 1;
    const logitPositions = new BigInt64Array(b * m);
    rows.forEach((tokens, r) => {
      const past = this.cache.length(first + r);
      pastLengths[r] = BigInt(past);
      for (let j = 0; j < n; j++) {
        ids[r * n + j] = BigInt(tokens[Math.min(j, tokens.length - 1)]!);
        positions[r * n + j] = BigInt(past + j);
      }
      for (let j = 0; j < m; j++) logitPositions[r * m + j] = BigInt(all ? j : tokens.length - 1);
    });
    const views = this.cache.views(first, b);
    const feeds: Record<string, FeedEntry> = {
      [DECODER_INPUT_IDS]: [ids, [b, n]],
      [DECODER_POSITIONS]: [positions, [b, n]],
      [DECODER_PAST_LENGTHS]: [pastLengths, [b]],
    };
    if (this.canVerify) feeds[DECODER_LOGIT_POSITIONS] = [logitPositions, [b, m]];
    for (let i = 0; i < this.config.num_layers; i++) {
      feeds[pastKeyName(i)] = cacheFeed(views.keys[i]!, views.keyDims);
      feeds[pastValueName(i)] = cacheFeed(views.values[i]!, views.valueDims);
    }
    const out = await this.session.run(feeds);
    for (let i = 0; i < this.config.num_layers; i++) {
      const k = out[presentKeyName(i)]!.data as KvArray;
      const v = out[presentValueName(i)]!.data as KvArray;
      for (let r = 0; r < b; r++) this.cache.append(first + r, i, k, v, r, n, rows[r]!.length);
    }
    for (let r = 0; r < b; r++) this.cache.advance(first + r, rows[r]!.length);
    return out[DECODER_LOGITS]!.data as Float32Array;
  }
}

/** A cache view as a decoder input: float16 caches travel as their bits, marked float16. */
function cacheFeed(view: KvArray, dims: readonly number[]): FeedEntry {
  return view instanceof Uint16Array ? [view, dims, 'float16'] : [view, dims];
}
