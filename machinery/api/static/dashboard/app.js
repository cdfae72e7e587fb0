// The machinery dashboard: one page over the REST API, routed by the URL's fragment (#/workflows/x).
// Every element is built with h(), so no text that comes from the API is ever parsed as HTML.

const EVENT_STATUSES = ["accepted", "running", "waiting", "paused", "completed", "failed", "cancelled"];
const FINISHED = new Set(["completed", "failed", "cancelled"]);
const EVENT_POLL_MS = 1000;
const LIST_POLL_MS = 3000;
const LIST_SIZE = 100;
const JSON_EXAMPLES = { array: "[1, 2]", object: '{"key": "value"}' };
const enc = encodeURIComponent;

// DOM and API helpers

function h(tag, props, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value == null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : value);
  }
  element.append(...children.flat(Infinity).filter((child) => child != null && child !== false));
  return element;
}

async function api(method, path, body) {
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

function may(role) {
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
async function graphView(url) {
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

const ROUTES = [
  [/^\/services$/, servicesPage],
  [/^\/workflows$/, workflowsPage],
  [/^\/workflows\/([^/]+)$/, workflowPage],
  [/^\/events$/, eventsPage],
  [/^\/events\/([^/]+)$/, eventPage],
];

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

window.addEventListener("hashchange", route);
route();

// Pieces shared by the pages

// A page's title, a line under it (text, or an element to fill later), and what goes on its right.
function pageHeader(title, subtitle, ...extra) {
  const lead = subtitle instanceof Node ? subtitle : subtitle && h("p", { class: "lead" }, subtitle);
  return h("div", { class: "page-header" }, h("div", {}, h("h1", {}, title), lead), ...extra);
}

function crumbs(...links) {
  return h(
    "nav",
    { class: "crumbs" },
    links.map(([text, href]) => h("a", { href }, text)),
    h("span", {}, "›"),
  );
}

function card(title, ...children) {
  return h("section", { class: "card" }, title && h("h2", {}, title), ...children);
}

function loading() {
  return h("p", { class: "muted loading" }, "Loading…");
}

function empty(text) {
  return h("p", { class: "empty" }, text);
}

function alertBox(error) {
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

function statusBadge(status, props = {}) {
  return h("span", { ...props, class: `badge status status-${status}` }, status);
}

function typeName(field) {
  return field.items ? `${field.type}<${field.items}>` : field.type;
}

function typeBadge(field) {
  return h("span", { class: "badge type" }, typeName(field));
}

function fieldTable(fields) {
  if (fields.length === 0) return empty("None.");
  return h(
    "table",
    { class: "fields" },
    h(
      "tbody",
      {},
      fields.map((f) =>
        h(
          "tr",
          {},
          h("td", {}, h("code", {}, f.name), f.required === false && h("span", { class: "optional" }, "optional")),
          h("td", {}, typeBadge(f)),
          h(
            "td",
            { class: "muted" },
            f.description,
            "default" in f && h("span", { class: "default" }, ` default ${JSON.stringify(f.default)}`),
          ),
        ),
      ),
    ),
  );
}

function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }) : "—";
}

function took(from, to) {
  if (!from || !to) return null;
  const ms = Date.parse(to) - Date.parse(from);
  if (ms < 1000) return `${ms} ms`;
  return ms < 60000
    ? `${(ms / 1000).toFixed(1)} s`
    : `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function pagination(headers) {
  return JSON.parse(headers.get("X-Pagination") ?? "null") ?? { total: 0, page: 1, total_pages: 1 };
}

function eventsTable(events, withWorkflow) {
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
        ),
      ),
    ),
  );
}

// Services

async function servicesPage(page) {
  page.show(pageHeader("Services", "Microservices and their typed contracts"), loading());
  const [{ ok, data, headers }, probes] = await Promise.all([
    api("GET", `/services?page_size=${LIST_SIZE}`),
    api("GET", "/health/services"),
  ]);
  const health = new Map((probes.ok ? probes.data : []).map((probe) => [probe.service, probe]));
  const header = pageHeader(
    "Services",
    "Microservices and their typed contracts",
    ok && h("span", { class: "count" }, plural(pagination(headers).total, "service")),
  );
  if (!ok) return page.show(header, alertBox(data));
  page.show(
    header,
    data.length
      ? h("div", { class: "cards" }, data.map((service) => serviceCard(service, health.get(service.name))))
      : empty("No service is registered yet: POST one to /services, or run machinery apply."),
  );
}

// What a notification's status means, said of a notification.
const NOTIFICATION_STATES = {
  ready: "to send",
  running: "being sent",
  retrying: "to send again",
  completed: "delivered",
  failed: "given up",
};

// The colours of the step statuses that mean the same: fine, trying again, failed.
const HEALTH_LOOKS = { up: "completed", unreachable: "retrying", down: "failed" };

// probe: the last probe of the service's health check, if it has one and it was probed.
function serviceCard(service, probe) {
  return h(
    "article",
    { class: "card service", id: `service-${service.name}` },
    h(
      "header",
      {},
      h("h2", {}, service.name),
      h("span", { class: "badge method" }, service.method),
      probe &&
        h(
          "span",
          {
            class: `badge status health status-${HEALTH_LOOKS[probe.status]}`,
            title: `${probe.status} since ${when(probe.since)}${probe.error ? `: ${probe.error}` : ""}`,
          },
          probe.status,
        ),
      h("code", { class: "address" }, service.address),
    ),
    service.description && h("p", { class: "muted" }, service.description),
    h("h3", {}, "Inputs"),
    fieldTable(service.inputs),
    h("h3", {}, "Outputs"),
    fieldTable(service.outputs),
    h(
      "footer",
      { class: "muted" },
      `times out after ${service.timeout} s · ${plural(service.retry.attempts, "attempt")}, `,
      `backoff ${service.retry.backoff} s ×${service.retry.multiplier}`,
      service.concurrency && ` · at most ${plural(service.concurrency, "call")} at once`,
    ),
  );
}

// Workflows

async function workflowsPage(page) {
  page.show(pageHeader("Workflows", "Services chained into typed graphs"), loading());
  const { ok, data, headers } = await api("GET", `/workflows?page_size=${LIST_SIZE}`);
  const header = pageHeader(
    "Workflows",
    "Services chained into typed graphs",
    ok && h("span", { class: "count" }, plural(pagination(headers).total, "workflow")),
  );
  if (!ok) return page.show(header, alertBox(data));
  if (data.length === 0)
    return page.show(header, empty("No workflow is registered yet: POST one to /workflows, or run machinery apply."));
  const signature = (fields) => fields.map((f) => `${f.name}: ${typeName(f)}`).join(", ") || "—";
  page.show(
    header,
    card(
      null,
      h(
        "table",
        { class: "list" },
        h(
          "thead",
          {},
          h("tr", {}, h("th", {}, "Workflow"), h("th", {}, "Steps"), h("th", {}, "Inputs"), h("th", {}, "Outputs")),
        ),
        h(
          "tbody",
          {},
          data.map((w) =>
            h(
              "tr",
              {},
              h(
                "td",
                {},
                h("a", { href: `#/workflows/${enc(w.name)}`, class: "strong" }, w.name),
                h("span", { class: "muted" }, ` v${w.version}`),
                w.description && h("div", { class: "muted small" }, w.description),
              ),
              h("td", {}, (w.steps ?? w.services).length),
              h("td", { class: "mono small" }, signature(w.inputs)),
              h("td", { class: "mono small" }, signature(w.outputs)),
            ),
          ),
        ),
      ),
    ),
  );
}

