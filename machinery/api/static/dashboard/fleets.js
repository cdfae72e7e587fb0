// The fleets pages: every fleet with its workloads by state; a fleet's counts, its spread over hosts, its tasks with
// their latest ad hoc runs and a form to run one, a table of its workloads filtered by state, label and host, and
// the feed of its lifecycle events; a workload's history.

import {
  FINISHED,
  LIST_POLL_MS,
  h,
  api,
  enc,
  may,
  pageHeader,
  crumbs,
  card,
  loading,
  empty,
  alertBox,
  statusBadge,
  typeBadge,
  plural,
  fieldControl,
  readFields,
  sendEvent,
  eventsTable,
} from "./shared.js";

const STATES = ["initializing", "up", "unreachable", "dead"];
const PAGE_SIZE = 50;
const FEED_SIZE = 30;
const RUNS_SIZE = 20;

// Times of fleets are seconds since the epoch.
function at(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" }) : "—";
}

function stateCounts(states) {
  return h(
    "ul",
    { class: "fleet-states" },
    STATES.map((state) => h("li", {}, statusBadge(state), h("span", { class: `count count-${state}` }, states[state] ?? 0))),
  );
}

export async function fleetsPage(page) {
  const count = h("span", { class: "count" });
  const list = h("div", {}, loading());
  page.show(pageHeader("Fleets", "Workloads hosted by workers, health-checked and spread", count), list);
  page.poll(LIST_POLL_MS, async () => {
    const { ok, data } = await api("GET", "/fleets");
    if (!ok) {
      list.replaceChildren(alertBox(data));
      return false;
    }
    count.textContent = plural(data.length, "fleet");
    if (data.length === 0) {
      list.replaceChildren(empty("No fleet yet: POST one to /fleets, with its driver and settings."));
      return true;
    }
    const counts = await Promise.all(data.map((fleet) => api("GET", `/fleets/${enc(fleet.name)}/counts`)));
    const cards = data.map((fleet, i) =>
      h(
        "article",
        { class: "card fleet", id: `fleet-${fleet.name}` },
        h("header", {}, h("h2", {}, h("a", { href: `#/fleets/${enc(fleet.name)}` }, fleet.name))),
        h("p", { class: "muted" }, `driver ${fleet.driver} · ping every ${fleet.settings.ping_interval} s`),
        counts[i].ok ? stateCounts(counts[i].data.states) : alertBox(counts[i].data),
      ),
    );
    list.replaceChildren(h("div", { class: "cards" }, cards));
    return true;
  });
}

export async function fleetPage(page, query, name) {
  const key = enc(name);
  const summary = h("div", {}, loading());
  const spread = h("div", {}, loading());
  const table = h("div", {}, loading());
  const feed = h("div", {}, loading());
  const tasks = h("div", { id: "fleet-tasks" }, loading());
  const latest = h("div", {}, loading());
  const runs = h("div", { id: "fleet-runs", hidden: true }, h("h3", {}, "Latest ad hoc runs"), latest);
  const filters = {
    state: h("select", { name: "state" }, h("option", { value: "" }, "any state"), STATES.map((s) => h("option", { value: s }, s))),
    label: h("input", { name: "label", placeholder: "label: key=value" }),
    host: h("input", { name: "host", placeholder: "host" }),
  };
  filters.state.value = query.get("state") ?? "";
  filters.label.value = query.get("label") ?? "";
  filters.host.value = query.get("host") ?? "";
  const after = query.get("after") ?? "";
  const form = h(
    "form",
    {
      class: "filters",
      onsubmit: (e) => {
        e.preventDefault();
        const params = new URLSearchParams();
        for (const [field, input] of Object.entries(filters)) if (input.value) params.set(field, input.value);
        location.hash = `#/fleets/${key}?${params}`;
      },
    },
    Object.values(filters),
    h("button", { type: "submit" }, "Filter"),
  );
  page.show(
    crumbs(["Fleets", "#/fleets"]),
    pageHeader(name, "Its workloads by state, the spread over its hosts, its tasks, and what happened to them"),
    card("By state", summary),
    card("Spread over hosts", spread),
    card("Tasks", tasks, runs),
    card("Workloads", form, table),
    card("Lifecycle events", feed),
  );

  page.poll(LIST_POLL_MS, async () => {
    const params = new URLSearchParams({ limit: PAGE_SIZE });
    for (const [field, input] of Object.entries(filters)) if (query.get(field)) params.set(field, query.get(field));
    if (after) params.set("after", after);
    const [counts, workloads, events] = await Promise.all([
      api("GET", `/fleets/${key}/counts`),
      api("GET", `/fleets/${key}/workloads?${params}`),
      api("GET", `/fleets/${key}/events?limit=${FEED_SIZE}`),
    ]);
    if (!counts.ok) {
      summary.replaceChildren(alertBox(counts.data));
      return false;
    }
    summary.replaceChildren(stateCounts(counts.data.states));
    spread.replaceChildren(hostBars(counts.data));
    table.replaceChildren(workloads.ok ? workloadTable(name, workloads.data, params) : alertBox(workloads.data));
    feed.replaceChildren(events.ok ? eventTable(events.data, true) : alertBox(events.data));
    return true;
  });

  const [fleet, produces] = await Promise.all([api("GET", `/fleets/${key}`), may("producer")]);
  if (!page.shown) return;
  if (!fleet.ok) return tasks.replaceChildren(alertBox(fleet.data));
  const declared = fleet.data.tasks;
  if (declared.length === 0) return tasks.replaceChildren(empty("This fleet declares no task."));
  tasks.replaceChildren(
    h(
      "div",
      { class: "columns" },
      taskList(declared),
      produces && h("div", {}, h("h3", {}, "Run a task"), taskForm(name, declared)),
    ),
  );
  runs.hidden = false;
  page.poll(LIST_POLL_MS, async () => {
    latest.replaceChildren(await latestRuns(name));
    return true;
  });
}

