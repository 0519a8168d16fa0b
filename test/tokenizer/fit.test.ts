import assert from 'node:assert/strict';
import test from 'node:test';
import { checkTokenizerFits, embeddingRowsFor } from '../../src/tokenizer/fit.ts';

test('a tokenizer fits an embedding of its size, or one padded to the next multiple of 128', () => {
  assert.deepEqual(embeddingRowsFor(50277), { min: 50277, max: 50304 }); // the official releases
  assert.deepEqual(embeddingRowsFor(2048), { min: 2048, max: 2048 });
  assert.doesNotThrow(() => checkTokenizerFits('tok.json', 50277, 'config.json', 50304));
  assert.doesNotThrow(() => checkTokenizerFits('tok.json', 512, 'config.json', 512));
  assert.throws(
    () => checkTokenizerFits('tok.json', 570, 'config.json', 512),
    /tok.json has 570 tokens but the model in config.json has only 512 embedding rows/,
  );
  assert.throws(
    () => checkTokenizerFits('tok.json', 320, 'config.json', 50000),
    /tok.json has 320 tokens but the model in config.json has 50000 embedding rows \(at most 384 with padding/,
  );
});
