// Calls to the Strongroom API with the session's bearer token.
//
// Every call goes to this origin (the CSP allows no other), carries the token
// in the Authorization header, and on a 401 for an expired token refreshes once
// and tries again. A refusal becomes an ApiError holding the problem's detail.

import { ApiError, connectionError, errorFromResponse } from "./errors.js";
import { authorization, refreshNow } from "./session.js";

export const API = "/api/v1";

/** Percent-encode a space-relative path one segment at a time. */
export function encodePath(relPath) {
  return relPath.split("/").filter(Boolean).map(encodeURIComponent).join("/");
}

/** The URL of `route` (files, list, dirs, meta, archive, import) for a path. */
export function spaceUrl(space, route, relPath = "") {
  const tail = encodePath(relPath);
  const base = `${API}/spaces/${encodeURIComponent(space)}/${route}`;
  return tail ? `${base}/${tail}` : base;
}

/**
 * Send a request and return the Response; throw ApiError unless it is a 2xx.
 *
 * `options.json` is sent as a JSON body; `options.body` as is.
 */
export async function call(method, url, options = {}) {
  let response = await send(method, url, options);
  if (response.status === 401 && authorization() !== null) {
    await refreshNow();
    response = await send(method, url, options);
  }
  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  return response;
}

/** Like `call`, and decode the answer's JSON. */
export async function callJson(method, url, options = {}) {
  const response = await call(method, url, options);
  return response.status === 204 ? null : response.json();
}

/**
 * Tell whether an error means the route is not on this server (yet); only for
 * routes that take no path, where nothing else answers 404.
 */
export function isMissingRoute(error) {
  return error instanceof ApiError && error.status === 404;
}

async function send(method, url, options) {
  const headers = { ...(options.headers || {}) };
  const token = authorization();
  if (token !== null) {
    headers.Authorization = token;
  }
  let body = options.body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  }
  try {
    return await fetch(url, { method, headers, body, cache: "no-store" });
  } catch {
    throw connectionError();
  }
}
