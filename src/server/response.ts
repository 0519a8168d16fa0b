import type { ServerResponse } from 'node:http';

/**
 * Calls `onClose(finished)` once when `res` closes: finished is false when the connection closed
 * before the response was complete, i.e. the client went away. (`finish` is tracked as an event
 * rather than read from `writableFinished`, which a response without a socket never sets.)
 * Returns a function that stops watching.
 */
export function onResponseClose(res: ServerResponse, onClose: (finished: boolean) => void): () => void {
  let finished = false;
  const onFinish = () => {
    finished = true;
  };
  const close = () => {
    res.off('finish', onFinish);
    onClose(finished);
  };
  res.once('finish', onFinish).once('close', close);
  return () => {
    res.off('finish', onFinish).off('close', close);
  };
}

const outcomes = new WeakMap<ServerResponse, number>();

/**
 * Records the status a response really ended with when it differs from the one its headers
 * carried (an SSE stream answered 200, then failed): metrics count this one.
 */
export function setOutcomeStatus(res: ServerResponse, status: number): void {
  outcomes.set(res, status);
}

/** The status to count for `res`: its recorded outcome, else the status it was sent with. */
export function outcomeStatus(res: ServerResponse): number {
  return outcomes.get(res) ?? res.statusCode;
}
