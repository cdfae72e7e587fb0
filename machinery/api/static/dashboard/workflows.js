// The workflows page: each workflow with its steps, inputs and outputs.

import {
  LIST_SIZE,
  enc,
  h,
  api,
  pageHeader,
  card,
  loading,
  empty,
  alertBox,
  typeName,
  plural,
  pagination,
} from "./shared.js";

export async function workflowsPage(page) {
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
