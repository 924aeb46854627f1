// The folder view: spaces, breadcrumbs, the listing (paged, sortable), and the
// actions on entries: download, zip, rename or move, share, delete.

import { API, call, callJson, encodePath, spaceUrl } from "./api.js";
import { confirmDialog, promptDialog } from "./dialogs.js";
import { announce, baseName, byId, formatBytes, formatDate, h, joinPath, saveBlob,
  visibleText } from "./dom.js";
import { importArchive } from "./importer.js";
import { hasScope } from "./session.js";
import { shareDialog, sharesAvailable } from "./shares.js";
import { uploadFiles } from "./uploads.js";

// Entries per listing request: several screenfuls, and an answer of a few
// tens of KiB; the server allows up to 5,000.
const PAGE_SIZE = 200;
// Uploads finishing close together refresh the listing once.
const REFRESH_DELAY_MS = 300;
const COLLATOR = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

const view = {
  spaces: null,
  space: null,
  path: "",
  entries: [],
  cursor: null,
  complete: false,
  loading: null,
  generation: 0,
  sort: { key: "name", ascending: true },
  canWrite: false,
  canShare: false,
};
let refreshTimer = null;

/** The page address (fragment) of a folder. */
export function folderHash(space, relPath = "") {
  return `#files/${encodeURIComponent(space)}/${encodePath(relPath)}`;
}

/** Read {space, path} from a `#files/...` fragment; null for plain `#files`. */
export function parseFolderHash(hash) {
  const rest = hash.replace(/^#files\/?/, "");
  if (!rest) {
    return null;
  }
  try {
    const [space, ...parts] = rest.split("/").map(decodeURIComponent);
    return { space, path: parts.filter(Boolean).join("/") };
  } catch {
    return null;
  }
}

/** Wire the folder view's controls; called once. */
export function initFiles() {
  byId("upload-button").addEventListener("click", () => byId("upload-input").click());
  byId("upload-input").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    if (writableFolderShown()) {
      uploadFiles(view.space, view.path, files);
    }
  });
  byId("import-button").addEventListener("click", () => byId("import-input").click());
  byId("import-input").addEventListener("change", async (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file && writableFolderShown() && (await importArchive(view.space, view.path, file))) {
      reloadFolder();
    }
  });
  byId("new-folder-button").addEventListener("click", newFolder);
  byId("zip-button").addEventListener("click", () => downloadZip(view.path));
  byId("share-folder-button").addEventListener("click", () => {
    shareDialog(view.space, view.path);
  });
  byId("load-more").addEventListener("click", () => loadPage());
  byId("load-all").addEventListener("click", loadAll);
  for (const header of byId("entries").querySelectorAll("th[data-sort]")) {
    header.querySelector("button").addEventListener("click", () => sortBy(header.dataset.sort));
  }
  byId("sort-select").addEventListener("change", (event) => {
    const [key, direction] = event.target.value.split(":");
    view.sort = { key, ascending: direction === "asc" };
    renderEntries();
  });
  watchListEnd();
  initDropZone();
}

/** The spaces this account may use, asked once per sign-in. */
export async function listSpaces() {
  if (view.spaces === null) {
    view.spaces = await callJson("GET", `${API}/spaces`);
  }
  return view.spaces;
}

/** Forget everything about the signed-in account (at sign-out). */
export function resetFiles() {
  view.spaces = null;
  view.space = null;
  view.canWrite = false;
  view.canShare = false;
  view.generation += 1;
  renderWriteActions();
  byId("entry-rows").replaceChildren();
  byId("space-list").replaceChildren();
}

/** Show `relPath` of `space` (the first space when `target` is null). */
export async function showFolder(target) {
  const spaces = await listSpaces();
  renderSpaces(spaces, target?.space);
  const space = spaces.find((item) => item.name === target?.space);
  if (space === undefined) {
    const first = spaces.find((item) => item.kind === "home") || spaces[0];
    if (first !== undefined) {
      window.location.replace(folderHash(first.name));
    } else {
      byId("folder-title").textContent = "No spaces";
    }
    return;
  }
  view.space = space.name;
  view.path = target.path;
  view.canWrite = space.mode === "rw" && hasScope("files:write");
  view.canShare = hasScope("shares") && (await sharesAvailable());
  renderSpaces(spaces, space.name);
  renderHeading(space);
  await reloadFolder();
}

/** Reload the listing if `folder` of `space` is on screen (after an upload). */
export function refreshIfShown(space, folder) {
  if (space !== view.space || folder !== view.path) {
    return;
  }
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(reloadFolder, REFRESH_DELAY_MS);
}

function reloadFolder() {
  view.generation += 1;
  view.entries = [];
  view.cursor = null;
  view.complete = false;
  view.loading = null;
  byId("list-status").textContent = "Loading…";
  return loadPage();
}

