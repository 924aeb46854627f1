// The admin view: accounts (add, role, disable or enable, set a password, sign
// out everywhere) and every space with its policies. Shown only to tokens with
// `admin`.

import { API, callJson } from "./api.js";
import { confirmDialog, passwordDialog } from "./dialogs.js";
import { announce, byId, formatDate, h } from "./dom.js";
import { currentSession } from "./session.js";

/** Wire the add-person form; called once. */
export function initAdmin() {
  byId("add-user-form").addEventListener("submit", addUser);
}

/** Fill the admin view. */
export async function showAdmin() {
  await Promise.all([showUsers(), showSpaces()]);
}

async function showUsers() {
  try {
    const users = await callJson("GET", `${API}/admin/users`);
    byId("user-rows").replaceChildren(...users.map(userRow));
  } catch (error) {
    announce(`The accounts could not be listed: ${error.detail}`, "error");
  }
}

async function showSpaces() {
  try {
    const spaces = await callJson("GET", `${API}/admin/spaces`);
    byId("admin-space-rows").replaceChildren(...spaces.map((space) => h("tr", {},
      h("th", { scope: "row", text: space.name }),
      h("td", { "data-label": "Kind", text: space.kind === "home" ? "home (private)" : "folder" }),
      h("td", { "data-label": "Access", text: space.mode === "rw" ? "read and write" : "read-only" }),
      h("td", { "data-label": "Symlinks", text: space.symlinks ?? "none (rows only)" }),
      h("td", { "data-label": "Hard links", text: space.hardlinks ?? "none (rows only)" }),
      h("td", { "data-label": "Who", text: space.users.join(", ") }))));
  } catch (error) {
    announce(`The spaces could not be listed: ${error.detail}`, "error");
  }
}

function userRow(user) {
  const isMe = user.name === currentSession()?.name;
  const role = h("select", { "aria-label": `Role of ${user.name}` },
    ...["user", "admin"].map((value) => h("option", { value, text: value,
      selected: value === user.role })));
  role.addEventListener("change", () => changeRole(user, role, isMe));
  const toggle = h("button", {
    type: "button", class: "small",
    text: user.active ? "Disable" : "Enable",
    "aria-label": `${user.active ? "Disable" : "Enable"} ${user.name}`,
    on: { click: () => setActive(user, !user.active, isMe) },
  });
  const password = h("button", {
    type: "button", class: "small", text: "Set password",
    "aria-label": `Set a new password for ${user.name}`,
    on: { click: () => setPassword(user, isMe) },
  });
  const revoke = h("button", {
    type: "button", class: "small", text: "Sign out everywhere",
    "aria-label": `Sign ${user.name} out everywhere`,
    on: { click: () => revokeTokens(user, isMe) },
  });
  return h("tr", { dataset: { user: user.name } },
    h("th", { scope: "row" }, h("span", { text: user.name }),
      isMe ? h("span", { class: "muted", text: " (you)" }) : null),
    h("td", { "data-label": "Role" }, role),
    h("td", { "data-label": "State", text: user.active ? "Active" : "Disabled" }),
    h("td", { "data-label": "Created" },
      h("time", { datetime: user.created, text: formatDate(user.created) })),
    h("td", { class: "row-actions" }, toggle, password, revoke));
}

async function changeRole(user, select, isMe) {
  const role = select.value;
  const sure = await confirmDialog({
    title: `Make ${user.name} ${role === "admin" ? "an admin" : "a user"}?`,
    message: `A role change signs ${isMe ? "you" : user.name} out everywhere.`,
    confirmLabel: "Change role",
  });
  if (!sure) {
    select.value = user.role;
    return;
  }
  await patchUser(user, { role }, `${user.name} is now ${role === "admin" ? "an admin" : "a user"}.`);
}

async function setActive(user, active, isMe) {
  if (!active) {
    const sure = await confirmDialog({
      title: `Disable ${user.name}?`,
      message: `${isMe ? "You" : user.name} will be signed out everywhere and cannot sign in `
        + "until enabled again. Files are kept.",
      confirmLabel: "Disable",
      danger: true,
    });
    if (!sure) {
      return;
    }
  }
  await patchUser(user, { active }, `${user.name} is ${active ? "enabled" : "disabled"}.`);
}

async function setPassword(user, isMe) {
  const done = await passwordDialog({
    title: `New password for ${user.name}`,
    label: "New password",
    hint: `${isMe ? "You" : user.name} will be signed out everywhere.`,
    confirmLabel: "Set password",
    action: async (password) => {
      await callJson("POST",
        `${API}/admin/users/${encodeURIComponent(user.name)}/password`,
        { json: { new_password: password } });
      return true;
    },
  });
  if (done) {
    announce(`${user.name} has a new password.`);
  }
}

async function revokeTokens(user, isMe) {
  const sure = await confirmDialog({
    title: `Sign ${user.name} out everywhere?`,
    message: `Every token ${isMe ? "you hold, this one included," : `${user.name} holds`} `
      + "stops working at once.",
    confirmLabel: "Sign out everywhere",
    danger: true,
  });
  if (!sure) {
    return;
  }
  try {
    await callJson("POST", `${API}/admin/users/${encodeURIComponent(user.name)}/revoke`);
    announce(`${user.name} is signed out everywhere.`);
  } catch (error) {
    announce(`${user.name} was not signed out: ${error.detail}`, "error");
  }
}

async function patchUser(user, change, done) {
  try {
    await callJson("PATCH", `${API}/admin/users/${encodeURIComponent(user.name)}`,
      { json: change });
    announce(done);
  } catch (error) {
    announce(`${user.name} was not changed: ${error.detail}`, "error");
  }
  await showUsers();
}

async function addUser(event) {
  event.preventDefault();
  const form = event.target;
  const error = byId("add-user-error");
  error.textContent = "";
  const body = {
    name: form.elements.name.value.trim(),
    password: form.elements.password.value,
    role: form.elements.role.value,
  };
  try {
    await callJson("POST", `${API}/admin/users`, { json: body });
  } catch (problem) {
    error.textContent = problem.detail;
    return;
  }
  form.reset();
  announce(`${body.name} can now sign in.`);
  await showUsers();
}
