/**
 * Partial selection for top-k and top-p: expected O(n) quickselect over a scratch array of
 * weights instead of sorting the vocabulary. Both return a cut in the order "weight descending,
 * then token id ascending": keep every weight above `value`, and the first `ties` tokens (by id)
 * whose weight equals `value`. Weights are ≥ 0 and often tied (all underflowed ones are 0), so
 * partitions are three-way to stay linear on ties.
 */
export interface Cut {
  value: number;
  ties: number;
}

/**
 * Three-way partition of w[lo, hi) around a median-of-three pivot, descending:
 * [lo, lt) > pivot, [lt, gt) == pivot, [gt, hi) < pivot. Returns the pivot and the mass of [lo, lt).
 */
function partition(
  w: Float64Array,
  lo: number,
  hi: number,
  out: Int32Array,
): { pivot: number; above: number } {
  const a = w[lo]!;
  const b = w[(lo + hi) >>> 1]!;
  const c = w[hi - 1]!;
  const pivot = Math.max(Math.min(a, b), Math.min(Math.max(a, b), c)); // median of three
  let lt = lo;
  let gt = hi;
  let i = lo;
  let above = 0;
  while (i < gt) {
    const v = w[i]!;
    if (v > pivot) {
      w[i] = w[lt]!;
      w[lt] = v;
      above += v;
      lt++;
      i++;
    } else if (v < pivot) {
      gt--;
      w[i] = w[gt]!;
      w[gt] = v;
    } else {
      i++;
    }
  }
  out[0] = lt;
  out[1] = gt;
  return { pivot, above };
}

const bounds = new Int32Array(2);

/**
 * The k largest of w[0, n) (1 ≤ k ≤ n). Permutes w so that w[0, k) holds them, which lets top-p
 * run next on exactly the top-k set.
 */
export function topKCut(w: Float64Array, n: number, k: number): Cut {
  let lo = 0;
  let hi = n;
  let need = k;
  for (;;) {
    const { pivot } = partition(w, lo, hi, bounds);
    const lt = bounds[0]!;
    const gt = bounds[1]!;
    const greater = lt - lo;
    if (need <= greater) {
      hi = lt;
    } else if (need <= gt - lo) {
      return { value: pivot, ties: need - greater };
    } else {
      need -= gt - lo;
      lo = gt;
    }
  }
}

/**
 * The nucleus of w[0, n): the shortest prefix in cut order whose sum is ≥ target (0 < target ≤
 * sum). Permutes w. If rounding leaves `target` just above the whole sum, everything is kept.
 */
export function topPCut(w: Float64Array, n: number, target: number): Cut {
  let lo = 0;
  let hi = n;
  let need = target;
  let last: Cut = { value: 0, ties: n };
  while (lo < hi) {
    const { pivot, above } = partition(w, lo, hi, bounds);
    const lt = bounds[0]!;
    const gt = bounds[1]!;
    const equal = gt - lt;
    if (lt > lo && above >= need) {
      hi = lt;
    } else if (above + equal * pivot >= need) {
      // The tolerance keeps a boundary that lands exactly on a tie from taking one extra token.
      const ties = Math.ceil((need - above) / pivot - 1e-9);
      return { value: pivot, ties: Math.min(equal, Math.max(1, ties)) };
    } else {
      need -= above + equal * pivot;
      last = { value: pivot, ties: equal };
      lo = gt;
    }
  }
  return last;
}
