import { spawnSync } from 'node:child_process';

/** Runs `promtool check metrics` on exposition text; fails with an install hint when absent. */
export function promtoolCheck(text: string): { ok: boolean; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8', timeout: 30_000 });
  if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') {
    throw new Error(
      "promtool is not installed: install Debian's prometheus package (apt-get install prometheus)",
    );
  }
  return { ok: r.status === 0, output: `${r.stdout}${r.stderr}` };
}

/** Every metric name DESIGN.md §5 requires. */
export const REQUIRED_METRICS = [
  'tokenformer_requests_total',
  'tokenformer_prompt_tokens_total',
  'tokenformer_generation_tokens_total',
  'tokenformer_time_to_first_token_seconds',
  'tokenformer_inter_token_latency_seconds',
  'tokenformer_request_duration_seconds',
  'tokenformer_queue_wait_seconds',
  'tokenformer_requests_running',
  'tokenformer_requests_waiting',
  'tokenformer_kv_cache_usage_ratio',
  'tokenformer_model_info',
  'tokenformer_model_swaps_total',
  'tokenformer_model_swap_duration_seconds',
  'tokenformer_streams_migrated_total',
];
