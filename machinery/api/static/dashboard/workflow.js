// A workflow's page: its graph, its recent events, and a form generated from its typed inputs to send one.

import {
  LIST_POLL_MS,
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
  eventsTable,
  fieldControl,
  readFields,
  sendEvent,
} from "./shared.js";

export async function workflowPage(page, _query, name) {
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
    const data = readFields(controls);
    if (!data) return;
    await sendEvent(`/e/${enc(workflow.name)}`, { data }, { button, result, controls });
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