// The fleet's tasks, each with its typed inputs and outputs.
function taskList(tasks) {
  const fields = (list) =>
    list.length === 0
      ? h("span", { class: "muted" }, "nothing")
      : list.map((f) => h("span", { class: "task-field" }, h("code", {}, f.name), " ", typeBadge(f)));
  return h(
    "ul",
    { class: "tasks" },
    tasks.map((task) =>
      h(
        "li",
        { id: `task-${task.name}` },
        h("strong", {}, task.name),
        task.description && h("span", { class: "muted" }, ` · ${task.description}`),
        h("div", { class: "small task-signature" }, fields(task.inputs), " → ", fields(task.outputs)),
      ),
    ),
  );
}

// The latest ad hoc runs of the fleet's tasks, newest first: a table, or why there is none.
async function latestRuns(fleet) {
  const { ok, data } = await api("GET", `/fleets/${enc(fleet)}/runs?limit=${RUNS_SIZE}`);
  if (!ok) return alertBox(data);
  if (data.length === 0) return empty("No task was run ad hoc yet.");
  const count = (title) => {
    const what = title.toLowerCase();
    return [title, (event) => runCounts(event)?.[what] ?? "—", `count run-${what}`];
  };
  const task = (event) => event.workflow.name.slice(fleet.length + 1);
  return eventsTable(data, false, [["Task", task], count("Results"), count("Skipped"), count("Failed")]);
}

// How many workloads an ended run has results of, skipped and failed: from its outputs, or else from its fleet
// step's (a run that failed for too many failures has no outputs of its own).
function runCounts(event) {
  if (!FINISHED.has(event.status)) return null;
  const outputs = event.outputs ?? event.steps?.find((step) => step.kind === "fleet")?.outputs;
  if (!outputs) return null;
  return {
    results: Object.keys(outputs.results ?? {}).length,
    skipped: outputs.skipped?.length ?? 0,
    failed: outputs.failed?.length ?? 0,
  };
}

// A form to run one of the fleet's tasks ad hoc: one control per typed input of the task picked, and a selector.
function taskForm(fleet, tasks) {
  const choice = h(
    "select",
    { id: "task-name", name: "task", onchange: () => pick() },
    tasks.map((task) => h("option", { value: task.name }, task.name)),
  );
  const inputs = h("div", { class: "task-inputs" });
  const selector = h("input", {
    type: "text",
    id: "task-selector",
    name: "selector",
    placeholder: "site=lund role=edge",
    autocomplete: "off",
    "aria-describedby": "task-selector-error",
  });
  const selectorError = h("div", { class: "field-error", id: "task-selector-error" });
  const button = h("button", { type: "submit", class: "primary" }, "Run task");
  const result = h("div", { class: "form-result" });
  let controls = [];
  const pick = () => {
    const task = tasks.find((t) => t.name === choice.value);
    controls = task.inputs.map(fieldControl);
    inputs.replaceChildren(
      ...controls.map((c) => c.element),
      ...(controls.length === 0 ? [h("p", { class: "muted" }, "This task takes no argument.")] : []),
    );
  };
  const run = async (submitted) => {
    submitted.preventDefault();
    result.replaceChildren();
    selectorError.textContent = "";
    const args = readFields(controls);
    const labels = readSelector(selector.value);
    if (!labels) selectorError.textContent = "write labels as key=value, separated by spaces or commas";
    if (!args || !labels) return;
    const body = { task: choice.value, args, selector: labels };
    const refusal = await sendEvent(`/fleets/${enc(fleet)}/tasks`, body, { button, result, controls });
    const problem = refusal?.problems?.find((p) => p.field === "selector");
    if (problem) selectorError.textContent = problem.message;
  };
  pick();
  return h(
    "form",
    { class: "event-form task-form", onsubmit: run, novalidate: true },
    h("div", { class: "field" }, h("label", { for: "task-name" }, "Task"), choice),
    inputs,
    h(
      "div",
      { class: "field" },
      h("label", { for: "task-selector" }, "Selector", h("span", { class: "optional" }, "optional")),
      selector,
      h("small", { class: "hint" }, "Labels every workload chosen has; none chooses them all"),
      selectorError,
    ),
    h("div", { class: "actions" }, button, h("span", { class: "muted small" }, `POST /fleets/${fleet}/tasks`)),
    result,
  );
}

