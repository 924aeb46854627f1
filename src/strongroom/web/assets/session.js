// The signed-in session: tokens, their refresh, and sign-out.
//
// Tokens live in this module and in sessionStorage (so a reload keeps the
// session, and closing the tab forgets it); never in localStorage or a cookie.
// The access token is refreshed shortly before it expires. The server takes a
// refresh token used twice as stolen and ends the whole session, so two tabs
// must never hold the same refresh token: a browser that duplicates a tab
// copies its sessionStorage, and the copy asks the other tabs, over a
// BroadcastChannel, whether one of them already holds this session. If one
// answers, the copy drops its tokens and asks for a new sign-in.

import { ApiError, connectionError, errorFromResponse } from "./errors.js";

const STORAGE_KEY = "strongroom.session";
const CHANNEL_NAME = "strongroom.session";
// Refresh this long before expiry (or a fifth of the lifetime, if shorter), so
// a request started just before the refresh still carries a valid token.
const REFRESH_MARGIN_SECONDS = 60;
// A failed refresh (no network) is tried again after this long.
const REFRESH_RETRY_SECONDS = 15;
// How long a restored tab waits for another tab to claim its session: the
// answer is a local message between tabs, well under this.
const TAB_COPY_WAIT_MS = 150;

let state = null;
let refreshTimer = null;
let refreshing = null;
const listeners = new Set();
const channel = "BroadcastChannel" in window ? new BroadcastChannel(CHANNEL_NAME) : null;

channel?.addEventListener("message", (event) => {
  if (state !== null && event.data?.ask === state.sid) {
    channel.postMessage({ holds: state.sid });
  }
});

/** The session ({name, role, scopes, ...}) or null when signed out. */
export function currentSession() {
  return state;
}

/** Tell whether the session's token carries `scope`. */
export function hasScope(scope) {
  return state !== null && state.scopes.includes(scope);
}

/** Call `listener(session, message)` whenever the session starts or ends. */
export function onSessionChange(listener) {
  listeners.add(listener);
}

/** The Authorization header value, or null when signed out. */
export function authorization() {
  return state === null ? null : `Bearer ${state.access}`;
}

/** Sign in with the password flow; throws ApiError when refused. */
export async function signIn(username, password) {
  const tokens = await postForm("/api/v1/token", { username, password });
  const fresh = fromTokens(tokens, randomId());
  await describeAccount(fresh);
  state = fresh;
  save();
  schedule();
  notify(null);
}

/** End the session on the server (both its tokens) and here. */
export async function signOut(message = null) {
  const held = state;
  forget();
  notify(message);
  if (held === null) {
    return;
  }
  try {
    await fetch("/api/v1/logout", {
      method: "POST",
      headers: { Authorization: `Bearer ${held.access}` },
    });
  } catch {
    // Offline: the tokens are gone from this tab and expire on their own.
  }
}

/** Get a new access token now; concurrent callers share one refresh. */
export function refreshNow() {
  if (refreshing === null) {
    refreshing = refresh().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/**
 * Restore the tab's session after a reload. Returns "restored", "none", or
 * "copied" when another open tab already holds this session.
 */
export async function restoreSession() {
  const saved = readSaved();
  if (saved === null) {
    return "none";
  }
  if (await isHeldElsewhere(saved.sid)) {
    sessionStorage.removeItem(STORAGE_KEY);
    return "copied";
  }
  state = saved;
  try {
    if (Date.now() > saved.expiresAt - marginMs(saved)) {
      await refreshNow();
    }
  } catch {
    return state === null ? "none" : "restored";
  }
  schedule();
  notify(null);
  return "restored";
}

async function refresh() {
  const held = state;
  if (held === null) {
    throw new ApiError(401, "signed_out", "you are signed out");
  }
  let tokens;
  try {
    tokens = await postForm("/api/v1/token/refresh", { refresh_token: held.refresh });
  } catch (error) {
    if (error.status === 400 || error.status === 401) {
      forget();
      notify("Your session has ended. Please sign in again.");
    } else {
      scheduleIn(REFRESH_RETRY_SECONDS * 1000);
    }
    throw error;
  }
  if (state !== held) {
    return;
  }
  state = { ...fromTokens(tokens, held.sid), name: held.name, role: held.role };
  save();
  schedule();
}

async function describeAccount(session) {
  const response = await fetch("/api/v1/account", {
    headers: { Authorization: `Bearer ${session.access}` },
  });
  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  const account = await response.json();
  session.name = account.name;
  session.role = account.role;
  session.scopes = account.scopes;
}

async function postForm(url, fields) {
  let response;
  try {
    response = await fetch(url, { method: "POST", body: new URLSearchParams(fields) });
  } catch {
    throw connectionError();
  }
  if (!response.ok) {
    throw await errorFromResponse(response);
  }
  return response.json();
}

function fromTokens(tokens, sid) {
  return {
    access: tokens.access_token,
    refresh: tokens.refresh_token,
    expiresAt: Date.now() + tokens.expires_in * 1000,
    lifetimeMs: tokens.expires_in * 1000,
    scopes: String(tokens.scope || "").split(" ").filter(Boolean),
    sid,
  };
}

function schedule() {
  if (state !== null) {
    scheduleIn(state.expiresAt - marginMs(state) - Date.now());
  }
}

function scheduleIn(delayMs) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    refreshNow().catch(() => {});
  }, Math.max(1000, delayMs));
}

function marginMs(session) {
  return Math.min(REFRESH_MARGIN_SECONDS * 1000, session.lifetimeMs / 5);
}

function forget() {
  clearTimeout(refreshTimer);
  state = null;
  sessionStorage.removeItem(STORAGE_KEY);
}

function notify(message) {
  for (const listener of listeners) {
    listener(state, message);
  }
}

function save() {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(state));
}

function readSaved() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    return saved && typeof saved.access === "string" ? saved : null;
  } catch {
    return null;
  }
}

function isHeldElsewhere(sid) {
  if (channel === null) {
    return Promise.resolve(false);
  }
  return new Promise((resolve) => {
    const onMessage = (event) => {
      if (event.data?.holds === sid) {
        finish(true);
      }
    };
    const finish = (held) => {
      channel.removeEventListener("message", onMessage);
      clearTimeout(timer);
      resolve(held);
    };
    const timer = setTimeout(() => finish(false), TAB_COPY_WAIT_MS);
    channel.addEventListener("message", onMessage);
    channel.postMessage({ ask: sid });
  });
}

function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}
