// The page's entry point: sign-in, the sections, and which view the address
// (its #fragment) shows. Addresses: #files/SPACE/PATH, #shares, #admin.

import { initAdmin, showAdmin } from "./admin.js";
import { announce, byId } from "./dom.js";
import { initFiles, parseFolderHash, refreshIfShown, resetFiles, showFolder } from "./files.js";
import { initShares, resetShares, sharesAvailable, showShares } from "./shares.js";
import {
  currentSession, hasScope, onSessionChange, restoreSession, signIn, signOut,
} from "./session.js";
import { pruneRememberedUploads } from "./tus.js";
import {
  cancelAllUploads, clearFinishedUploads, hasActiveUploads, onUploadFinished,
} from "./uploads.js";

const VIEWS = ["view-sign-in", "view-files", "view-shares", "view-admin"];

function showView(id, focus) {
  for (const view of VIEWS) {
    byId(view).hidden = view !== id;
  }
  for (const link of byId("sections").querySelectorAll("a")) {
    const current = link.id === `nav-${id.replace("view-", "")}`;
    if (current) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
  // After a navigation the heading takes the focus, so a screen reader
  // announces where the person landed and Tab continues from there.
  if (focus) {
    byId(id).querySelector("h1")?.focus();
  }
}

async function route(focus = true) {
  if (currentSession() === null) {
    showView("view-sign-in", false);
    byId("sign-in-user").focus();
    return;
  }
  const hash = window.location.hash;
  try {
    if (hash === "#shares") {
      showView("view-shares", focus);
      await showShares();
    } else if (hash === "#admin" && hasScope("admin")) {
      showView("view-admin", focus);
      await showAdmin();
    } else {
      showView("view-files", focus);
      await showFolder(hash.startsWith("#files") ? parseFolderHash(hash) : null);
    }
  } catch (error) {
    announce(error.detail || String(error), "error");
  }
}

async function onSignIn(event) {
  event.preventDefault();
  const form = event.target;
  const error = byId("sign-in-error");
  const button = byId("sign-in-submit");
  error.textContent = "";
  button.disabled = true;
  try {
    await signIn(form.elements.username.value.trim(), form.elements.password.value);
    form.reset();
  } catch (problem) {
    error.textContent = problem.status === 401
      ? "That user name and password do not match."
      : problem.detail || String(problem);
  } finally {
    button.disabled = false;
  }
}

async function onSessionChanged(session, message) {
  byId("account").hidden = session === null;
  byId("sections").hidden = session === null;
  if (session === null) {
    resetFiles();
    resetShares();
    if (message) {
      byId("sign-in-error").textContent = message;
    }
    await route(false);
    return;
  }
  byId("account-name").textContent = `${session.name} (${session.role})`;
  byId("nav-admin").hidden = !hasScope("admin");
  byId("nav-shares").hidden = true;
  sharesAvailable().then((available) => {
    byId("nav-shares").hidden = !available;
  });
  await route(true);
}

async function onSignOut() {
  if (hasActiveUploads()) {
    cancelAllUploads();
    announce("Signing out cancelled the uploads that were still running.", "error");
  }
  await signOut();
}

async function start() {
  byId("sign-in-form").addEventListener("submit", onSignIn);
  byId("sign-out").addEventListener("click", onSignOut);
  byId("clear-uploads").addEventListener("click", clearFinishedUploads);
  window.addEventListener("hashchange", () => route(true));
  window.addEventListener("beforeunload", (event) => {
    if (hasActiveUploads()) {
      event.preventDefault();
    }
  });
  initFiles();
  initShares();
  initAdmin();
  onUploadFinished(refreshIfShown);
  onSessionChange(onSessionChanged);
  pruneRememberedUploads();
  const restored = await restoreSession();
  if (restored === "copied") {
    byId("sign-in-error").textContent = "This tab is a copy of another open tab. "
      + "Sign in again here, or keep using the other tab.";
  }
  if (restored !== "restored") {
    await route(false);
  }
}

start();
