/**
 * Server-sent events as a client reads them: events end at a blank line, and an event's payload
 * is its `data:` lines joined by newlines ('' for an event without one, such as a comment).
 */
export class SseParser {
  private buffer = '';

  /** Feeds decoded text; returns the payloads of the events it completed. */
  push(text: string): string[] {
    this.buffer += text;
    const out: string[] = [];
    for (let cut = this.buffer.indexOf('\n\n'); cut >= 0; cut = this.buffer.indexOf('\n\n')) {
      const event = this.buffer.slice(0, cut);
      this.buffer = this.buffer.slice(cut + 2);
      if (event.trim() === '') continue;
      out.push(
        event
          .split('\n')
          .filter((l) => l.startsWith('data: '))
          .map((l) => l.slice('data: '.length))
          .join('\n'),
      );
    }
    return out;
  }
}

/** The payloads of a whole SSE body. */
export function sseData(body: string): string[] {
  return new SseParser().push(`${body}\n\n`);
}

/**
 * Reads an SSE response until `stopWhen(text so far)` or its end; returns the text read. Stopping
 * early leaves the connection open (cancelling the reader would close it).
 */
export async function readSse(
  res: Response,
  stopWhen: (text: string) => boolean = () => false,
): Promise<string> {
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let text = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    if (stopWhen(text)) {
      reader.releaseLock();
      break;
    }
  }
  return text;
}

/** The JSON payloads of a whole SSE body (the `[DONE]` sentinel and empty events left out). */
export function sseJson<T = Record<string, unknown>>(body: string): T[] {
  return sseData(body)
    .filter((d) => d !== '' && d !== '[DONE]')
    .map((d) => JSON.parse(d) as T);
}
