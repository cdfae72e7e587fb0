// An event's page, followed live: its graph, its steps (a map step's with the progress of its items and those
// that failed, a fleet step's with its items by workload), its outputs and data, its actions and a signal form.

import {
  FINISHED,
  enc,
  h,
  api,
  may,
  graphView,
  pageHeader,
  crumbs,
  card,
  loading,
  alertBox,
  statusBadge,
  when,
  took,
  plural,
} from "./shared.js";

const EVENT_POLL_MS = 1000;
const ITEMS_PAGE = 50;

// The order in which a map step's items are counted, by status; a status not listed comes last.
const ITEM_STATUSES = ["completed", "skipped", "failed", "retrying", "running", "ready", "pending"];

// The filters of a fleet step's items, and the statuses each shows: "running" is every item under way.
const ITEM_FILTERS = {
  all: [],
  completed: ["completed"],
  failed: ["failed"],
  skipped: ["skipped"],
  running: ["running", "retrying", "ready"],
};

// What a notification's status means, said of a notification.
const NOTIFICATION_STATES = {
  ready: "to send",
  running: "being sent",
  retrying: "to send again",
  completed: "delivered",
  failed: "given up",
};

export async function eventPage(page, _query, id) {
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
  // The failed items of each map step, kept from one look to the next until their count or the event changes.
  const failedLists = new Map();
  const failedOf = (step, event) => {
    const failed = step.items?.counts?.failed;
    const key = `${failed}/${event.updated_at}`;
    if (!failed) failedLists.delete(step.id);
    else if (failedLists.get(step.id)?.key !== key) {
      const retryable = produces && event.status === "failed";
      failedLists.set(step.id, { key, element: failedItems(`${url}/steps/${enc(step.id)}/items`, retryable) });
    }
    return failedLists.get(step.id)?.element;
  };
  // The table of each fleet step's items, kept with its filter and read again when its items or the event change.
  const fleetTables = new Map();
  const fleetItemsOf = (step, event) => {
    if (!fleetTables.has(step.id))
      fleetTables.set(step.id, fleetItems(`${url}/steps/${enc(step.id)}/items`, step.fleet));
    const table = fleetTables.get(step.id);
    const key = JSON.stringify([step.items, event.updated_at]);
    if (table.key !== key) {
      table.key = key;
      table.refresh();
    }
    return table.element;
  };
  const itemsOf = (step, event) =>
    step.kind === "fleet" && step.items ? fleetItemsOf(step, event) : failedOf(step, event);

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
    // Items move on without changing their event: their counts are looked at too.
    const version = JSON.stringify([event.updated_at, event.steps.map((step) => step.items)]);
    if (version !== seen) {
      // The graph is fetched before anything changes on the page, so that the page shows one state at a time.
      const view = await graphView(`${url}/graph.svg`);
      seen = version;
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
        event.parent ? " · child of event " : "",
        event.parent
          ? h(
              "a",
              { href: `#/events/${enc(event.parent.event)}`, id: "event-parent" },
              h("code", {}, event.parent.event),
            )
          : "",
        event.parent ? `, step ${event.parent.step}` : "",
      );
      problem.replaceChildren(...(event.error ? [alertBox(event.error)] : []));
      outputs.replaceChildren(json(event.outputs));
      outputsCard.hidden = event.outputs == null;
      keepOpen(steps, () => steps.replaceChildren(...event.steps.map((step) => stepItem(step, itemsOf(step, event)))));
      data.replaceChildren(json(event.data));
      cancel.disabled = FINISHED.has(event.status);
      pause.disabled = FINISHED.has(event.status) || event.status === "paused";
      resume.disabled = event.status !== "paused";
      rerun.disabled = !FINISHED.has(event.status);
      retry.disabled = event.status !== "failed";
      signal.hidden = FINISHED.has(event.status);
    }
    // The items running when their event failed still finish.
    return !FINISHED.has(event.status) || event.steps.some((step) => step.items?.counts?.running);
  });
}