async function workflowPage(page, _query, name) {
  page.show(crumbs(["Workflows", "#/workflows"]), loading());
  const [{ ok, data: workflow }, produces] = await Promise.all([
    api("GET", `/workflows/${enc(name)}`),
    may("producer"),
  ]);
  if (!ok) return page.show(crumbs(["Workflows", "#/workflows"]), alertBox(workflow));
  const graph = h("div", { class: "graph", id: "workflow-graph" }, loading());
  const recent = h("div", {}, loading());
  page.show(
    crumbs(["Workflows", "#/workflows"]),
    pageHeader(
      h("span", {}, workflow.name, " ", h("span", { class: "version" }, `v${workflow.version}`)),
      workflow.description,
    ),
    card("Graph", graph),
    h(
      "div",
      { class: "columns" },
      produces && card("Send a test event", eventForm(workflow)),
      card(
        "Recent events",
        recent,
        h("p", {}, h("a", { href: `#/events?workflow=${enc(workflow.name)}` }, "All its events →")),
      ),
    ),
  );
  graphView(`/workflows/${enc(workflow.name)}/graph.svg`).then((view) => graph.replaceChildren(view));
  page.poll(LIST_POLL_MS, async () => {
    const { ok, data } = await api("GET", `/events?workflow=${enc(workflow.name)}&page_size=8`);
    recent.replaceChildren(ok ? eventsTable(data, false) : alertBox(data));
    return true;
  });
}

