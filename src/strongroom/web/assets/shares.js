// Share links: create one (with a copy button), list yours, revoke one.
//
// The routes may not exist on every server; the first answer of GET /shares
// decides, and a 404 there hides every share control instead of failing.

import { API, callJson, isMissingRoute } from "./api.js";
import { KEEP_OPEN, confirmDialog, openDialog } from "./dialogs.js";
import { announce, byId, formatDate, h } from "./dom.js";
import { hasScope } from "./session.js";

let available = null;

/** Tell whether this server has share links and this token may use them. */
export function sharesAvailable() {
  if (!hasScope("shares")) {
    return Promise.resolve(false);
  }
  if (available === null) {
    available = callJson("GET", `${API}/shares`).then(() => true, (error) => {
      if (!isMissingRoute(error)) {
        available = null;
      }
      return false;
    });
  }
  return available;
}

/** Forget what was learnt about the server (at sign-out). */
export function resetShares() {
  available = null;
  byId("share-rows").replaceChildren();
}

/** Open the dialog that creates a link to `relPath` of `space`. */
export async function shareDialog(space, relPath) {
  const dialog = byId("dlg-share");
  byId("dlg-share-title").textContent = "Share a link";
  byId("dlg-share-target").textContent = `${space}: ${relPath}`;
  byId("share-password").value = "";
  byId("share-max").value = "";
  showPhase(false);
  await openDialog(dialog, byId("share-expires"), async () => {
    const created = await callJson("POST", `${API}/spaces/${encodeURIComponent(space)}/shares`,
      { json: shareRequest(relPath) });
    byId("share-url").value = new URL(created.url, window.location.origin).href;
    showPhase(true);
    byId("share-copy").focus();
    return KEEP_OPEN;
  });
}

/** Fill the share links view. */
export async function showShares() {
  const status = byId("shares-status");
  status.textContent = "Loading…";
  let answer;
  try {
    answer = await callJson("GET", `${API}/shares`);
  } catch (error) {
    byId("share-rows").replaceChildren();
    status.textContent = isMissingRoute(error)
      ? "This server does not offer share links yet."
      : `Your share links could not be listed: ${error.detail}`;
    return;
  }
  byId("share-rows").replaceChildren(...answer.shares.map(shareRow));
  status.textContent = answer.shares.length === 0
    ? "You have no share links. Use Share next to a file or folder to make one."
    : `${answer.shares.length} link${answer.shares.length === 1 ? "" : "s"}, newest first.`;
}

/** Wire the dialog's copy button; called once. */
export function initShares() {
  byId("share-copy").addEventListener("click", copyLink);
}

function shareRequest(relPath) {
  const body = { path: relPath, expires_in: Number(byId("share-expires").value) };
  const password = byId("share-password").value;
  const most = byId("share-max").value.trim();
  if (password) {
    body.password = password;
  }
  if (most) {
    const count = Number(most);
    if (!Number.isInteger(count) || count < 1) {
      throw new Error("Most downloads must be a whole number of at least 1.");
    }
    body.max_downloads = count;
  }
  return body;
}

function showPhase(created) {
  byId("dlg-share-options").hidden = created;
  byId("dlg-share-result").hidden = !created;
  byId("share-create").hidden = created;
  byId("share-close").textContent = created ? "Done" : "Cancel";
  byId("share-copied").textContent = "";
}

async function copyLink() {
  const field = byId("share-url");
  const said = byId("share-copied");
  try {
    await navigator.clipboard.writeText(field.value);
    said.textContent = "Copied.";
  } catch {
    // No clipboard access (a page served over plain HTTP from another host).
    field.focus();
    field.select();
    said.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}

function shareRow(share) {
  const expired = new Date(share.expires_at).getTime() < Date.now();
  const used = share.max_downloads === null
    ? String(share.downloads)
    : `${share.downloads} of ${share.max_downloads}`;
  let state = share.revoked ? "Revoked" : expired ? "Expired" : "Active";
  if (share.has_password) {
    state += ", password";
  }
  const what = `${share.space}: ${share.path}${share.kind === "dir" ? "/" : ""}`;
  const revoke = share.revoked ? null : h("button", {
    type: "button", class: "small", text: "Revoke",
    "aria-label": `Revoke the link to ${what}`,
    on: { click: () => revokeShare(share, what) },
  });
  return h("tr", {},
    h("th", { scope: "row", class: "name-cell" }, h("span", { class: "entry-name", text: what })),
    h("td", { "data-label": "Expires" },
      h("time", { datetime: share.expires_at, text: formatDate(share.expires_at) })),
    h("td", { class: "num", "data-label": "Downloads", text: used }),
    h("td", { "data-label": "State", text: state }),
    h("td", { class: "row-actions" }, revoke));
}

async function revokeShare(share, what) {
  const sure = await confirmDialog({
    title: "Revoke this link?",
    message: `The link to ${what} stops working at once, for everyone who has it.`,
    confirmLabel: "Revoke",
    danger: true,
  });
  if (!sure) {
    return;
  }
  try {
    await callJson("DELETE", `${API}/shares/${encodeURIComponent(share.id)}`);
    announce(`The link to ${what} is revoked.`);
  } catch (error) {
    announce(`The link was not revoked: ${error.detail}`, "error");
  }
  await showShares();
}