function loadPage() {
  if (view.loading !== null || view.complete) {
    return view.loading ?? Promise.resolve();
  }
  const generation = view.generation;
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (view.cursor !== null) {
    query.set("cursor", view.cursor);
  }
  const url = `${spaceUrl(view.space, "list", view.path)}?${query}`;
  const loading = callJson("GET", url).then((page) => {
    if (generation === view.generation) {
      view.entries.push(...page.entries);
      view.cursor = page.next_cursor;
      view.complete = page.next_cursor === null;
      renderEntries();
    }
  }, (error) => {
    if (generation === view.generation) {
      byId("list-status").textContent = `This folder could not be listed: ${error.detail}`;
    }
  }).finally(() => {
    if (view.loading === loading) {
      view.loading = null;
    }
  });
  view.loading = loading;
  return loading;
}

async function loadAll() {
  while (!view.complete) {
    const generation = view.generation;
    await loadPage();
    if (generation !== view.generation || view.loading !== null) {
      return;
    }
  }
}

function renderSpaces(spaces, current) {
  const items = spaces.map((space) => {
    const link = h("a", { href: folderHash(space.name) },
      h("span", { text: space.name }),
      h("span", { class: "muted", text: space.mode === "ro" ? " (read-only)" : "" }));
    if (space.name === current) {
      link.setAttribute("aria-current", "true");
    }
    return h("li", {}, link);
  });
  byId("space-list").replaceChildren(...items);
}

function renderHeading(space) {
  const parts = view.path.split("/").filter(Boolean);
  const crumbs = [h("li", {}, h("a", { href: folderHash(space.name), text: space.name }))];
  parts.forEach((part, index) => {
    const link = h("a", { href: folderHash(space.name, parts.slice(0, index + 1).join("/")),
      text: part });
    crumbs.push(h("li", {}, link));
  });
  crumbs[crumbs.length - 1].firstChild.setAttribute("aria-current", "page");
  byId("crumbs").replaceChildren(...crumbs);
  byId("folder-title").textContent = visibleText(baseName(view.path) || space.name);
  const access = space.mode === "rw" ? "read and write" : "read-only";
  byId("space-mode").textContent = `${space.kind === "home" ? "Your private space" : "Shared folder"}, ${access}`;
  renderWriteActions();
}

/**
 * Show the write and share actions only where they can work. They start
 * hidden, so nothing can be sent before the page knows its space.
 */
function renderWriteActions() {
  for (const node of document.querySelectorAll(".write-only")) {
    node.hidden = !view.canWrite;
  }
  byId("share-folder-button").hidden = !view.canShare || view.path === "";
}

/** True when a folder of a known, writable space is on screen. */
function writableFolderShown() {
  return view.space !== null && view.canWrite;
}

function renderEntries() {
  const sorted = [...view.entries].sort(compareEntries);
  byId("entry-rows").replaceChildren(...sorted.map(entryRow));
  for (const header of byId("entries").querySelectorAll("th[data-sort]")) {
    if (header.dataset.sort === view.sort.key) {
      header.setAttribute("aria-sort", view.sort.ascending ? "ascending" : "descending");
    } else {
      header.removeAttribute("aria-sort");
    }
  }
  byId("sort-select").value = `${view.sort.key}:${view.sort.ascending ? "asc" : "desc"}`;
  const count = view.entries.length;
  byId("entries").hidden = count === 0;
  const noun = count === 1 ? "item" : "items";
  byId("list-status").textContent = count === 0 && view.complete
    ? "This folder is empty."
    : `${count} ${noun}${view.complete ? "" : " shown; more below"}`;
  byId("load-more").hidden = view.complete;
  const nameOrder = view.sort.key === "name" && view.sort.ascending;
  byId("load-all").hidden = view.complete || nameOrder;
}

function compareEntries(a, b) {
  const folders = Number(b.kind === "dir") - Number(a.kind === "dir");
  if (folders !== 0) {
    return folders;
  }
  let order = 0;
  if (view.sort.key === "size") {
    order = a.size - b.size;
  } else if (view.sort.key === "modified") {
    order = a.modified < b.modified ? -1 : Number(a.modified > b.modified);
  }
  order = order || COLLATOR.compare(a.name, b.name);
  return view.sort.ascending ? order : -order;
}

function sortBy(key) {
  const same = view.sort.key === key;
  view.sort = { key, ascending: same ? !view.sort.ascending : true };
  renderEntries();
}

function entryRow(entry) {
  const isDir = entry.kind === "dir";
  const label = h("span", { class: "entry-name" },
    h("span", { class: `kind-icon ${isDir ? "dir" : "file"}`, "aria-hidden": "true" }),
    h("span", { text: entry.name }));
  const name = isDir
    ? h("a", { href: folderHash(view.space, entry.path), class: "entry-link" }, label)
    : label;
  return h("tr", { dataset: { kind: entry.kind } },
    h("th", { scope: "row", class: "name-cell" }, name,
      entry.kind !== "file" && !isDir ? h("span", { class: "muted", text: ` (${entry.kind})` }) : null),
    h("td", { class: "num", "data-label": "Size", text: isDir ? "—" : formatBytes(entry.size) }),
    h("td", { "data-label": "Modified" },
      h("time", { datetime: entry.modified, text: formatDate(entry.modified) })),
    h("td", { class: "row-actions" }, ...entryActions(entry)));
}