function eventForm(workflow) {
  const controls = workflow.inputs.map(fieldControl);
  const button = h("button", { type: "submit", class: "primary" }, "Send event");
  const result = h("div", { class: "form-result" });
  const send = async (submitted) => {
    submitted.preventDefault();
    result.replaceChildren();
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
    if (!valid) return;
    button.disabled = true;
    const { ok, data: answer } = await api("POST", `/e/${enc(workflow.name)}`, { data });
    button.disabled = false;
    if (ok) {
      location.hash = `#/events/${enc(answer.event_id)}`;
      return;
    }
    result.replaceChildren(alertBox(answer));
    for (const problem of answer?.problems ?? [])
      controls.find((c) => c.field.name === problem.field)?.setError(problem.message);
  };
  return h(
    "form",
    { class: "event-form", onsubmit: send, novalidate: true },
    controls.map((c) => c.element),
    controls.length === 0 && h("p", { class: "muted" }, "This workflow takes no input."),
    h("div", { class: "actions" }, button, h("span", { class: "muted small" }, `POST /e/${workflow.name}`)),
    result,
  );
}

// A form control for a typed field: text, number, checkbox, or JSON for the structured types.
function fieldControl(field) {
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

// Events

async function eventsPage(page, query) {
  const produces = await may("producer");
  const filters = {
    workflow: query.get("workflow") ?? "",
    status: query.get("status") ?? "",
    data: query.get("data") ?? "",
  };
  const number = Number(query.get("page") ?? 1);
  const go = (change) => {
    const next = new URLSearchParams(
      Object.entries({ ...filters, page: 1, ...change }).filter(([, v]) => v !== "" && v !== 1),
    );
    location.hash = `#/events${next.size ? `?${next}` : ""}`;
  };
  const workflowSelect = h(
    "select",
    { id: "filter-workflow", onchange: (e) => go({ workflow: e.target.value }) },
    h("option", { value: "" }, "All workflows"),
  );
  const statusSelect = h(
    "select",
    { id: "filter-status", onchange: (e) => go({ status: e.target.value }) },
    h("option", { value: "" }, "Any status"),
    EVENT_STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)),
  );
  const dataInput = h("input", {
    type: "text",
    id: "filter-data",
    class: "mono",
    value: filters.data,
    placeholder: 'data holds {"customer": "acme"}',
    onchange: (e) => go({ data: e.target.value.trim() }),
  });
  const list = h("div", {}, loading());
  const pager = h("div", { class: "pager" });
  const feedback = h("div", { id: "events-feedback" });
  // After a fix, the failed events of one workflow are retried at once.
  const retryAll = h(
    "button",
    {
      hidden: !(filters.workflow && filters.status === "failed"),
      onclick: async () => {
        const { ok, data } = await api("POST", "/events/retry", { workflow: filters.workflow });
        if (!ok) {
          feedback.replaceChildren(alertBox(data));
          return;
        }
        const [first] = data.skipped;
        const skipped = first ? `; not ${plural(data.skipped.length, "other")}, as ${first.reason}` : "";
        feedback.replaceChildren(
          h("p", { class: "success small" }, `Retried ${plural(data.retried.length, "event")}${skipped}.`),
        );
        poller.kick();
      },
    },
    "Retry them all",
  );
  page.show(
    pageHeader("Events", "What was sent to the workflows, and how far each has gone"),
    h("div", { class: "filters" }, workflowSelect, statusSelect, dataInput, produces && retryAll),
    feedback,
    card(null, list, pager),
  );

  api("GET", `/workflows?page_size=${LIST_SIZE}`).then(({ ok, data }) => {
    const names = ok ? data.map((w) => w.name) : [];
    if (filters.workflow && !names.includes(filters.workflow)) names.push(filters.workflow);
    workflowSelect.append(
      ...names.map((name) => h("option", { value: name, selected: name === filters.workflow }, name)),
    );
  });
  const poller = page.poll(LIST_POLL_MS, async () => {
    const params = new URLSearchParams({
      page: number,
      page_size: 20,
      ...Object.fromEntries(Object.entries(filters).filter(([, v]) => v)),
    });
    const { ok, data, headers } = await api("GET", `/events?${params}`);
    if (!ok) {
      list.replaceChildren(alertBox(data));
      return false;
    }
    const pages = pagination(headers);
    list.replaceChildren(eventsTable(data, true));
    pager.replaceChildren(
      h("button", { disabled: !pages.previous_page, onclick: () => go({ page: pages.previous_page }) }, "← Newer"),
      h(
        "span",
        { class: "muted small" },
        `page ${pages.page ?? 1} of ${pages.total_pages || 1} · ${plural(pages.total, "event")}`,
      ),
      h("button", { disabled: !pages.next_page, onclick: () => go({ page: pages.next_page }) }, "Older →"),
    );
    return true;
  });
}

