import { fail, invariant } from '../util/errors.ts';

/**
 * Host-owned KV cache for the decoder graph (src/export/decoder.ts). The graph never outputs the
 * cache (onnxruntime-node copies every output, DESIGN.md §3): the engine feeds these buffers as
 * zero-copy input views and writes the new positions' keys/values (`present_*`) back here.
 *
 * Layout, per layer, slot-major: keys [slots, H, Dh, cap] (transposed, so q·K reads them as
 * is), values [slots, H, cap, Dh]. One slot holds one sequence, and a slot's data is contiguous,
 * so a batch of contiguous slots is a single `subarray` view [count, H, Dh|cap, cap|Dh].
 *
 * Slots are kept compacted: active sequences occupy 0..n−1. `allocate` takes slot n; `free`
 * moves the last active slot into the hole (one contiguous copy per layer and tensor) and reports
 * the move, so the owner can update its id → slot map. Chosen over a free list or paging
 * because the decoder consumes a dense [B, H, Dh, cap] tensor per layer: with compaction the
 * usual decode batch (every running sequence) is one view with no gather, and the price is one
 * slot copy per finished sequence. A caller that needs another subset contiguous uses `swap`.
 *
 * `cap` is shared by all slots. It starts small and doubles (up to `maxLength`) when a sequence
 * needs more room: a re-layout copy of the active slots, amortised over the doubling. Positions
 * ≥ a slot's length hold stale or zero data; the graph masks them, and they are always finite
 * (zeros or old keys/values), so 0-probability × stale value adds exactly 0.
 *
 * On CUDA every run still copies the fed views to the device (no I/O binding from Node, DESIGN.md
 * §3); this layout is chosen for the CPU binding, where feeding them costs nothing.
 */

/** float32 values, or float16 bit patterns (float16 exports keep their cache in float16). */
export type KvArray = Float32Array | Uint16Array;

export interface KvCacheOptions {
  /** Element type of the buffers: the decoder's past/present dtype (default float32). */
  dtype?: 'float32' | 'float16';
  layers: number;
  heads: number;
  headDim: number;
  /** Sequences held at once (the decode batch limit). */
  slots: number;
  /** The model's max_seq_len: the largest capacity the cache grows to. */
  maxLength: number;
  /** Starting capacity in positions (clamped to maxLength). */
  initialCapacity?: number;
}

export interface KvViews {
  /** Per layer, [count, H, Dh, cap]. */
  keys: KvArray[];
  /** Per layer, [count, H, cap, Dh]. */
  values: KvArray[];
  keyDims: [number, number, number, number];
  valueDims: [number, number, number, number];
}

export interface KvCacheStats {
  /** Bytes one cached position costs across all layers (keys + values). */
  bytesPerToken: number;
  /** Bytes one slot holds at the current capacity. */
  bytesPerSequence: number;
  /** Bytes allocated for the cache buffers (they grow with capacity and are kept). */
  totalBytes: number;
  capacity: number;
  slots: number;
  active: number;
  /** Cached positions in use over all positions allocated, 0..1. */
  usage: number;
}

/**
 * One sequence's cached keys and values, compact (no capacity padding): per layer, keys
 * [H, Dh, length] and values [H, length, Dh]. What a lossless hot swap moves between models.
 */
export interface KvSnapshot {
  length: number;
  layers: number;
  heads: number;
  headDim: number;
  keys: KvArray[];
  values: KvArray[];
}

export const DEFAULT_INITIAL_CAPACITY = 64;

export class KvCache {
  readonly layers: number;
  readonly heads: number;
  readonly headDim: number;
  readonly slots: number;
  readonly maxLength: number;
  private cap: number;
  private readonly initialCap: number;
  readonly dtype: 'float32' | 'float16';
  private keys: KvArray[] = [];
  private values: KvArray[] = [];
  private readonly lengths: Int32Array;
  private active = 0;

  constructor(opts: KvCacheOptions) {
    for (const k of ['layers', 'heads', 'headDim', 'slots', 'maxLength'] as const) {
      if (!Number.isInteger(opts[k]) || opts[k] <= 0) {
        fail('TF_ERR_BAD_ARGS', `KvCache: ${k} must be a positive integer, got ${opts[k]}`);
      }
    }
    this.dtype = opts.dtype ?? 'float32';
    this.layers = opts.layers;
    this.heads = opts.heads;
    this.headDim = opts.headDim;
    this.slots = opts.slots;
    this.maxLength = opts.maxLength;
    const initial = opts.initialCapacity ?? DEFAULT_INITIAL_CAPACITY;
    if (!Number.isInteger(initial) || initial <= 0) {
      fail('TF_ERR_BAD_ARGS', `KvCache: initialCapacity must be a positive integer, got ${initial}`);
    }
    this.cap = Math.min(initial, this.maxLength);
    this.initialCap = this.cap;
    this.lengths = new Int32Array(this.slots);
    this.allocBuffers();
  }

