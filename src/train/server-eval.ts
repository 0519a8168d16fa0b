import { fail } from '../util/errors.ts';
import {
  defaultCorpusFiles,
  type Encoding,
  expandPaths,
  joinDocuments,
  readDocuments,
  splitTokens,
} from './corpus.ts';

/**
 * Perplexity of a served model, measured through the server's API on the windows the trainer's
 * evaluator uses: the same documents, tokenized by the served tokenizer (`POST /tokenize`) and
 * joined with end-of-text, the same validation split, and every consecutive window of
 * seqLen + 1 tokens (evalBatches). Each window is scored with `echo` + `logprobs` and
 * `max_tokens` 0 — one full-sequence pass per window — and the logprobs of its last seqLen
 * tokens are exactly the trainer's labels.
 */

export interface ServerEvalOptions {
  url: string;
  model: string;
  /** Files or folders; empty = the default corpus, as for training. */
  data: readonly string[];
  /** How the files are decoded, as for training (default utf8). */
  encoding?: Encoding;
  seqLen: number;
  valFraction: number;
  /** Windows per request (each is one choice; the server's per-request limit applies). */
  windowsPerRequest: number;
  /** Requests in flight. */
  concurrency: number;
  apiKey?: string;
  onProgress?: (done: number, total: number) => void;
}

export interface ServerEvalResult {
  model: string;
  windows: number;
  tokens: number;
  seq_len: number;
  loss: number;
  perplexity: number;
}

interface TokenizeResponse {
  tokens: number[];
  max_model_len: number;
  eos_token_id: number | null;
}

interface ScoreResponse {
  choices: { index: number; logprobs: { token_logprobs: (number | null)[] } | null }[];
}

async function post<T>(opts: ServerEvalOptions, path: string, body: object): Promise<T> {
  const url = new URL(path, opts.url).toString();
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(opts.apiKey ? { authorization: `Bearer ${opts.apiKey}` } : {}),
      },
      body: JSON.stringify(body),
    });
  } catch (err) {
    fail('TF_ERR_RUNTIME', `${url}: ${(err as Error).cause ?? (err as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text.slice(0, 300);
    try {
      message = (JSON.parse(text) as { error: { message: string } }).error.message;
    } catch {}
    fail('TF_ERR_RUNTIME', `${url} answered ${res.status}: ${message}`);
  }
  return JSON.parse(text) as T;
}

export async function evaluateServer(opts: ServerEvalOptions): Promise<ServerEvalResult> {
  // The trainer's reading: the same files (and the same ones skipped), decoded the same way.
  const docs = readDocuments(opts.data.length ? expandPaths(opts.data).files : defaultCorpusFiles(), {
    encoding: opts.encoding ?? 'utf8',
  });
  if (docs.length === 0) fail('TF_ERR_BAD_ARGS', 'the corpus has no documents');
  let eos: number | null = null;
  let context = 0;
  const encoded: number[][] = [];
  for (const d of docs) {
    const r = await post<TokenizeResponse>(opts, '/tokenize', { model: opts.model, prompt: d.text });
    encoded.push(r.tokens);
    eos = r.eos_token_id;
    context = r.max_model_len;
  }
  if (eos === null || eos === undefined)
    fail('TF_ERR_BAD_CONFIG', 'the served model has no end-of-text token (needed to join documents)');
  if (opts.seqLen + 1 > context)
    fail(
      'TF_ERR_BAD_ARGS',
      `--seq-len ${opts.seqLen} needs windows of ${opts.seqLen + 1} tokens; the model's context is ${context}`,
    );
  const { val } = splitTokens(joinDocuments(encoded, eos), opts.valFraction);

  // evalBatches' windows: start w·seqLen, inputs seqLen tokens, labels the next seqLen.
  const count = Math.floor((val.length - 1) / opts.seqLen);
  if (count < 1)
    fail(
      'TF_ERR_BAD_ARGS',
      `the validation split has ${val.length} tokens, too few for --seq-len ${opts.seqLen}`,
    );
  const windows = Array.from({ length: count }, (_, w) =>
    Array.from(val.subarray(w * opts.seqLen, w * opts.seqLen + opts.seqLen + 1)),
  );
  const requests: number[][][] = [];
  for (let i = 0; i < windows.length; i += opts.windowsPerRequest)
    requests.push(windows.slice(i, i + opts.windowsPerRequest));

  let nll = 0;
  let tokens = 0;
  let done = 0;
  let next = 0;
  const worker = async () => {
    while (next < requests.length) {
      const batch = requests[next++]!;
      const r = await post<ScoreResponse>(opts, '/v1/completions', {
        model: opts.model,
        prompt: batch,
        echo: true,
        logprobs: 0,
        max_tokens: 0,
      });
      for (const c of r.choices) {
        const lp = c.logprobs?.token_logprobs;
        if (!lp || lp.length !== opts.seqLen + 1)
          fail(
            'TF_ERR_RUNTIME',
            `the server returned ${lp?.length ?? 'no'} logprobs for a ${opts.seqLen + 1}-token window`,
          );
        for (let i = 1; i < lp.length; i++) nll -= lp[i]!;
        tokens += lp.length - 1;
      }
      done += batch.length;
      opts.onProgress?.(done, windows.length);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.concurrency) }, worker));
  const loss = nll / tokens;
  return {
    model: opts.model,
    windows: windows.length,
    tokens,
    seq_len: opts.seqLen,
    loss,
    perplexity: Math.exp(loss),
  };
}
