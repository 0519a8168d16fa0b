import type { TrainEvent } from './run.ts';

/**
 * Renders training events on a stream: a redrawn progress bar on a terminal, or a line every
 * few percent otherwise (CI logs, pipes). Pure formatting lives in `formatProgress`.
 */

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m >= 60
    ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`
    : m > 0
      ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`
      : `${s.toFixed(0)}s`;
}

export function formatProgress(p: {
  step: number;
  steps: number;
  loss: number;
  valLoss: number;
  tokensPerS: number;
  lr: number;
  etaS: number;
}): string {
  const width = 24;
  const filled = Math.round((p.step / Math.max(1, p.steps)) * width);
  const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
  const val = Number.isFinite(p.valLoss) ? ` val ${p.valLoss.toFixed(3)}` : '';
  return (
    `step ${p.step}/${p.steps} ${bar} loss ${p.loss.toFixed(3)}${val} | ` +
    `${(p.tokensPerS / 1000).toFixed(1)}k tok/s | lr ${p.lr.toExponential(1)} | ETA ${duration(p.etaS)}`
  );
}

export function progressRenderer(stream: NodeJS.WriteStream): (e: TrainEvent) => void {
  const tty = stream.isTTY === true;
  let steps = 0;
  let first = 0;
  let t0 = 0;
  let valLoss = Number.NaN;
  let lastPrinted = -1;
  let smooth = Number.NaN;
  return (e) => {
    switch (e.type) {
      case 'status':
        stream.write(`${tty ? '\r\x1b[K' : ''}${e.message}\n`);
        break;
      case 'start':
        steps = e.steps;
        first = e.step;
        t0 = performance.now();
        stream.write(
          `${(e.parameters / 1e6).toFixed(2)}M parameters, ${e.trainTokens} training / ${e.valTokens} validation tokens, ` +
            `steps ${e.step} → ${e.steps}\n`,
        );
        break;
      case 'step': {
        smooth = Number.isNaN(smooth) ? e.loss : 0.9 * smooth + 0.1 * e.loss;
        const done = e.step + 1;
        const elapsed = (performance.now() - t0) / 1000;
        const eta = (elapsed / Math.max(1, done - first)) * (steps - done);
        const line = formatProgress({
          step: done,
          steps,
          loss: smooth,
          valLoss,
          tokensPerS: e.tokensPerS,
          lr: e.lr,
          etaS: eta,
        });
        const every = Math.max(1, Math.floor(steps / 20));
        if (tty) stream.write(`\r\x1b[K${line}`);
        else if (done - lastPrinted >= every || done === steps) {
          stream.write(`${line}\n`);
          lastPrinted = done;
        }
        break;
      }
      case 'eval':
        valLoss = e.valLoss;
        if (!tty)
          stream.write(
            `step ${e.step}: validation loss ${e.valLoss.toFixed(4)} (perplexity ${Math.exp(e.valLoss).toFixed(2)})\n`,
          );
        break;
      case 'saved':
        break;
      case 'stopped':
        stream.write(
          `${tty ? '\n' : ''}stopped at step ${e.step}; checkpoint saved to ${e.dir} ` +
            `(continue with: npm run train -- --resume --out ${e.dir})\n`,
        );
        break;
      case 'done':
        stream.write(
          `${tty ? '\n' : ''}done: ${e.step} steps in ${duration(e.seconds)}, validation loss ${e.valLoss.toFixed(4)} ` +
            `(perplexity ${Math.exp(e.valLoss).toFixed(2)})\n`,
        );
        break;
    }
  };
}
