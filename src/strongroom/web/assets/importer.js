// Archive import with its per-member report, shown as it happens.
//
// The request asks for the streamed answer (application/x-ndjson): progress
// lines while the archive is unpacked, one line per member, then a result
// line. Errors found before unpacking (a read-only space, a body over the
// limit) are ordinary problem+json answers instead.

import { spaceUrl } from "./api.js";
import { openDialog } from "./dialogs.js";
import { announce, byId, formatBytes, h } from "./dom.js";
import { errorFromText } from "./errors.js";
import { authorization, refreshNow } from "./session.js";
import { isCancelled, sendXhr } from "./xhr.js";

// Member rows drawn at most; a huge archive's report is summed up past this.
const MAX_REPORT_ROWS = 2000;
const STATUS_WORDS = { imported: "Imported", skipped: "Skipped", refused: "Refused" };

/**
 * Import `file` into `folder` of `space`, showing progress and the report in a
 * dialog; resolve true when something may have changed in the folder.
 */
export async function importArchive(space, folder, file) {
  const report = new Report(file.name, folder);
  const closed = openDialog(byId("dlg-report"), byId("dlg-report-close"), async () => null);
  let cancel = null;
  byId("dlg-report").addEventListener("close", () => cancel?.(), { once: true });
  const attempt = () => sendXhr("POST", spaceUrl(space, "import", folder), {
    headers: {
      Authorization: authorization(),
      Accept: "application/x-ndjson",
      "Content-Type": "application/octet-stream",
    },
    body: file,
    onUpload: (sent) => report.sending(sent, file.size),
    onAnswer: (text) => report.read(text),
    register: (abort) => {
      cancel = abort;
    },
  });
  try {
    let xhr = await attempt();
    if (xhr.status === 401) {
      await refreshNow();
      xhr = await attempt();
    }
    cancel = null;
    if (xhr.status !== 200) {
      report.refused(errorFromText(xhr.status, xhr.responseText));
      return false;
    }
    report.read(xhr.responseText, true);
    report.finish();
    return report.changed;
  } catch (error) {
    if (!isCancelled(error)) {
      report.refused(error);
    }
    return false;
  } finally {
    byId("dlg-report-close").textContent = "Close";
    await closed;
  }
}

class Report {
  constructor(fileName, folder) {
    this.fileName = fileName;
    this.consumed = 0;
    this.rows = 0;
    this.changed = false;
    this.result = null;
    this.summary = byId("dlg-report-summary");
    this.bar = byId("dlg-report-progress");
    this.tbody = byId("dlg-report-rows");
    byId("dlg-report-title").textContent = `Import ${fileName}`;
    byId("dlg-report-close").textContent = "Cancel import";
    this.tbody.replaceChildren();
    this.bar.hidden = false;
    this.bar.max = 1;
    this.bar.value = 0;
    this.summary.textContent = `Sending to ${folder || "the top of the space"}…`;
    this.summary.classList.remove("error");
  }

  sending(sent, total) {
    this.bar.max = Math.max(total, 1);
    this.bar.value = sent;
    this.summary.textContent = `Sending: ${formatBytes(sent)} of ${formatBytes(total)}`;
    if (sent >= total) {
      this.bar.removeAttribute("value");
      this.summary.textContent = "Unpacking…";
    }
  }

  read(text, final = false) {
    const end = final ? text.length : text.lastIndexOf("\n") + 1;
    if (end <= this.consumed) {
      return;
    }
    const lines = text.slice(this.consumed, end).split("\n").filter(Boolean);
    this.consumed = end;
    for (const line of lines) {
      this.line(JSON.parse(line));
    }
  }

  line(event) {
    if (event.event === "progress") {
      const phase = event.phase === "publish" ? "Putting files in place" : "Unpacking";
      this.summary.textContent = `${phase}: ${event.members} members, `
        + `${formatBytes(event.bytes)}`;
    } else if (event.event === "member") {
      this.addMember(event);
    } else if (event.event === "result") {
      this.result = event;
    }
  }

  addMember(member) {
    this.rows += 1;
    if (this.rows > MAX_REPORT_ROWS) {
      return;
    }
    this.tbody.append(h("tr", { dataset: { status: member.status } },
      h("th", { scope: "row", class: "name-cell" }, h("span", { class: "entry-name",
        text: member.name })),
      h("td", { "data-label": "Outcome", text: STATUS_WORDS[member.status] || member.status }),
      h("td", { "data-label": "Reason", text: member.reason || "" })));
  }

  finish() {
    this.bar.hidden = true;
    const result = this.result;
    if (result === null) {
      this.fail("The import stopped before it reported an outcome; nothing may have changed.");
      return;
    }
    this.changed = result.status === 200;
    const hidden = this.rows > MAX_REPORT_ROWS ? ` (first ${MAX_REPORT_ROWS} members shown)` : "";
    const counts = `${result.imported} imported, ${result.skipped} skipped, `
      + `${result.refused} refused${hidden}.`;
    if (result.status === 200) {
      this.summary.textContent = `${result.detail}. ${counts}`;
      announce(`Imported ${this.fileName}: ${counts}`);
    } else {
      this.fail(`Nothing was imported: ${result.detail}. ${counts}`);
    }
  }

  refused(error) {
    this.bar.hidden = true;
    this.fail(`Nothing was imported: ${error.detail}`);
  }

  fail(message) {
    this.summary.textContent = message;
    this.summary.classList.add("error");
    announce(`Import of ${this.fileName} failed.`, "error");
  }
}
