import type { KvCache } from './kv-cache.ts';

/**
 * Which sequence holds which slot of a KvCache, kept in step with the cache's compaction: when a
 * slot is freed the cache moves its last active slot into the hole, and the sequence that lived
 * there is remapped here; a decode batch is made one contiguous range by swapping slots.
 */
export class SequenceSlots {
  private readonly slotOf = new Map<number, number>(); // sequence id → slot
  private readonly idAt: number[] = []; // slot → sequence id

  constructor(private readonly cache: KvCache) {}

  /** Sequences holding a slot. */
  get size(): number {
    return this.slotOf.size;
  }

  /** Gives sequence `id` the next free slot (empty); undefined when every slot is in use. */
  add(id: number): number | undefined {
    const slot = this.cache.allocate();
    if (slot === undefined) return undefined;
    this.slotOf.set(id, slot);
    this.idAt[slot] = id;
    return slot;
  }

  /** The slot of `id`, or undefined when it holds none. */
  slot(id: number): number | undefined {
    return this.slotOf.get(id);
  }

  /** Frees the slot of `id` (which must hold one). */
  free(id: number): void {
    const move = this.cache.free(this.slotOf.get(id)!);
    this.slotOf.delete(id);
    if (move) {
      const moved = this.idAt[move.from]!;
      this.idAt[move.to] = moved;
      this.slotOf.set(moved, move.to);
    }
    this.idAt.length = this.cache.activeCount;
  }

  /**
   * Moves the slots of `ids` into one contiguous range (a decode batch is one cache view) and
   * returns its first slot. Usually they already are (every running sequence, compacted), so
   * nothing moves; otherwise the holes in 0..k−1 are swapped with the slots beyond it.
   */
  contiguous(ids: readonly number[]): number {
    const slots = ids.map((id) => this.slotOf.get(id)!);
    const lo = Math.min(...slots);
    if (Math.max(...slots) - lo + 1 === slots.length) return lo;
    const wanted = new Set(slots);
    const outside = slots.filter((s) => s >= slots.length);
    for (let hole = 0; hole < slots.length; hole++) {
      if (wanted.has(hole)) continue;
      const from = outside.pop()!;
      this.cache.swap(hole, from);
      const [a, b] = [this.idAt[hole]!, this.idAt[from]!];
      [this.idAt[hole], this.idAt[from]] = [b, a];
      this.slotOf.set(b, hole);
      this.slotOf.set(a, from);
    }
    return 0;
  }
}
