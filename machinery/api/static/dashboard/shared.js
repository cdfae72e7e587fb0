// What the dashboard's pages share: the DOM and API helpers, the token and its sign-in card, the Page and the
// router (whose route table the entry module fills), and the pieces the pages are made of.
// Every element is built with h(), so no text that comes from the API is ever parsed as HTML.

export const FINISHED = new Set(["completed", "failed", "cancelled"]);
export const LIST_POLL_MS = 3000;
export const LIST_SIZE = 100;
export const enc = encodeURIComponent;

const JSON_EXAMPLES = { array: "[1, 2]", object: '{"key": "value"}' };

// DOM and API helpers

export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : value);
  }
  element.append(...children.flat(Infinity).filter((child) => child != null && child !== false));
  return element;
}

export async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  try {
    const response = await authorisedFetch(path, init);
    const text = await response.text();
    return { ok: response.ok, status: response.status, headers: response.headers, data: parse(text) };
  } catch {
    return { ok: false, status: 0, headers: new Headers(), data: { message: "The API cannot be reached." } };
  }
}

function parse(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return { message: text };
  }
}

// The API's bearer token, asked for once the API answers 401 and kept for the browser tab's session.

const TOKEN_KEY = "machinery.api-token";
const signOutLink = document.getElementById("sign-out");

function storedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function storeToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  signOutLink.hidden = !token;
}

// fetch(), with the stored token. A 401 forgets it and asks for another, unless one was stored since the call.
async function authorisedFetch(path, init = {}) {
  const token = storedToken();
  const headers = { ...init.headers, ...(token && { Authorization: `Bearer ${token}` }) };
  const response = await fetch(path, { ...init, headers });
  if (response.status === 401 && storedToken() === token) {
    storeToken(null);
    signIn(token && parse(await response.clone().text()));
  }
  return response;
}

// Leaves the page for a card asking for the token; error is why the last one was refused.
function signIn(error) {
  current?.leave();
  const main = document.getElementById("main");
  if (main.querySelector("#api-token")) return;
  document.title = "sign in · machinery";
  const input = h("input", { type: "password", id: "api-token", required: true, autocomplete: "current-password" });
  const submit = (submitted) => {
    submitted.preventDefault();
    storeToken(input.value.trim());
    route();
  };
  main.replaceChildren(
    h(
      "div",
      { class: "sign-in" },
      card(
        "Sign in",
        h("p", { class: "muted" }, "This API asks for a token: one of those in MACHINERY_API_TOKENS."),
        error && alertBox(error),
        h(
          "form",
          { onsubmit: submit },
          h("div", { class: "field" }, h("label", { for: "api-token" }, "API token"), input),
          h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Sign in")),
        ),
      ),
    ),
  );
  input.focus();
}

// The roles of the stored token, its own and those it includes, asked of the API once per token so that the
// pages leave out what it may not do; an open API answers an admin's. A failed answer is asked again next time.
let grant = null;

export function may(role) {
  const token = storedToken();
  if (grant?.token !== token) {
    const roles = api("GET", "/whoami").then(({ ok, data }) => {
      if (!ok && grant?.roles === roles) grant = null;
      return new Set(ok ? data.roles : []);
    });
    grant = { token, roles };
  }
  return grant.roles.then((held) => held.has(role));
}

signOutLink.hidden = !storedToken();
signOutLink.addEventListener("click", (clicked) => {
  clicked.preventDefault();
  storeToken(null);
  route();
});

// A graph from the graph endpoints, as inline SVG that shrinks to its container but never grows.
export async function graphView(url) {
  let response;
  try {
    response = await authorisedFetch(url);
  } catch {
    return alertBox({ message: "The API cannot be reached." });
  }
  if (!response.ok) return alertBox(parse(await response.text()));
  const doc = new DOMParser().parseFromString(await response.text(), "image/svg+xml");
  const svg = document.importNode(doc.documentElement, true);
  svg.style.maxWidth = svg.getAttribute("width");
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  return svg;
}

// Pages: each gets a Page, which stops its polling once the user goes elsewhere.

class Page {
  constructor() {
    this.shown = true;
    this.stops = [];
  }