function entryActions(entry) {
  const actions = [];
  const add = (text, what, handler) => actions.push(h("button", {
    type: "button", class: "small", text, "aria-label": `${what} ${entry.name}`,
    on: { click: handler },
  }));
  if (entry.kind === "file") {
    add("Download", "Download", () => downloadFile(entry));
  } else if (entry.kind === "dir") {
    add("Zip", "Download as zip:", () => downloadZip(entry.path));
  }
  if (view.canWrite) {
    add("Rename", "Rename or move", () => renameEntry(entry));
  }
  if (view.canShare && (entry.kind === "file" || entry.kind === "dir")) {
    add("Share", "Share", () => shareDialog(view.space, entry.path));
  }
  if (view.canWrite) {
    add("Delete", "Delete", () => deleteEntry(entry));
  }
  return actions;
}

async function downloadFile(entry) {
  announce(`Downloading ${entry.name}…`);
  try {
    const response = await call("GET", spaceUrl(view.space, "files", entry.path));
    saveBlob(await response.blob(), entry.name);
  } catch (error) {
    announce(`${entry.name} could not be downloaded: ${error.detail}`, "error");
  }
}

async function downloadZip(relPath) {
  const name = `${baseName(relPath) || view.space}.zip`;
  announce(`Preparing ${name}…`);
  try {
    const response = await call("GET", spaceUrl(view.space, "archive", relPath));
    saveBlob(await response.blob(), name);
  } catch (error) {
    announce(`${name} could not be downloaded: ${error.detail}`, "error");
  }
}

async function newFolder() {
  const space = view.space;
  const created = await promptDialog({
    title: "New folder",
    label: "Folder name",
    confirmLabel: "Create",
    hint: "A name like “reports/2025” makes the folders in between too.",
    action: async (name) => {
      if (!name) {
        throw new Error("Enter a name for the folder.");
      }
      return callJson("POST", spaceUrl(space, "dirs", joinPath(view.path, name)));
    },
  });
  if (created !== null) {
    announce(`Folder ${created.filename} created.`);
    reloadFolder();
  }
}

async function renameEntry(entry) {
  const space = view.space;
  const moved = await promptDialog({
    title: `Rename or move ${entry.name}`,
    label: "New path in this space",
    value: entry.path,
    confirmLabel: "Rename",
    hint: "Change the last part to rename; change the folders before it to move. "
      + "The folders must exist; nothing is replaced.",
    action: async (to) => {
      if (!to) {
        throw new Error("Enter the new path.");
      }
      return callJson("POST", spaceUrl(space, "move"), { json: { from: entry.path, to } });
    },
  });
  if (moved !== null) {
    announce(`${entry.name} is now ${moved.path}.`);
    reloadFolder();
  }
}

async function deleteEntry(entry) {
  const isDir = entry.kind === "dir";
  const sure = await confirmDialog({
    title: `Delete ${entry.name}?`,
    message: isDir
      ? "Only an empty folder can be deleted. This cannot be undone."
      : "The file is removed for good. This cannot be undone.",
    confirmLabel: "Delete",
    danger: true,
  });
  if (!sure) {
    return;
  }
  try {
    await call("DELETE", spaceUrl(view.space, "files", entry.path));
  } catch (error) {
    announce(`${entry.name} was not deleted: ${error.detail}`, "error");
    return;
  }
  view.entries = view.entries.filter((item) => item.path !== entry.path);
  renderEntries();
  announce(`${entry.name} deleted.`);
}

function watchListEnd() {
  if (!("IntersectionObserver" in window)) {
    return;
  }
  const observer = new IntersectionObserver((seen) => {
    if (seen.some((item) => item.isIntersecting) && !view.complete && view.space) {
      loadPage();
    }
  }, { rootMargin: "400px" });
  observer.observe(byId("list-end"));
}

function initDropZone() {
  const zone = byId("drop-zone");
  const carriesFiles = (event) => event.dataTransfer?.types?.includes("Files");
  // Outside the zone a dropped file must not make the browser open it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
  zone.addEventListener("dragover", (event) => {
    if (carriesFiles(event)) {
      event.preventDefault();
      event.dataTransfer.dropEffect = view.canWrite ? "copy" : "none";
      zone.classList.add("dragging");
    }
  });
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) {
      zone.classList.remove("dragging");
    }
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    dropFiles(event.dataTransfer);
  });
}

function dropFiles(transfer) {
  if (!writableFolderShown()) {
    announce("This folder is read-only; nothing was uploaded.", "error");
    return;
  }
  const folders = [...(transfer.items || [])]
    .filter((item) => item.webkitGetAsEntry?.()?.isDirectory);
  if (folders.length > 0) {
    announce("Folders cannot be dropped here; zip the folder and use Import archive.",
      "error");
  }
  const files = [...transfer.files].filter((file, index) => {
    const entry = transfer.items?.[index]?.webkitGetAsEntry?.();
    return !entry?.isDirectory;
  });
  if (files.length > 0) {
    uploadFiles(view.space, view.path, files);
  }
}
