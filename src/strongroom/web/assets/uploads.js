// The upload queue: one row per file with a progress bar, speed, time left,
// cancel, and the server's own words when it refuses.
//
// Small files go in one PUT (XMLHttpRequest, for its upload progress). Files of
// RESUMABLE_FROM_BYTES or more go through tus when the server offers it, and
// then survive a dropped connection or a reload; without tus they go by PUT.
// Both ask to create only (If-None-Match: * on a PUT, create_only in tus's
// metadata), so the server replaces nothing unless the person says so with the
// row's Replace button, even when another client takes the name meanwhile.

import { spaceUrl } from "./api.js";
import { announce, byId, formatBytes, formatDuration, h, joinPath } from "./dom.js";
import { ApiError, errorFromText } from "./errors.js";
import { authorization, refreshNow } from "./session.js";
import { TusUpload, probeTus } from "./tus.js";
import { isCancelled, sendXhr } from "./xhr.js";

// Large enough that a PUT of anything smaller takes seconds on a slow line, so
// little is lost when one fails; small enough that big files can resume.
export const RESUMABLE_FROM_BYTES = 8 * 1024 * 1024;
// Files sending at once; more would only split the same bandwidth.
const PARALLEL_UPLOADS = 3;
// Speed is the average over this much recent time, so it neither jumps with
// every progress event nor lags a change of pace by long.
const SPEED_WINDOW_MS = 3000;
// Status text is rewritten at most this often.
const STATUS_EVERY_MS = 250;
// A speed measured over less time than this is mostly noise.
const MIN_SPEED_SPAN_MS = 500;

const queue = [];
const sending = new Set();
let running = 0;
let onUploaded = () => {};

/** Call `listener(space, folder)` after each file that finished uploading. */
export function onUploadFinished(listener) {
  onUploaded = listener;
}

/** Tell whether any upload is still sending or waiting. */
export function hasActiveUploads() {
  return running > 0 || queue.length > 0;
}

/** Queue `files` (a FileList or array) for upload into `folder` of `space`. */
export function uploadFiles(space, folder, files) {
  const list = byId("upload-list");
  for (const file of files) {
    const item = new Upload(file, space, joinPath(folder, file.name), folder);
    list.prepend(item.row);
    queue.push(item);
  }
  byId("uploads").hidden = false;
  pump();
}

/** Cancel every upload that is waiting or sending (at sign-out). */
export function cancelAllUploads() {
  for (const item of [...queue, ...sending]) {
    item.stop();
  }
}

/** Remove the rows of finished, failed and cancelled uploads. */
export function clearFinishedUploads() {
  for (const row of byId("upload-list").querySelectorAll("li")) {
    if (["done", "failed", "cancelled"].includes(row.dataset.state)) {
      row.remove();
    }
  }
  byId("uploads").hidden = byId("upload-list").childElementCount === 0;
}

function pump() {
  while (running < PARALLEL_UPLOADS && queue.length > 0) {
    const item = queue.shift();
    running += 1;
    sending.add(item);
    item.run().finally(() => {
      running -= 1;
      sending.delete(item);
      pump();
    });
  }
}

class Upload {
  constructor(file, space, relPath, folder) {
    this.file = file;
    this.space = space;
    this.relPath = relPath;
    this.folder = folder;
    this.replace = false;
    this.cancel = null;
    this.samples = [];
    this.lastStatusAt = 0;
    this.bar = h("progress", {
      max: Math.max(file.size, 1),
      value: 0,
      "aria-label": `Upload progress of ${file.name}`,
    });
    this.status = h("p", { class: "upload-status", text: "Waiting" });
    this.actions = h("div", { class: "upload-actions" });
    this.row = h("li", { class: "upload", dataset: { state: "queued" } },
      h("p", { class: "upload-name" },
        h("span", { class: "name", text: file.name }),
        h("span", { class: "muted", text: ` · ${formatBytes(file.size)} to ${space}/${folder}` })),
      this.bar, this.status, this.actions);
    this.showActions();
  }

  async run() {
    if (this.row.dataset.state === "cancelled") {
      return;
    }
    this.setState("sending", "Starting");
    this.samples = [];
    try {
      const resumed = await this.send();
      this.bar.value = this.bar.max;
      const note = resumed > 0 ? ` (continued from ${formatBytes(resumed)})` : "";
      this.setState("done", `Done · ${formatBytes(this.file.size)}${note}`);
      onUploaded(this.space, this.folder);
    } catch (error) {
      this.fail(error);
    }
  }