  leave() {
    this.shown = false;
    this.stops.forEach((stop) => stop());
  }

  show(...children) {
    if (this.shown) document.getElementById("main").replaceChildren(...children);
  }

  // Runs tick now, then every ms for as long as it resolves to true and the page is shown.
  // kick() runs it again at once (after a user's action), even when it had stopped.
  poll(ms, tick) {
    let timer = null;
    let busy = false;
    let again = false;
    const run = async () => {
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      clearTimeout(timer);
      let more = false;
      try {
        more = await tick();
      } finally {
        busy = false;
      }
      if (!this.shown) return;
      if (again) {
        again = false;
        run();
      } else if (more) {
        timer = setTimeout(run, ms);
      }
    };
    this.stops.push(() => clearTimeout(timer));
    run();
    return { kick: run };
  }
}

// The route table, which the entry module fills, so that what re-routes here (signing in and out) imports no page.
const ROUTES = [];

// render(page, query, ...the pattern's groups) shows the page for the paths that pattern matches.
export function register(pattern, render) {
  ROUTES.push([pattern, render]);
}

let current = null;

function route() {
  const [path, query] = location.hash.slice(1).split("?");
  for (const [pattern, render] of ROUTES) {
    const match = pattern.exec(path);
    if (!match) continue;
    current?.leave();
    current = new Page();
    const section = path.split("/")[1];
    for (const link of document.querySelectorAll("nav a")) {
      if (link.dataset.section === section) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${section} · machinery`;
    render(current, new URLSearchParams(query ?? ""), ...match.slice(1).map(decodeURIComponent));
    return;
  }
  location.replace("#/workflows");
}

export function start() {
  window.addEventListener("hashchange", route);
  route();
}

// Pieces shared by the pages

// A page's title, a line under it (text, or an element to fill later), and what goes on its right.
export function pageHeader(title, subtitle, ...extra) {
  const lead = subtitle instanceof Node ? subtitle : subtitle && h("p", { class: "lead" }, subtitle);
  return h("div", { class: "page-header" }, h("div", {}, h("h1", {}, title), lead), ...extra);
}

export function crumbs(...links) {
  return h(
    "nav",
    { class: "crumbs" },
    links.map(([text, href]) => h("a", { href }, text)),
    h("span", {}, "›"),
  );
}

export function card(title, ...children) {
  return h("section", { class: "card" }, title && h("h2", {}, title), ...children);
}

export function loading() {
  return h("p", { class: "muted loading" }, "Loading…");
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

export function alertBox(error) {
  const problems = (error?.problems ?? []).map((p) => h("li", {}, p.message));
  const fields = Object.entries(error?.errors ?? {}).map(([field, messages]) =>
    h("li", {}, h("code", {}, field), ": ", messages.join(" ")),
  );
  return h(
    "div",
    { class: "alert", role: "alert" },
    h("strong", {}, error?.message ?? "Something went wrong."),
    (problems.length > 0 || fields.length > 0) && h("ul", {}, problems, fields),
  );
}

export function statusBadge(status, props = {}) {
  return h("span", { ...props, class: `badge status status-${status}` }, status);
}

export function typeName(field) {
  return field.items ? `${field.type}<${field.items}>` : field.type;
}

export function typeBadge(field) {
  return h("span", { class: "badge type" }, typeName(field));
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }) : "—";
}

export function took(from, to) {
  if (!from || !to) return null;
  const ms = Date.parse(to) - Date.parse(from);
  if (ms < 1000) return `${ms} ms`;
  return ms < 60000
    ? `${(ms / 1000).toFixed(1)} s`
    : `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

export function pagination(headers) {
  return JSON.parse(headers.get("X-Pagination") ?? "null") ?? { total: 0, page: 1, total_pages: 1 };
}

// A table of events; columns are more, each as [title, render(event) giving a cell's content, the cell's class].
export function eventsTable(events, withWorkflow, columns = []) {
  if (events.length === 0) return empty("No events yet.");
  return h(
    "table",
    { class: "list" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Event"),
        withWorkflow && h("th", {}, "Workflow"),
        h("th", {}, "Status"),
        h("th", {}, "Created"),
        h("th", {}, "Took"),
        columns.map(([title]) => h("th", {}, title)),
      ),
    ),
    h(
      "tbody",
      {},
      events.map((e) =>
        h(
          "tr",
          {},
          h("td", {}, h("a", { href: `#/events/${enc(e.id)}`, class: "mono" }, e.id.slice(0, 12))),
          withWorkflow &&
            h(
              "td",
              {},
              h("a", { href: `#/workflows/${enc(e.workflow.name)}` }, e.workflow.name),
              h("span", { class: "muted" }, ` v${e.workflow.version}`),
            ),
          h("td", {}, statusBadge(e.status)),
          h("td", { class: "muted" }, when(e.created_at)),
          h("td", { class: "muted" }, FINISHED.has(e.status) ? took(e.created_at, e.updated_at) : "…"),
          columns.map(([, render, className]) => h("td", { class: className }, render(e))),
        ),
      ),
    ),
  );
}

// Forms of typed fields (an event's data, a fleet task's arguments)

// A form control for a typed field: text, number, checkbox, or JSON for the structured types.
export function fieldControl(field) {
  const id = `input-${field.name}`;
  const initial = field.default;
  const common = { id, name: field.name, "aria-describedby": `${id}-error` };
  let control;
  if (field.type === "bool") {
    control = h("input", { ...common, type: "checkbox", checked: initial === true });
  } else if (field.type === "int" || field.type === "float") {
    control = h("input", { ...common, type: "number", step: field.type === "int" ? "1" : "any", value: initial });
  } else if (field.type === "string") {
    control = h("input", { ...common, type: "text", value: initial, autocomplete: "off" });
  } else {
    const text = initial === undefined ? "" : JSON.stringify(initial, null, 2);
    control = h("textarea", { ...common, rows: 4, spellcheck: "false", placeholder: "JSON" }, text);
  }
  const error = h("div", { class: "field-error", id: `${id}-error` });
  const label = h(
    "label",
    { for: id },
    h("code", {}, field.name),
    typeBadge(field),
    field.required === false && h("span", { class: "optional" }, "optional"),
  );
  return {
    field,
    element: h(
      "div",
      { class: `field field-${field.type}` },
      label,
      control,
      field.description && h("small", { class: "hint" }, field.description),
      error,
    ),
    read: () => readControl(field, control),
    setError(message) {
      error.textContent = message ?? "";
      if (message) control.setAttribute("aria-invalid", "true");
      else control.removeAttribute("aria-invalid");
    },
  };
}

// The value of a control; undefined leaves the field out, so that the API applies its default or says it is required.
function readControl(field, control) {
  if (field.type === "bool") return control.checked;
  if (field.type === "string") return control.value === "" && field.required === false ? undefined : control.value;
  if (control.value.trim() === "") return undefined;
  if (field.type === "int" || field.type === "float") return Number(control.value);
  try {
    return JSON.parse(control.value);
  } catch {
    throw new Error(`not JSON: write ${JSON_EXAMPLES[field.type] ?? "a JSON value"}`);
  }
}

// The values of controls by field name, each control showing its error; null if any is wrong.
export function readFields(controls) {
  const data = {};
  let valid = true;
  for (const control of controls) {
    control.setError(null);
    try {
      const value = control.read();
      if (value !== undefined) data[control.field.name] = value;
    } catch (error) {
      control.setError(error.message);
      valid = false;
    }
  }
  return valid ? data : null;
}

// POSTs body to path, which answers an event, the button disabled meanwhile: goes to the event's page, or shows the
// API's refusal in result and each of its problems that names a field on that field's control. The refusal, or null.
export async function sendEvent(path, body, { button, result, controls }) {
  button.disabled = true;
  const { ok, data: answer } = await api("POST", path, body);
  button.disabled = false;
  if (ok) {
    location.hash = `#/events/${enc(answer.event_id)}`;
    return null;
  }
  result.replaceChildren(alertBox(answer));
  for (const problem of answer?.problems ?? [])
    controls.find((c) => c.field.name === problem.field)?.setError(problem.message);
  return answer;
}
