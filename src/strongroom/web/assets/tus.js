// A tus 1.0.0 client for /api/v1/uploads (core, creation, termination,
// checksum), sending a file in chunks so that it survives a dropped connection
// or a page reload.
//
// Design note. The obvious client sends the whole file in one PATCH and, after
// a failure, asks the server for the offset and sends the rest. That is what
// the protocol allows, but one long request shows no checksum until the very
// end and, with the checksum extension, a cut request loses everything it
// carried. So the file goes in chunks of CHUNK_BYTES, each with its own
// checksum when the server and the browser share an algorithm; after a
// failure the client waits (growing delays, and for the browser to be online
// again), asks for the offset with HEAD, and goes on from there. The upload's
// URL is kept in localStorage under the target, size and modification time of
// the file, so picking the same file again after a reload continues it. What
// we deliberately do not do: upload several chunks of one file in parallel
// (the concatenation extension), or trust a Location on another origin.

import { API } from "./api.js";
import { ApiError, errorFromText } from "./errors.js";
import { authorization, currentSession, refreshNow } from "./session.js";
import { cancelledError, isCancelled, sendXhr } from "./xhr.js";

export const TUS_URL = `${API}/uploads`;
const TUS_VERSION = "1.0.0";
// 4 MiB: a lost chunk costs at most a few seconds on a slow line, and a 2 GiB
// file takes 512 requests, each cheap next to its body.
export const CHUNK_BYTES = 4 * 1024 * 1024;
// Waits between tries after a failure; ten tries span about two minutes.
const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000, 30000, 30000, 30000];
// A chunk with no progress for this long is taken as a silently dead connection.
const STALL_MS = 30_000;
const RESUME_KEY_PREFIX = "strongroom.tus:";
// Remembered uploads older than this are forgotten; the server's own expiry is
// shorter or equal, so nothing still resumable is dropped.
const REMEMBER_MS = 7 * 24 * 3600 * 1000;
// SubtleCrypto names for the tus checksum algorithms we can compute.
const DIGESTS = { sha256: "SHA-256", sha1: "SHA-1" };

let capabilities = null;

/**
 * Ask the server whether it speaks tus here; resolve with {maxSize, checksum}
 * or null (no tus route yet, or another version), asked once per page.
 */
export function probeTus() {
  if (capabilities === null) {
    capabilities = askCapabilities().catch(() => {
      capabilities = null;
      return null;
    });
  }
  return capabilities;
}

/** Forget remembered uploads that are too old to resume. */
export function pruneRememberedUploads() {
  const now = Date.now();
  for (const key of Object.keys(localStorage)) {
    if (key.startsWith(RESUME_KEY_PREFIX)) {
      const saved = readJson(localStorage.getItem(key));
      if (saved === null || !(now - saved.savedAt < REMEMBER_MS)) {
        localStorage.removeItem(key);
      }
    }
  }
}

/**
 * One resumable upload of `file` to `relPath` of `space`. With `createOnly` the
 * server keeps a file that has the name (412, at creation or at the last chunk)
 * instead of replacing it.
 */
export class TusUpload {
  constructor(file, space, relPath, tus, { onProgress, onRetry = () => {}, createOnly = false }) {
    this.file = file;
    this.space = space;
    this.relPath = relPath;
    this.checksum = tus.checksum;
    this.onProgress = onProgress;
    this.onRetry = onRetry;
    this.createOnly = createOnly;
    this.url = null;
    this.offset = 0;
    this.resumedFrom = 0;
    this.cancelled = false;
    this.abortCurrent = null;
    this.key = `${RESUME_KEY_PREFIX}${JSON.stringify([
      currentSession()?.name, space, relPath, file.size, file.lastModified,
    ])}`;
  }

  /** Send the file; resolve when the server holds all of it. */
  async run() {
    await this.open();
    let failures = 0;
    let needsOffset = false;
    while (this.offset < this.file.size) {
      try {
        if (needsOffset) {
          this.offset = await this.askOffset();
          needsOffset = false;
          continue;
        }
        this.offset = await this.sendChunk();
        failures = 0;
      } catch (error) {
        if (error.status === 412) {
          // The name was taken meanwhile: this upload can never finish, and a
          // "Replace" must start a new one rather than resume it.
          await this.cancel();
          throw error;
        }
        if (this.cancelled || !isRetryable(error) || failures >= RETRY_DELAYS_MS.length) {
          throw this.cancelled ? cancelledError() : error;
        }
        this.onRetry(error, RETRY_DELAYS_MS[failures]);
        await pause(RETRY_DELAYS_MS[failures]);
        failures += 1;
        needsOffset = true;
      }
    }
    localStorage.removeItem(this.key);
  }

  /** Stop sending and ask the server to delete what it has (termination). */
  async cancel() {
    this.cancelled = true;
    this.abortCurrent?.();
    localStorage.removeItem(this.key);
    if (this.url !== null) {
      await this.request("DELETE", this.url).catch(() => null);
    }
  }

  async open() {
    const saved = readJson(localStorage.getItem(this.key));
    if (saved !== null && typeof saved.url === "string") {
      this.url = saved.url;
      try {
        this.offset = await this.askOffset();
        this.resumedFrom = this.offset;
        this.onProgress(this.offset);
        return;
      } catch (error) {
        if (!isGone(error)) {
          throw error;
        }
        localStorage.removeItem(this.key);
      }
    }
    await this.create();
  }

