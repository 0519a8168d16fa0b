import { existsSync, readFileSync } from 'node:fs';
import { fail } from '../util/errors.ts';

/** One line of `train-log.jsonl`: a training step or an evaluation. */
export interface LogEntry {
  step: number;
  loss?: number;
  lr?: number;
  tokens_per_s?: number;
  grad_norm?: number;
  ms?: number;
  val_loss?: number;
  val_ppl?: number;
}

/**
 * Reads a training log (none yet: empty). Lines are appended whole with their newline, so text
 * after the last newline is an append a kill cut short and is dropped; a complete line that is
 * not JSON is damage, named with its line number.
 */
export function readLog(path: string): LogEntry[] {
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, 'utf8').split('\n');
  lines.pop(); // '' after the final newline, or the torn append
  const out: LogEntry[] = [];
  for (const [i, line] of lines.entries()) {
    if (line.trim() === '') continue;
    try {
      out.push(JSON.parse(line) as LogEntry);
    } catch (err) {
      fail('TF_ERR_BAD_CHECKPOINT', `${path}:${i + 1}: not a JSON log line (${(err as Error).message})`, err);
    }
  }
  return out;
}
