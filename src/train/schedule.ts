/**
 * Learning-rate schedule as a pure function of the step (nanoGPT): linear warmup to `lr`, then
 * cosine decay to `minLr` at `totalSteps`. Official recipe: warmup 1 %, floor lr / 10.
 */
export interface Schedule {
  lr: number;
  minLr: number;
  warmupSteps: number;
  /** The step the schedule ends at (the run's --steps). */
  totalSteps: number;
  /**
   * The step the schedule starts from: 0 for a new model; the checkpoint's step when training
   * continues from --init (a grown model gets its own warmup and decay).
   */
  startStep?: number;
  kind: 'cosine' | 'constant';
}

export function learningRate(s: Schedule, globalStep: number): number {
  if (s.kind === 'constant') return s.lr;
  const start = s.startStep ?? 0;
  const step = globalStep - start;
  const totalSteps = s.totalSteps - start;
  if (step < s.warmupSteps) return (s.lr * (step + 1)) / s.warmupSteps;
  const decaySteps = Math.max(1, totalSteps - s.warmupSteps);
  const progress = Math.min(1, (step - s.warmupSteps) / decaySteps);
  return s.minLr + 0.5 * (1 + Math.cos(Math.PI * progress)) * (s.lr - s.minLr);
}

/** Adam bias corrections 1 − βᵗ for the step about to run (t = step + 1), in float64. */
export function biasCorrections(beta1: number, beta2: number, step: number): [number, number] {
  return [1 - beta1 ** (step + 1), 1 - beta2 ** (step + 1)];
}
