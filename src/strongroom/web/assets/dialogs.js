// Modal dialogs built on <dialog>: the browser traps focus inside, Escape
// cancels, and focus returns to the button that opened it.

import { byId } from "./dom.js";

/** What an `onOk` returns to keep its dialog open (to show a result in it). */
export const KEEP_OPEN = Symbol("keep the dialog open");

/**
 * Ask a yes/no question; resolve true only when the person confirms.
 * The safe answer (Cancel) has the focus when the dialog opens.
 */
export function confirmDialog({ title, message, confirmLabel = "OK", danger = false }) {
  const dialog = byId("dlg-confirm");
  byId("dlg-confirm-title").textContent = title;
  byId("dlg-confirm-message").textContent = message;
  const ok = byId("dlg-confirm-ok");
  ok.textContent = confirmLabel;
  ok.classList.toggle("danger", danger);
  return openDialog(dialog, byId("dlg-confirm-cancel"), async () => true)
    .then((answer) => answer === true);
}

/**
 * Ask for one line of text. `action(value)` runs on OK; if it throws, its
 * message is shown in the dialog, which stays open for another try. Resolves
 * with action's result, or null when cancelled.
 */
export function promptDialog({ title, label, value = "", confirmLabel = "OK", hint = "",
  action }) {
  const dialog = byId("dlg-prompt");
  const input = labelPrompt({ title, label, hint, confirmLabel });
  input.value = value;
  const opened = openDialog(dialog, input, () => action(input.value.trim()));
  // Select the name without its extension, ready to be typed over.
  const dot = value.lastIndexOf(".");
  const slash = value.lastIndexOf("/") + 1;
  input.setSelectionRange(slash, dot > slash ? dot : value.length);
  return opened;
}

/**
 * Ask for a new password in the prompt dialog, masked and never trimmed;
 * `action(password)` runs on submit, as for `promptDialog`.
 */
export async function passwordDialog({ title, label, confirmLabel = "OK", hint = "",
  action }) {
  const input = labelPrompt({ title, label, hint, confirmLabel });
  input.value = "";
  input.type = "password";
  input.autocomplete = "new-password";
  try {
    return await openDialog(byId("dlg-prompt"), input, () => action(input.value));
  } finally {
    input.value = "";
    input.type = "text";
    input.autocomplete = "off";
  }
}

/** Put the texts into the prompt dialog; return its input. */
function labelPrompt({ title, label, hint, confirmLabel }) {
  byId("dlg-prompt-title").textContent = title;
  byId("dlg-prompt-label").textContent = label;
  byId("dlg-prompt-hint").textContent = hint;
  byId("dlg-prompt-ok").textContent = confirmLabel;
  return byId("dlg-prompt-input");
}

/**
 * Show `dialog` and resolve with what `onOk` returned, or null on cancel.
 * `onOk` runs on every submit; returning KEEP_OPEN leaves the dialog open.
 *
 * The dialog's form must have an element with class `dialog-error` for
 * messages and a button with value "cancel".
 */
export function openDialog(dialog, focus, onOk) {
  const form = dialog.querySelector("form");
  const error = dialog.querySelector(".dialog-error");
  const opener = document.activeElement;
  error.textContent = "";
  return new Promise((resolve) => {
    let result = null;
    const onSubmit = async (event) => {
      event.preventDefault();
      error.textContent = "";
      form.setAttribute("aria-busy", "true");
      try {
        const outcome = await onOk();
        if (outcome !== KEEP_OPEN) {
          result = outcome;
          dialog.close("ok");
        }
      } catch (problem) {
        error.textContent = problem?.detail || problem?.message || String(problem);
      } finally {
        form.removeAttribute("aria-busy");
      }
    };
    const onCancelClick = (event) => {
      if (event.target.closest("button[value=cancel]")) {
        dialog.close("cancel");
      }
    };
    const onClose = () => {
      form.removeEventListener("submit", onSubmit);
      form.removeEventListener("click", onCancelClick);
      dialog.removeEventListener("close", onClose);
      if (opener instanceof HTMLElement && opener.isConnected) {
        opener.focus();
      }
      resolve(dialog.returnValue === "ok" ? result : null);
    };
    form.addEventListener("submit", onSubmit);
    form.addEventListener("click", onCancelClick);
    dialog.addEventListener("close", onClose);
    dialog.returnValue = "";
    dialog.showModal();
    focus?.focus();
  });
}
