import { fail } from '../util/errors.ts';

/**
 * Whether a tokenizer fits a model's embedding. Every id the tokenizer can produce needs a row,
 * so the tokenizer may not be larger than the embedding. It may be smaller only by the padding
 * GPT-NeoX-style training adds to round the embedding up to a multiple of EMBEDDING_PADDING
 * (the official releases: 50277 tokens, 50304 rows); models trained here have exactly one row per
 * token. Any other difference means the tokenizer belongs to another model.
 */
export const EMBEDDING_PADDING = 128;

/** The embedding rows a tokenizer of `tokens` ids may come with: [tokens, next multiple of 128]. */
export function embeddingRowsFor(tokens: number): { min: number; max: number } {
  return { min: tokens, max: Math.ceil(tokens / EMBEDDING_PADDING) * EMBEDDING_PADDING };
}

/** Refuses a tokenizer (`tokenizerFile`, `tokens` ids) that does not fit `rows` embedding rows. */
export function checkTokenizerFits(
  tokenizerFile: string,
  tokens: number,
  configFile: string,
  rows: number,
): void {
  const { min, max } = embeddingRowsFor(tokens);
  if (rows >= min && rows <= max) return;
  fail(
    'TF_ERR_BAD_CHECKPOINT',
    rows < min
      ? `${tokenizerFile} has ${tokens} tokens but the model in ${configFile} has only ${rows} embedding rows: ` +
          'ids past the embedding cannot be served; the tokenizer belongs to another model'
      : `${tokenizerFile} has ${tokens} tokens but the model in ${configFile} has ${rows} embedding rows ` +
          `(at most ${max} with padding to a multiple of ${EMBEDDING_PADDING}): the tokenizer belongs to another model`,
  );
}