// Labels written as key=value, separated by spaces or commas, as an object; null if one is not key=value.
function readSelector(text) {
  const labels = {};
  for (const pair of text.split(/[\s,]+/).filter(Boolean)) {
    const at = pair.indexOf("=");
    if (at < 1) return null;
    labels[pair.slice(0, at)] = pair.slice(at + 1);
  }
  return labels;
}

export async function workloadPage(page, _query, fleet, name) {
  const details = h("div", {}, loading());
  const history = h("div", {}, loading());
  page.show(
    crumbs(["Fleets", "#/fleets"], [fleet, `#/fleets/${enc(fleet)}`]),
    pageHeader(name, "A workload: its state, its host and its history"),
    card(null, details),
    card("History", history),
  );
  page.poll(LIST_POLL_MS, async () => {
    const [workload, events] = await Promise.all([
      api("GET", `/fleets/${enc(fleet)}/workloads/${enc(name)}`),
      api("GET", `/fleets/${enc(fleet)}/workloads/${enc(name)}/events?limit=200`),
    ]);
    details.replaceChildren(
      workload.ok
        ? h(
            "p",
            { class: "workload-state" },
            statusBadge(workload.data.state),
            ` on ${workload.data.host ?? "no host yet"} since ${at(workload.data.since)}`,
            workload.data.message && h("span", { class: "muted" }, ` · ${workload.data.message}`),
          )
        : alertBox(workload.data),
    );
    history.replaceChildren(events.ok ? eventTable(events.data, false) : alertBox(events.data));
    return workload.ok;
  });
}

function hostBars(counts) {
  const hosts = Object.entries(counts.hosts).sort(([a], [b]) => a.localeCompare(b));
  if (hosts.length === 0) return empty("No host holds any workload: start a worker with --fleets.");
  const most = Math.max(...hosts.map(([, n]) => n));
  return h(
    "ul",
    { class: "host-bars" },
    hosts.map(([host, n]) =>
      h(
        "li",
        {},
        h("span", { class: "host-name mono" }, host),
        h("span", { class: "bar", style: `width: ${Math.max(2, (100 * n) / most)}%` }),
        h("span", { class: "count" }, n),
      ),
    ),
    counts.unassigned > 0 && h("li", { class: "muted" }, `${plural(counts.unassigned, "workload")} waiting for a host`),
  );
}

function workloadTable(fleet, page, params) {
  if (page.items.length === 0) return empty("No workload matches.");
  const next = page.next && new URLSearchParams(params);
  next?.set("after", page.next);
  next?.delete("limit");
  return h(
    "div",
    {},
    h(
      "table",
      { class: "list workloads" },
      h(
        "thead",
        {},
        h("tr", {}, ["Workload", "State", "Host", "Labels", "Since", "Message"].map((title) => h("th", {}, title))),
      ),
      h(
        "tbody",
        {},
        page.items.map((w) =>
          h(
            "tr",
            {},
            h("td", {}, h("a", { href: `#/fleets/${enc(fleet)}/workloads/${enc(w.name)}` }, w.name)),
            h("td", {}, statusBadge(w.state)),
            h("td", { class: "mono" }, w.host ?? "—"),
            h("td", { class: "muted" }, Object.entries(w.labels).map(([k, v]) => `${k}=${v}`).join(", ")),
            h("td", { class: "muted" }, at(w.since)),
            h("td", { class: "muted" }, w.message),
          ),
        ),
      ),
    ),
    next && h("a", { class: "next-page", href: `#/fleets/${enc(fleet)}?${next}` }, "Next page ›"),
  );
}

function eventTable(events, withWorkload) {
  if (events.length === 0) return empty("Nothing happened yet.");
  return h(
    "table",
    { class: "list lifecycle" },
    h(
      "thead",
      {},
      h("tr", {}, h("th", {}, "When"), withWorkload && h("th", {}, "Workload"), h("th", {}, "What"), h("th", {}, "Host"), h("th", {}, "Message")),
    ),
    h(
      "tbody",
      {},
      events.map((e) =>
        h(
          "tr",
          {},
          h("td", { class: "muted" }, at(e.at)),
          withWorkload && h("td", {}, h("a", { href: `#/fleets/${enc(e.fleet)}/workloads/${enc(e.workload)}` }, e.workload)),
          h("td", {}, h("span", { class: `badge lifecycle lifecycle-${e.kind}` }, e.kind)),
          h("td", { class: "mono" }, e.host ?? "—"),
          h("td", { class: "muted" }, e.message),
        ),
      ),
    ),
  );
}