  async send() {
    const tus = this.file.size >= RESUMABLE_FROM_BYTES ? await probeTus() : null;
    if (tus === null) {
      await this.put();
      return 0;
    }
    if (this.file.size > tus.maxSize) {
      throw new ApiError(413, "too_large", `${formatBytes(this.file.size)} is over `
        + `the server's limit of ${formatBytes(tus.maxSize)}`);
    }
    const upload = new TusUpload(this.file, this.space, this.relPath, tus, {
      onProgress: (sent) => this.progress(sent),
      onRetry: (error, delayMs) => this.retrying(error, delayMs),
      createOnly: !this.replace,
    });
    this.cancel = () => upload.cancel();
    await upload.run();
    return upload.resumedFrom;
  }

  async put() {
    const headers = { "Content-Type": "application/octet-stream" };
    if (!this.replace) {
      headers["If-None-Match"] = "*";
    }
    const attempt = () => sendXhr("PUT", spaceUrl(this.space, "files", this.relPath), {
      headers: { ...headers, Authorization: authorization() },
      body: this.file,
      onUpload: (sent) => this.progress(sent),
      register: (abort) => {
        this.cancel = abort;
      },
    });
    let xhr = await attempt();
    if (xhr.status === 401) {
      await refreshNow();
      xhr = await attempt();
    }
    if (xhr.status !== 200 && xhr.status !== 201) {
      throw errorFromText(xhr.status, xhr.responseText);
    }
  }

  progress(sent) {
    const now = performance.now();
    this.bar.value = Math.min(sent, this.bar.max);
    this.samples.push([now, sent]);
    while (this.samples.length > 2 && now - this.samples[0][0] > SPEED_WINDOW_MS) {
      this.samples.shift();
    }
    if (now - this.lastStatusAt < STATUS_EVERY_MS) {
      return;
    }
    this.lastStatusAt = now;
    const done = `${formatBytes(sent)} of ${formatBytes(this.file.size)}`;
    const [t0, b0] = this.samples[0];
    if (now - t0 < MIN_SPEED_SPAN_MS || sent <= b0) {
      this.status.textContent = `${done} · measuring speed`;
      return;
    }
    const perSecond = ((sent - b0) * 1000) / (now - t0);
    const left = formatDuration((this.file.size - sent) / perSecond);
    this.status.textContent = `${done} · ${formatBytes(perSecond)}/s · ${left} left`;
  }

  retrying(error, delayMs) {
    const why = error.status === 0 ? "Connection lost" : `Interrupted (${error.detail})`;
    this.status.textContent = `${why}; trying again in ${formatDuration(delayMs / 1000)}…`;
    this.samples = [];
  }

  fail(error) {
    if (isCancelled(error)) {
      this.setState("cancelled", "Cancelled");
      return;
    }
    const detail = error instanceof ApiError ? error.detail : String(error);
    const taken = error.status === 412;
    const message = taken ? "A file with this name is already here." : `Failed: ${detail}`;
    this.setState("failed", message);
    this.status.classList.add("error");
    this.showActions(taken);
    announce(`Upload of ${this.file.name} failed: ${detail}`, "error");
  }

  setState(state, text) {
    this.row.dataset.state = state;
    this.status.textContent = text;
    this.status.classList.remove("error");
    this.showActions();
  }

  showActions(offerReplace = false) {
    const state = this.row.dataset.state;
    const buttons = [];
    if (state === "queued" || state === "sending") {
      buttons.push(button("Cancel", `Cancel upload of ${this.file.name}`, () => this.stop()));
    }
    if (offerReplace) {
      buttons.push(button("Replace", `Replace the existing ${this.file.name}`, () => {
        this.replace = true;
        this.requeue();
      }));
    } else if (state === "failed") {
      buttons.push(button("Retry", `Retry upload of ${this.file.name}`, () => this.requeue()));
    }
    if (["done", "failed", "cancelled"].includes(state)) {
      buttons.push(button("Remove", `Remove ${this.file.name} from the list`, () => {
        this.row.remove();
        byId("uploads").hidden = byId("upload-list").childElementCount === 0;
      }));
    }
    this.actions.replaceChildren(...buttons);
  }

  stop() {
    const index = queue.indexOf(this);
    if (index >= 0) {
      queue.splice(index, 1);
    }
    this.setState("cancelled", "Cancelled");
    this.cancel?.();
  }

  requeue() {
    this.setState("queued", "Waiting");
    queue.push(this);
    pump();
  }
}

function button(text, label, onClick) {
  return h("button", { type: "button", class: "small", text, "aria-label": label,
    on: { click: onClick } });
}