async function eventPage(page, _query, id) {
  const produces = await may("producer");
  const url = `/events/${enc(id)}`;
  const status = statusBadge("…", { id: "event-status" });
  const meta = h("p", { class: "lead" });
  const unreachable = h("div", {});
  const feedback = h("div", {});
  const problem = h("div", { id: "event-error" });
  const outputs = h("div", { id: "event-outputs" });
  const outputsCard = card("Outputs", outputs);
  const graph = h("div", { class: "graph", id: "event-graph" }, loading());
  const steps = h("ol", { class: "timeline" });
  const data = h("div", {});
  // A user's action, after which the page looks again at once.
  const act = async (path, body) => {
    const answer = await api("POST", `${url}/${path}`, body);
    poller.kick();
    return answer;
  };
  const button = (label, path) =>
    h(
      "button",
      {
        onclick: async () => {
          feedback.replaceChildren();
          const { ok, data: answer } = await act(path);
          if (!ok) feedback.replaceChildren(alertBox(answer));
        },
      },
      label,
    );
  const cancel = button("Cancel", "cancel");
  const pause = button("Pause", "pause");
  const resume = button("Resume", "resume");
  const retry = button("Retry", "retry");
  const rerun = h(
    "button",
    {
      onclick: async () => {
        feedback.replaceChildren();
        const { ok, data: answer } = await act("rerun");
        if (ok) location.hash = `#/events/${enc(answer.id)}`;
        else feedback.replaceChildren(alertBox(answer));
      },
    },
    "Rerun",
  );
  const signal = signalCard((name, body) => act(`signals/${enc(name)}`, body));

  page.show(
    crumbs(["Events", "#/events"]),
    pageHeader(
      h("span", {}, "Event ", h("code", { class: "event-id" }, id), " ", status),
      meta,
      produces && h("div", { class: "actions" }, cancel, pause, resume, retry, rerun),
    ),
    unreachable,
    feedback,
    problem,
    card("Graph", graph),
    h(
      "div",
      { class: "columns wide-left" },
      card("Steps", steps),
      h("div", {}, outputsCard, card("Data", data), produces && signal),
    ),
  );

  let seen = null;
  const poller = page.poll(EVENT_POLL_MS, async () => {
    const { ok, status: code, data: event } = await api("GET", url);
    unreachable.replaceChildren(...(ok ? [] : [alertBox(event)]));
    if (!ok) return code !== 404;
    if (event.updated_at !== seen) {
      // The graph is fetched before anything changes on the page, so that the page shows one state at a time.
      const view = await graphView(`${url}/graph.svg`);
      seen = event.updated_at;
      graph.replaceChildren(view);
      status.className = `badge status status-${event.status}`;
      status.textContent = event.status;
      meta.replaceChildren(
        "workflow ",
        h("a", { href: `#/workflows/${enc(event.workflow.name)}` }, event.workflow.name),
        ` v${event.workflow.version} · created ${when(event.created_at)}`,
        FINISHED.has(event.status)
          ? ` · took ${took(event.created_at, event.updated_at)}`
          : ` · updated ${when(event.updated_at)}`,
        !FINISHED.has(event.status) && event.deadline ? ` · fails if not over by ${when(event.deadline)}` : "",
        event.notification ? ` · notification ${NOTIFICATION_STATES[event.notification.status]}` : "",
      );
      problem.replaceChildren(...(event.error ? [alertBox(event.error)] : []));
      outputs.replaceChildren(json(event.outputs));
      outputsCard.hidden = event.outputs == null;
      keepOpen(steps, () => steps.replaceChildren(...event.steps.map(stepItem)));
      data.replaceChildren(json(event.data));
      cancel.disabled = FINISHED.has(event.status);
      pause.disabled = FINISHED.has(event.status) || event.status === "paused";
      resume.disabled = event.status !== "paused";
      rerun.disabled = !FINISHED.has(event.status);
      retry.disabled = event.status !== "failed";
      signal.hidden = FINISHED.has(event.status);
    }
    return !FINISHED.has(event.status);
  });
}