  async create() {
    const pairs = [`space ${base64Text(this.space)}`, `path ${base64Text(this.relPath)}`];
    if (this.createOnly) {
      pairs.push(`create_only ${base64Text("1")}`);
    }
    const metadata = pairs.join(",");
    const xhr = await this.request("POST", TUS_URL, {
      "Upload-Length": String(this.file.size),
      "Upload-Metadata": metadata,
    });
    if (xhr.status !== 201) {
      throw errorFromText(xhr.status, xhr.responseText);
    }
    this.url = sameOriginPath(xhr.getResponseHeader("Location"));
    this.offset = 0;
    localStorage.setItem(this.key, JSON.stringify({ url: this.url, savedAt: Date.now() }));
  }

  async askOffset() {
    const xhr = await this.request("HEAD", this.url);
    const offset = Number(xhr.getResponseHeader("Upload-Offset"));
    if (xhr.status !== 200 && xhr.status !== 204) {
      throw errorFromText(xhr.status, xhr.responseText);
    }
    if (!Number.isSafeInteger(offset) || offset < 0 || offset > this.file.size) {
      throw new ApiError(xhr.status, "bad_offset", "the server reported a bad offset");
    }
    return offset;
  }

  async sendChunk() {
    const start = this.offset;
    const chunk = this.file.slice(start, start + CHUNK_BYTES);
    const headers = {
      "Upload-Offset": String(start),
      "Content-Type": "application/offset+octet-stream",
    };
    if (this.checksum !== null) {
      headers["Upload-Checksum"] = await checksumHeader(this.checksum, chunk);
    }
    const xhr = await this.request("PATCH", this.url, headers, chunk, (loaded) => {
      this.onProgress(start + Math.min(loaded, chunk.size));
    });
    if (xhr.status !== 204) {
      throw errorFromText(xhr.status, xhr.responseText);
    }
    const offset = Number(xhr.getResponseHeader("Upload-Offset"));
    if (!Number.isSafeInteger(offset) || offset <= start || offset > this.file.size) {
      throw new ApiError(xhr.status, "bad_offset", "the server reported a bad offset");
    }
    this.onProgress(offset);
    return offset;
  }

  async request(method, url, headers = {}, body = null, onUpload = undefined) {
    if (this.cancelled && method !== "DELETE") {
      throw cancelledError();
    }
    const attempt = () => sendXhr(method, url, {
      headers: { ...headers, "Tus-Resumable": TUS_VERSION, Authorization: authorization() },
      body,
      onUpload,
      stallMs: STALL_MS,
      register: (abort) => {
        this.abortCurrent = abort;
      },
    });
    let xhr = await attempt();
    if (xhr.status === 401) {
      await refreshNow();
      xhr = await attempt();
    }
    return xhr;
  }
}

async function askCapabilities() {
  const response = await fetch(TUS_URL, {
    method: "OPTIONS",
    headers: authorization() ? { Authorization: authorization() } : {},
    cache: "no-store",
  });
  const versions = splitList(response.headers.get("Tus-Version"));
  if (!response.ok || !versions.includes(TUS_VERSION)) {
    return null;
  }
  const algorithms = splitList(response.headers.get("Tus-Checksum-Algorithm"));
  const usable = crypto.subtle ? algorithms.filter((name) => name in DIGESTS) : [];
  const maxSize = Number(response.headers.get("Tus-Max-Size"));
  return {
    maxSize: maxSize > 0 ? maxSize : Infinity,
    checksum: usable.includes("sha256") ? "sha256" : usable[0] || null,
  };
}

function isRetryable(error) {
  if (isCancelled(error)) {
    return false;
  }
  // No answer, a server failure, an offset that moved under us (409), a
  // checksum mismatch (460, the tus checksum extension), a stale token (401).
  return [0, 401, 409, 423, 460, 500, 502, 503, 504].includes(error.status)
    || error.code === "bad_offset";
}

function isGone(error) {
  return error.status === 404 || error.status === 410 || error.status === 403;
}

async function checksumHeader(algorithm, chunk) {
  const digest = await crypto.subtle.digest(DIGESTS[algorithm], await chunk.arrayBuffer());
  return `${algorithm} ${base64Bytes(new Uint8Array(digest))}`;
}

function sameOriginPath(location) {
  if (!location) {
    throw new ApiError(0, "no_location", "the server did not say where the upload is");
  }
  const url = new URL(location, window.location.href);
  if (url.origin !== window.location.origin) {
    // The token must never travel to another origin.
    throw new ApiError(0, "foreign_location", "the server named an upload address "
      + "on another site; refusing to send the file there");
  }
  return url.pathname + url.search;
}

function base64Text(text) {
  return base64Bytes(new TextEncoder().encode(text));
}

function base64Bytes(bytes) {
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary);
}

function splitList(value) {
  return (value || "").split(",").map((item) => item.trim()).filter(Boolean);
}

function readJson(text) {
  try {
    return JSON.parse(text || "null");
  } catch {
    return null;
  }
}

function pause(ms) {
  return new Promise((resolve) => {
    const go = () => {
      window.removeEventListener("online", go);
      resolve();
    };
    setTimeout(() => {
      if (navigator.onLine) {
        go();
      } else {
        window.addEventListener("online", go);
      }
    }, ms);
  });
}