  private allocBuffers(): void {
    const n = this.slots * this.slotSize();
    this.keys = Array.from({ length: this.layers }, () => this.alloc(n));
    this.values = Array.from({ length: this.layers }, () => this.alloc(n));
  }

  private alloc(n: number): KvArray {
    return this.dtype === 'float16' ? new Uint16Array(n) : new Float32Array(n);
  }

  /** Bytes per cached element. */
  get elementBytes(): number {
    return this.dtype === 'float16' ? 2 : 4;
  }

  /** Floats one slot takes in one layer's key (or value) buffer. */
  private slotSize(cap = this.cap): number {
    return this.heads * this.headDim * cap;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.active) {
      fail('TF_ERR_BAD_ARGS', `KV cache slot ${slot} is not in use (active slots 0..${this.active - 1})`);
    }
  }

  /** Current capacity in positions (shared by all slots). */
  get capacity(): number {
    return this.cap;
  }

  /** Number of slots in use (they are 0..activeCount−1). */
  get activeCount(): number {
    return this.active;
  }

  /** Takes the next free slot (always `activeCount`), empty; undefined when all are in use. */
  allocate(): number | undefined {
    if (this.active === this.slots) return undefined;
    const slot = this.active++;
    this.lengths[slot] = 0;
    return slot;
  }

  /**
   * Frees `slot`. To keep slots compacted, the last active slot (if it is another one) moves
   * into it; the move is returned so the owner can remap that sequence.
   */
  free(slot: number): { from: number; to: number } | undefined {
    this.checkSlot(slot);
    const last = --this.active;
    let move: { from: number; to: number } | undefined;
    if (slot !== last) {
      this.copySlot(last, slot);
      move = { from: last, to: slot };
    }
    this.lengths[last] = 0;
    this.maybeShrink();
    return move;
  }

  /** Exchanges two active slots' contents (to make an arbitrary decode set contiguous). */
  swap(a: number, b: number): void {
    this.checkSlot(a);
    this.checkSlot(b);
    if (a === b) return;
    const size = this.slotSize();
    const tmp = this.alloc(size);
    for (const buf of [...this.keys, ...this.values]) {
      tmp.set(buf.subarray(a * size, (a + 1) * size));
      buf.copyWithin(a * size, b * size, (b + 1) * size);
      buf.set(tmp, b * size);
    }
    const la = this.lengths[a]!;
    this.lengths[a] = this.lengths[b]!;
    this.lengths[b] = la;
  }

  private copySlot(from: number, to: number): void {
    const size = this.slotSize();
    for (const buf of [...this.keys, ...this.values])
      buf.copyWithin(to * size, from * size, (from + 1) * size);
    this.lengths[to] = this.lengths[from]!;
  }

  /** Valid cached positions of a slot. */
  length(slot: number): number {
    this.checkSlot(slot);
    return this.lengths[slot]!;
  }

  /**
   * Makes the capacity at least `needed` positions, doubling (capped at maxLength) and copying
   * the active slots into the new layout. Views taken before a growth are stale.
   */
  reserve(needed: number): void {
    if (needed <= this.cap) return;
    if (needed > this.maxLength) {
      fail('TF_ERR_CONTEXT_LENGTH', `KV cache: ${needed} positions exceed max_seq_len ${this.maxLength}`);
    }
    let cap = this.cap;
    while (cap < needed) cap = Math.min(cap * 2, this.maxLength);
    this.relayout(cap);
  }

  /**
   * Attention reads every slot's whole capacity (masked positions included), so after long
   * sequences leave, the capacity shrinks back: to the smallest power-of-two multiple of the
   * initial capacity holding twice the longest active sequence, once that is ≤ a quarter of it.
   */
  private maybeShrink(): void {
    let longest = 0;
    for (let s = 0; s < this.active; s++) longest = Math.max(longest, this.lengths[s]!);
    let target = this.initialCap;
    while (target < 2 * longest && target < this.maxLength) target = Math.min(target * 2, this.maxLength);
    if (target * 4 <= this.cap) this.relayout(target);
  }

  /**
   * Re-lays out every active sequence for capacity `cap` (≥ every active length). The buffers
   * are only reallocated when they are too small (they never shrink, so a shrink and the next
   * growth cost a copy, not an allocation); otherwise rows move in place with copyWithin, in
   * an order that never overwrites a row before it has moved.
   */
  private relayout(cap: number): void {
    const oldCap = this.cap;
    const needed = this.slots * this.slotSize(cap);
    if (needed > (this.keys[0]?.length ?? 0)) {
      const [oldKeys, oldValues] = [this.keys, this.values];
      this.cap = cap;
      this.allocBuffers();
      for (let l = 0; l < this.layers; l++) {
        this.moveRows(oldKeys[l]!, this.keys[l]!, oldValues[l]!, this.values[l]!, oldCap, cap, false);
      }
      return;
    }
    this.cap = cap;
    for (let l = 0; l < this.layers; l++) {
      this.moveRows(
        this.keys[l]!,
        this.keys[l]!,
        this.values[l]!,
        this.values[l]!,
        oldCap,
        cap,
        cap > oldCap,
      );
    }
  }

  /**
   * Copies each active sequence's cached positions from stride `from` to stride `to`: key rows
   * of [H·Dh] × positions, value blocks of [H] × positions·Dh. Growing in place goes from the
   * last row down, shrinking from the first row up.
   */
  private moveRows(
    srcK: KvArray,
    dstK: KvArray,
    srcV: KvArray,
    dstV: KvArray,
    from: number,
    to: number,
    descending: boolean,
  ): void {
    const { heads: h, headDim: dh } = this;
    const rows = this.active * h * dh;
    for (let i = 0; i < rows; i++) {
      const r = descending ? rows - 1 - i : i;
      const len = this.lengths[Math.floor(r / (h * dh))]!;
      if (len === 0) continue;
      if (srcK === dstK) dstK.copyWithin(r * to, r * from, r * from + len);
      else dstK.set(srcK.subarray(r * from, r * from + len), r * to);
    }
    const blocks = this.active * h;
    for (let i = 0; i < blocks; i++) {
      const b = descending ? blocks - 1 - i : i;
      const len = this.lengths[Math.floor(b / h)]! * dh;
      if (len === 0) continue;
      if (srcV === dstV) dstV.copyWithin(b * to * dh, b * from * dh, b * from * dh + len);
      else dstV.set(srcV.subarray(b * from * dh, b * from * dh + len), b * to * dh);
    }
  }

  /**
   * Writes one layer's new keys/values for row `row` of a decoder run into `slot`, at positions
   * length(slot) .. length(slot)+take−1. `presentKey`/`presentValue` are the run's
   * [batch, H, newCount, Dh] outputs; only the first `take` positions of the row are kept (the
   * rest pad a shorter row of a batch). Keys are transposed into [H, Dh, cap]. The length moves
   * only at `advance`, after every layer is written.
   */
  append(
    slot: number,
    layer: number,
    presentKey: KvArray,
    presentValue: KvArray,
    row: number,
    newCount: number,
    take = newCount,
  ): void {
    this.checkSlot(slot);
    const { heads: h, headDim: dh, cap } = this;
    const start = this.lengths[slot]!;
    invariant(layer >= 0 && layer < this.layers, `layer ${layer} out of range`);
    invariant(take >= 0 && take <= newCount, `take ${take} of ${newCount} new positions`);
    invariant(start + take <= cap, `append past capacity (${start}+${take} > ${cap}): reserve first`);
    const block = h * newCount * dh; // one row of the present tensors
    invariant(
      presentKey.length >= (row + 1) * block && presentValue.length >= (row + 1) * block,
      `present tensors too small for row ${row}`,
    );
    const keys = this.keys[layer]!;
    const values = this.values[layer]!;
    const base = slot * this.slotSize();
    for (let hh = 0; hh < h; hh++) {
      const src = row * block + hh * newCount * dh; // [newCount, Dh] of this head
      values.set(presentValue.subarray(src, src + take * dh), base + (hh * cap + start) * dh);
      for (let t = 0; t < take; t++) {
        const s = src + t * dh;
        let dst = base + hh * dh * cap + start + t;
        for (let d = 0; d < dh; d++, dst += cap) keys[dst] = presentKey[s + d]!;
      }
    }
  }

  /** Commits `count` appended positions of `slot` (after `append` for every layer). */
  advance(slot: number, count: number): void {
    this.checkSlot(slot);
    invariant(this.lengths[slot]! + count <= this.cap, 'advance past capacity');
    this.lengths[slot] = this.lengths[slot]! + count;
  }

  /**
   * Forgets a slot's positions from `length` on (speculative tokens the target rejected). The
   * data stays as stale, masked positions and is overwritten by the next append.
   */
  truncate(slot: number, length: number): void {
    this.checkSlot(slot);
    invariant(
      Number.isInteger(length) && length >= 0 && length <= this.lengths[slot]!,
      `truncate slot ${slot} to ${length} of ${this.lengths[slot]} positions`,
    );
    this.lengths[slot] = length;
  }

  /** Copies a slot's cached positions out, compact (see KvSnapshot). */
  read(slot: number): KvSnapshot {
    this.checkSlot(slot);
    const { heads: h, headDim: dh, cap } = this;
    const len = this.lengths[slot]!;
    const base = slot * this.slotSize();
    const keys: KvArray[] = [];
    const values: KvArray[] = [];
    for (let l = 0; l < this.layers; l++) {
      const k = this.alloc(h * dh * len);
      for (let r = 0; r < h * dh; r++)
        k.set(this.keys[l]!.subarray(base + r * cap, base + r * cap + len), r * len);
      const v = this.alloc(h * len * dh);
      for (let hh = 0; hh < h; hh++) {
        const src = base + hh * cap * dh;
        v.set(this.values[l]!.subarray(src, src + len * dh), hh * len * dh);
      }
      keys.push(k);
      values.push(v);
    }
    return { length: len, layers: this.layers, heads: h, headDim: dh, keys, values };
  }

  /** Fills an empty slot from a snapshot of the same shape (the inverse of `read`). */
  write(slot: number, snap: KvSnapshot): void {
    this.checkSlot(slot);
    const { heads: h, headDim: dh } = this;
    if (snap.layers !== this.layers || snap.heads !== h || snap.headDim !== dh) {
      fail(
        'TF_ERR_BAD_ARGS',
        `KV snapshot of ${snap.layers} layers × ${snap.heads} heads × ${snap.headDim} does not fit a cache of ${this.layers} × ${h} × ${dh}`,
      );
    }
    invariant(this.lengths[slot] === 0, 'KV snapshot written into a slot in use');
    if (snap.keys.some((k) => k.BYTES_PER_ELEMENT !== this.elementBytes)) {
      fail('TF_ERR_BAD_ARGS', `KV snapshot holds another dtype than this ${this.dtype} cache`);
    }
    const len = snap.length;
    this.reserve(len);
    const cap = this.cap;
    const base = slot * this.slotSize();
    for (let l = 0; l < this.layers; l++) {
      const [k, v] = [snap.keys[l]!, snap.values[l]!];
      invariant(
        k.length === h * dh * len && v.length === h * len * dh,
        'KV snapshot buffers of the wrong size',
      );
      for (let r = 0; r < h * dh; r++) this.keys[l]!.set(k.subarray(r * len, (r + 1) * len), base + r * cap);
      for (let hh = 0; hh < h; hh++)
        this.values[l]!.set(v.subarray(hh * len * dh, (hh + 1) * len * dh), base + hh * cap * dh);
    }
    this.lengths[slot] = len;
  }

  /** Zero-copy views of `count` contiguous slots from `firstSlot`, for the decoder's inputs. */
  views(firstSlot: number, count: number): KvViews {
    invariant(count >= 1, 'views of zero slots');
    this.checkSlot(firstSlot);
    this.checkSlot(firstSlot + count - 1);
    const size = this.slotSize();
    const [a, b] = [firstSlot * size, (firstSlot + count) * size];
    return {
      keys: this.keys.map((k) => k.subarray(a, b)),
      values: this.values.map((v) => v.subarray(a, b)),
      keyDims: [count, this.heads, this.headDim, this.cap],
      valueDims: [count, this.heads, this.cap, this.headDim],
    };
  }

  stats(): KvCacheStats {
    const bytesPerToken = 2 * this.layers * this.heads * this.headDim * this.elementBytes;
    let used = 0;
    for (let s = 0; s < this.active; s++) used += this.lengths[s]!;
    return {
      bytesPerToken,
      bytesPerSequence: bytesPerToken * this.cap,
      totalBytes: 2 * this.layers * (this.keys[0]?.length ?? 0) * this.elementBytes, // allocated (buffers only grow)
      capacity: this.cap,
      slots: this.slots,
      active: this.active,
      usage: used / (this.cap * this.slots),
    };
  }
}