// Rebuilds a list with render(), keeping open the <details> that were open.
function keepOpen(container, render) {
  const open = new Set([...container.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  render();
  for (const details of container.querySelectorAll("details")) details.open = open.has(details.dataset.key);
}

function stepItem(step) {
  const what = [step.kind !== "service" && step.kind, step.service !== step.id && step.service]
    .filter(Boolean)
    .join(" · ");
  const facts = [
    step.items && `${step.items.filter((item) => item.status === "completed").length}/${step.items.length} items done`,
    step.attempts && plural(step.attempts, "attempt"),
    step.started_at && `started ${when(step.started_at)}`,
    took(step.started_at, step.ended_at) && `took ${took(step.started_at, step.ended_at)}`,
    step.route && `took route ${step.route}`,
    step.wakes_at && `wakes ${when(step.wakes_at)}`,
    step.next_attempt_at && `next attempt ${when(step.next_attempt_at)}`,
  ].filter(Boolean);
  const section = (name, value) =>
    value != null && h("details", { "data-key": `${step.id}/${name}` }, h("summary", {}, name), json(value));
  return h(
    "li",
    { class: `step status-${step.status}`, id: `timeline-${step.id}` },
    h(
      "div",
      { class: "step-head" },
      h("span", { class: "dot" }),
      h("strong", {}, step.id),
      what && h("span", { class: "muted" }, what),
      statusBadge(step.status),
    ),
    facts.length > 0 && h("div", { class: "muted small" }, facts.join(" · ")),
    step.error && h("div", { class: "alert small" }, step.error.message),
    section("inputs", step.inputs),
    section("outputs", step.outputs),
    step.history?.length > 0 &&
      h(
        "details",
        { "data-key": `${step.id}/history` },
        h("summary", {}, `failed attempts (${step.history.length})`),
        h(
          "ul",
          { class: "history" },
          step.history.map((a) =>
            h("li", {}, h("strong", {}, `#${a.attempt}`), ` ${when(a.ended_at)}: `, a.error?.message ?? "failed"),
          ),
        ),
      ),
  );
}

// A form to send a signal; send(name, body) resolves to the API's answer.
function signalCard(send) {
  const name = h("input", {
    type: "text",
    id: "signal-name",
    placeholder: "approve",
    required: true,
    autocomplete: "off",
  });
  const body = h("textarea", { id: "signal-body", rows: 3, spellcheck: "false" }, "{}");
  const button = h("button", { type: "submit" }, "Send signal");
  const result = h("div", { class: "form-result" });
  const submit = async (submitted) => {
    submitted.preventDefault();
    let payload;
    try {
      payload = JSON.parse(body.value || "{}");
    } catch {
      result.replaceChildren(alertBox({ message: "The body is not JSON." }));
      return;
    }
    result.replaceChildren();
    const { ok, data } = await send(name.value.trim(), payload);
    result.replaceChildren(
      ok ? h("p", { class: "success small" }, `Signal '${name.value.trim()}' sent.`) : alertBox(data),
    );
  };
  return card(
    "Send a signal",
    h(
      "form",
      { class: "signal-form", onsubmit: submit },
      h("div", { class: "field" }, h("label", { for: "signal-name" }, "Name"), name),
      h("div", { class: "field" }, h("label", { for: "signal-body" }, "Body (JSON)"), body),
      h("div", { class: "actions" }, button),
      result,
    ),
  );
}
