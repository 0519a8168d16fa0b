/**
 * Pure figures for the soak report: percentiles, latency samples kept as time spans so they can
 * be split afterwards by whether they overlap a swap, and a least-squares trend.
 */

export interface Summary {
  n: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
}

/** Nearest-rank percentile (p in 0–100) of ascending `sorted`. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) throw new Error('percentile of no values');
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export function summarize(values: readonly number[]): Summary {
  if (values.length === 0) return { n: 0, p50: null, p99: null, max: null };
  const sorted = [...values].sort((a, b) => a - b);
  return {
    n: sorted.length,
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    max: sorted[sorted.length - 1]!,
  };
}

export interface Interval {
  start: number;
  end: number;
}

/** Latency samples as [start, end] spans (ms on one clock), appended flat to stay compact. */
export class Spans {
  private readonly flat: number[] = [];

  add(start: number, end: number): void {
    this.flat.push(start, end);
  }

  get size(): number {
    return this.flat.length / 2;
  }

  /**
   * Durations split by whether their span overlaps any window: a gap that began before a swap and
   * ended during it was affected by it.
   */
  split(windows: readonly Interval[]): { steady: number[]; swap: number[] } {
    const steady: number[] = [];
    const swap: number[] = [];
    for (let i = 0; i < this.flat.length; i += 2) {
      const start = this.flat[i]!;
      const end = this.flat[i + 1]!;
      const hit = windows.some((w) => start <= w.end && end >= w.start);
      (hit ? swap : steady).push(end - start);
    }
    return { steady, swap };
  }
}

/** Least-squares slope of v over t, per minute of t (t in seconds); null with fewer than 2 points. */
export function slopePerMinute(points: readonly { t: number; v: number }[]): number | null {
  if (points.length < 2) return null;
  const n = points.length;
  const mt = points.reduce((s, p) => s + p.t, 0) / n;
  const mv = points.reduce((s, p) => s + p.v, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.t - mt) * (p.v - mv);
    den += (p.t - mt) ** 2;
  }
  return den === 0 ? null : (num / den) * 60;
}
