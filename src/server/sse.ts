/**
 * Server-Sent Events framing, pure and separate from the wiring so it is tested without a
 * server. An event is `data: <line>` lines and a blank line; JSON never holds a raw newline, so a
 * JSON payload is always one `data:` line. OpenAI streams end with `data: [DONE]`.
 */

export const SSE_HEADERS = {
  'content-type': 'text/event-stream; charset=utf-8',
  'cache-control': 'no-cache, no-transform',
  connection: 'keep-alive',
  // Tells nginx-style proxies not to buffer the stream.
  'x-accel-buffering': 'no',
} as const;

/** The OpenAI end-of-stream sentinel. */
export const SSE_DONE = 'data: [DONE]\n\n';

/** One event carrying `text`; each line of it becomes its own `data:` line. */
export function sseText(text: string, event?: string): string {
  const head = event === undefined ? '' : `event: ${oneLine(event)}\n`;
  return `${head}${text
    .split(/\r\n|\r|\n/)
    .map((l) => `data: ${l}\n`)
    .join('')}\n`;
}

/** One event carrying `payload` as JSON (the OpenAI chunk format). */
export function sseJson(payload: unknown, event?: string): string {
  return sseText(JSON.stringify(payload), event);
}

/** A comment line (ignored by clients): keeps an idle stream open through proxies. */
export function sseComment(text = ''): string {
  return `: ${oneLine(text)}\n\n`;
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, ' ');
}