// Rebuilds a list with render(), keeping open the <details> that were open.
function keepOpen(container, render) {
  const open = new Set([...container.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  render();
  for (const details of container.querySelectorAll("details")) details.open = open.has(details.dataset.key);
}

// A step of the timeline; items is the list of a map step's failed items, if it has any, or a fleet step's items.
function stepItem(step, items) {
  const what = [step.kind !== "service" && step.kind, step.service !== step.id && step.service, step.workflow]
    .filter(Boolean)
    .join(" · ");
  const facts = [
    step.attempts && plural(step.attempts, "attempt"),
    step.started_at && `started ${when(step.started_at)}`,
    took(step.started_at, step.ended_at) && `took ${took(step.started_at, step.ended_at)}`,
    step.route && `took route ${step.route}`,
    exitCode(step) != null && `exit code ${exitCode(step)}`,
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
      step.fleet &&
        h(
          "span",
          { class: "muted step-fleet" },
          h("a", { href: `#/fleets/${enc(step.fleet)}` }, step.fleet),
          ` · task ${step.task}`,
        ),
      statusBadge(step.status),
    ),
    facts.length > 0 && h("div", { class: "muted small" }, facts.join(" · ")),
    step.items && itemsProgress(step.items, step.kind === "fleet" ? "workloads" : "items"),
    step.note && h("div", { class: "muted small item-note" }, step.note),
    step.child &&
      h(
        "div",
        { class: "small" },
        "child event ",
        h("a", { href: `#/events/${enc(step.child)}`, class: "child-link" }, h("code", {}, step.child)),
      ),
    step.error && h("div", { class: "alert small" }, step.error.message),
    items,
    section("inputs", step.inputs),
    section("outputs", step.outputs),
    step.error?.stderr != null && section("stderr", step.error.stderr),
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

// A map or fleet step's items (named noun): a bar of those done, skipped (a fleet's workloads not up), failed,
// under way and not started, its sentence, and their counts.
function itemsProgress({ total, counts }, noun) {
  const count = (...statuses) => statuses.reduce((sum, status) => sum + (counts?.[status] ?? 0), 0);
  const done = count("completed");
  const skipped = count("skipped");
  const failed = count("failed");
  const underWay = count("running", "ready", "retrying");
  const parts = [
    ["completed", done, "done"],
    ["skipped", skipped, "skipped"],
    ["failed", failed, "failed"],
    ["running", underWay, "under way"],
    ["pending", total - done - skipped - failed - underWay, "not started"],
  ];
  const bar = h(
    "div",
    { class: "items-bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": done },
    parts
      .filter(([, n]) => n > 0)
      .map(([status, n, label]) => {
        const part = h("span", { class: `status-${status}`, title: `${number(n)} ${label}` });
        part.style.width = `${(100 * n) / total}%`; // set through the CSSOM, not as a style attribute
        return part;
      }),
  );
  const rank = (status) => (ITEM_STATUSES.includes(status) ? ITEM_STATUSES.indexOf(status) : ITEM_STATUSES.length);
  const byStatus = Object.entries(counts ?? {}).sort(([a], [b]) => rank(a) - rank(b));
  return h(
    "div",
    { class: "items" },
    bar,
    h(
      "div",
      { class: "small items-done" },
      `${number(done)} of ${number(total)} ${noun} done`,
      skipped > 0 && `, ${number(skipped)} skipped`,
      failed > 0 && `, ${number(failed)} failed`,
    ),
    byStatus.length > 0 &&
      h(
        "div",
        { class: "items-counts" },
        byStatus.map(([status, n]) => h("span", { class: `badge status status-${status}` }, `${number(n)} ${status}`)),
      ),
  );
}

// A step's items, read a page at a time from its items endpoint at path and added to body as row(item) renders
// each; "More" reads the next page. reset(statuses) reads them again from the first, as many as were shown, in
// those statuses (all if none; the last ones if not given).
function itemPages(path, body, row) {
  const problem = h("div", {});
  const none = h("p", { class: "muted small", hidden: true }, "No item in this status.");
  const more = h("button", { type: "button", class: "more-items", hidden: true, onclick: () => load(false) }, "More");
  let statuses = [];
  let after = -1;
  let shown = 0;
  let latest = 0;
  const load = async (fresh) => {
    const asked = ++latest;
    const limit = fresh ? Math.min(1000, Math.max(ITEMS_PAGE, shown)) : ITEMS_PAGE;
    const params = new URLSearchParams({ after: fresh ? -1 : after, limit });
    for (const status of statuses) params.append("status", status);
    more.disabled = true;
    const { ok, data } = await api("GET", `${path}?${params}`);
    if (asked !== latest) return; // a later read answers in its place
    more.disabled = false;
    problem.replaceChildren(...(ok ? [] : [alertBox(data)]));
    if (!ok) return;
    if (fresh) {
      body.replaceChildren();
      shown = 0;
      after = -1;
    }
    body.append(...data.map(row));
    shown += data.length;
    after = data.at(-1)?.index ?? after;
    more.hidden = data.length < limit;
    none.hidden = shown > 0;
  };
  return {
    problem,
    none,
    more,
    reset(chosen = statuses) {
      statuses = chosen;
      return load(true);
    },
  };
}

// The failed items of a map step, from its items endpoint at path.
function failedItems(path, retryable) {
  const list = h("ul", { class: "history" });
  const pages = itemPages(path, list, (item) =>
    h(
      "li",
      {},
      h("strong", {}, `#${item.index}`),
      " ",
      item.error?.message ?? "failed",
      h("span", { class: "muted" }, ` · ${plural(item.attempts, "attempt")}`),
    ),
  );
  pages.reset(["failed"]);
  return h(
    "div",
    { class: "failed-items" },
    h("div", { class: "small strong" }, "Failed items"),
    list,
    pages.problem,
    pages.more,
    retryable && h("p", { class: "muted small" }, "Retry runs only the failed items again."),
  );
}

// A fleet step's items by workload, filtered by status, from its items endpoint at path: each with its result, its
// error or why it was skipped. refresh() reads them again.
function fleetItems(path, fleet) {
  const body = h("tbody", {});
  const pages = itemPages(path, body, (item) =>
    h(
      "tr",
      { class: `item status-${item.status}`, "data-workload": item.workload },
      h(
        "td",
        {},
        h(
          "a",
          { href: `#/fleets/${enc(fleet)}/workloads/${enc(item.workload)}`, class: "workload-link" },
          item.workload,
        ),
      ),
      h("td", {}, statusBadge(item.status)),
      h("td", { class: "count" }, item.attempts),
      h("td", { class: "item-result" }, itemResult(item)),
    ),
  );
  const filter = h(
    "select",
    { class: "item-filter", "aria-label": "Show the items", onchange: () => pages.reset(ITEM_FILTERS[filter.value]) },
    Object.keys(ITEM_FILTERS).map((name) => h("option", { value: name }, name)),
  );
  const element = h(
    "div",
    { class: "fleet-items" },
    h("div", { class: "small strong" }, "Workloads ", filter),
    h(
      "table",
      { class: "list items-table" },
      h("thead", {}, h("tr", {}, ["Workload", "Status", "Attempts", "Result"].map((title) => h("th", {}, title)))),
      body,
    ),
    pages.none,
    pages.problem,
    pages.more,
  );
  return { element, refresh: () => pages.reset() };
}

// What came of a fleet step's item: its outputs, its error, or why it was skipped.
function itemResult(item) {
  if (item.status === "completed") return h("code", { class: "small" }, JSON.stringify(item.outputs));
  if (item.error) return h("span", { class: "item-error" }, item.error.message);
  if (item.note) return h("span", { class: "muted item-note" }, item.note);
  return h("span", { class: "muted" }, "—");
}

function number(n) {
  return n.toLocaleString();
}

// The exit code of a command step: in its outputs once it completed, in its error once it failed.
function exitCode(step) {
  return step.outputs?.exit_code ?? step.error?.exit_code;
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

function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}
