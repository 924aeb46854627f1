// XMLHttpRequest as a promise, for what fetch cannot do: report upload progress.

import { ApiError, connectionError } from "./errors.js";

/** The error of a request the user cancelled. */
export function cancelledError() {
  return new ApiError(0, "cancelled", "cancelled");
}

/** Tell whether an error is the user's own cancel. */
export function isCancelled(error) {
  return error instanceof ApiError && error.code === "cancelled";
}

/**
 * Send one request and resolve with the finished XMLHttpRequest, whatever its
 * status. Rejects with a connection error when no answer came (or nothing moved
 * for `stallMs`), and with `cancelledError()` when `abort()` was called.
 *
 * Options: headers, body, onUpload(loadedBytes), onAnswer(textSoFar),
 * stallMs, and register(abort) which receives a function that cancels.
 */
export function sendXhr(method, url, options = {}) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    let stalled = false;
    let watchdog = null;
    const poke = () => {
      if (options.stallMs) {
        clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          stalled = true;
          xhr.abort();
        }, options.stallMs);
      }
    };
    const settle = (outcome, value) => {
      clearTimeout(watchdog);
      outcome(value);
    };
    xhr.open(method, url);
    for (const [name, value] of Object.entries(options.headers || {})) {
      xhr.setRequestHeader(name, value);
    }
    xhr.upload.addEventListener("progress", (event) => {
      poke();
      options.onUpload?.(event.loaded);
    });
    xhr.addEventListener("progress", () => {
      poke();
      options.onAnswer?.(xhr.responseText);
    });
    xhr.addEventListener("load", () => settle(resolve, xhr));
    xhr.addEventListener("error", () => settle(reject, connectionError()));
    xhr.addEventListener("timeout", () => settle(reject, connectionError()));
    xhr.addEventListener("abort", () => {
      settle(reject, stalled ? connectionError() : cancelledError());
    });
    options.register?.(() => xhr.abort());
    poke();
    xhr.send(options.body ?? null);
  });
}
