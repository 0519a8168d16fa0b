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
