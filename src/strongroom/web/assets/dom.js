// Small DOM and formatting helpers.
//
// Safety rule for the whole page: text that came from the server or the user
// (file names, paths, messages) only ever reaches the document through
// textContent or a form control's value. `h` has no way to set markup and
// refuses event-handler attributes, so a name such as `<img onerror=...>` is
// shown as the characters it is made of.

const UNSAFE_ATTRIBUTE = /^on|^style$|^srcdoc$/i;
// Invisible characters that change how the text around them is shown: the
// bidirectional controls (an override makes "a\u202Egnp.exe" look like
// "aexe.png"), line and paragraph separators, zero-width space and BOM.
// Joiners (U+200C, U+200D) stay: scripts and emoji need them.
const INVISIBLE_CONTROLS = /[\u061C\u200B\u200E\u200F\u2028\u2029\u202A-\u202E\u2066-\u2069\uFEFF]/g;
// Long enough to read a sentence twice at a slow pace; errors stay until dismissed.
const NOTICE_SECONDS = 8;

/** Return the element with this id (the page's ids are fixed). */
export function byId(id) {
  const found = document.getElementById(id);
  if (found === null) {
    throw new Error(`the page has no element #${id}`);
  }
  return found;
}

/**
 * Return `text` with each invisible control shown as its code point, "[U+202E]",
 * so that a name shows what it is made of. Every text `h` sets goes through it.
 */
export function visibleText(text) {
  return text.replace(INVISIBLE_CONTROLS, (char) =>
    `[U+${char.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")}]`);
}

/**
 * Build an element: `h("button", {class: "link", text: name, on: {click}})`.
 * Children may be nodes or strings (strings become text nodes).
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (key === "text") {
      node.textContent = visibleText(String(value));
    } else if (key === "class") {
      node.className = value;
    } else if (key === "on") {
      for (const [event, handler] of Object.entries(value)) {
        node.addEventListener(event, handler);
      }
    } else if (key === "dataset") {
      Object.assign(node.dataset, value);
    } else if (UNSAFE_ATTRIBUTE.test(key)) {
      throw new Error(`refusing to set attribute ${key}`);
    } else {
      node.setAttribute(key, value === true ? "" : String(value));
    }
  }
  node.append(...children
    .filter((child) => child !== null && child !== undefined)
    .map((child) => (typeof child === "string" ? visibleText(child) : child)));
  return node;
}

/** Remove every child of `node`. */
export function clear(node) {
  node.replaceChildren();
}

const BYTE_UNITS = ["bytes", "KiB", "MiB", "GiB", "TiB"];

/** Format a byte count for people: "1 byte", "12.5 MiB". */
export function formatBytes(count) {
  if (count === 1) {
    return "1 byte";
  }
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const digits = unit === 0 || value >= 100 ? 0 : 1;
  return `${value.toFixed(digits)} ${BYTE_UNITS[unit]}`;
}

const DATE_FORMAT = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium",
  timeStyle: "short",
});

/** Format an RFC 3339 time from the API in the reader's locale. */
export function formatDate(iso) {
  const when = new Date(iso);
  return Number.isNaN(when.getTime()) ? iso : DATE_FORMAT.format(when);
}

/** Format a duration in seconds as "45 s", "3 min 20 s", "2 h 5 min". */
export function formatDuration(seconds) {
  if (!Number.isFinite(seconds)) {
    return "unknown";
  }
  const whole = Math.max(0, Math.round(seconds));
  if (whole < 60) {
    return `${whole} s`;
  }
  if (whole < 3600) {
    return `${Math.floor(whole / 60)} min ${whole % 60} s`;
  }
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`;
}

/** Return the last segment of a slash-separated path. */
export function baseName(relPath) {
  const parts = relPath.split("/").filter(Boolean);
  return parts.length ? parts[parts.length - 1] : "";
}

/** Join folder and name into a space-relative path. */
export function joinPath(folder, name) {
  return folder ? `${folder}/${name}` : name;
}

/** Show a short message in the page's status region. */
export function announce(message, kind = "info") {
  const region = byId("notice");
  const line = h("p", { class: `notice ${kind}`, text: message });
  const close = h("button", {
    type: "button",
    class: "quiet",
    text: "Dismiss",
    "aria-label": "Dismiss message",
    on: { click: () => line.remove() },
  });
  line.append(" ", close);
  region.prepend(line);
  while (region.childElementCount > 3) {
    region.lastElementChild.remove();
  }
  if (kind !== "error") {
    setTimeout(() => line.remove(), NOTICE_SECONDS * 1000);
  }
}


/**
 * Save a Blob as a file through a temporary object URL and a download link.
 *
 * The bytes are re-typed as application/octet-stream so the browser downloads
 * them and never renders them on this origin, whatever the file holds.
 */
export function saveBlob(blob, fileName) {
  const opaque = new Blob([blob], { type: "application/octet-stream" });
  const url = URL.createObjectURL(opaque);
  const link = h("a", { href: url, download: fileName || "download", hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  // The download has taken its copy once click() returns; a minute is margin.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
