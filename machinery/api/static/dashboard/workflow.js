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
  typeBadge,
  eventsTable,
} from "./shared.js";

const JSON_EXAMPLES = { array: "[1, 2]", object: '{"key": "value"}' };

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
