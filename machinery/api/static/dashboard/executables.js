// The executables page: the programs command services run, each with its parameters, a drawing of its rules
// (requires as arrows, conflicts as dashed red lines), and a form that builds a combination and checks it live.

import { LIST_SIZE, h, api, enc, pageHeader, loading, empty, alertBox, graphView, plural, pagination } from "./shared.js";

export async function executablesPage(page) {
  const subtitle = "Programs that command services run, their parameters and their rules";
  page.show(pageHeader("Executables", subtitle), loading());
  const { ok, data, headers } = await api("GET", `/executables?page_size=${LIST_SIZE}`);
  const header = pageHeader(
    "Executables",
    subtitle,
    ok && h("span", { class: "count" }, plural(pagination(headers).total, "executable")),
  );
  if (!ok) return page.show(header, alertBox(data));
  page.show(
    header,
    data.length
      ? h("div", { class: "cards" }, data.map(executableCard))
      : empty("No executable is registered yet: POST one to /executables, or run machinery apply."),
  );
}

function executableCard(executable) {
  const rules = h("div", { class: "graph rules", id: `rules-${executable.name}` }, loading());
  graphView(`/executables/${enc(executable.name)}/rules.svg`).then((view) => rules.replaceChildren(view));
  return h(
    "article",
    { class: "card executable", id: `executable-${executable.name}` },
    h(
      "header",
      {},
      h("h2", {}, executable.name),
      executable.version && h("span", { class: "badge" }, executable.version),
      h("code", { class: "address" }, executable.path),
    ),
    executable.description && h("p", { class: "muted" }, executable.description),
    h("h3", {}, "Parameters"),
    parameterTable(executable.parameters),
    h("h3", {}, "Rules"),
    rules,
    h("h3", {}, "Check a combination"),
    combinationForm(executable),
  );
}

function parameterTable(parameters) {
  if (parameters.length === 0) return empty("None.");
  const list = (flags) => flags.map((flag) => h("code", {}, flag)).flatMap((code, i) => (i ? [", ", code] : [code]));
  return h(
    "table",
    { class: "fields parameters" },
    h(
      "thead",
      {},
      h("tr", {}, ["flag", "value", "requires", "conflicts with", ""].map((title) => h("th", {}, title))),
    ),
    h(
      "tbody",
      {},
      parameters.map((p) =>
        h(
          "tr",
          { "data-flag": p.flag },
          h("td", {}, h("code", {}, p.flag), p.requires_root && h("span", { class: "optional" }, "root")),
          h("td", {}, p.value && h("span", { class: "badge type" }, p.choices ? p.choices.join(" | ") : p.value)),
          h("td", {}, list(p.requires)),
          h("td", {}, list(p.conflicts)),
          h("td", { class: "muted" }, p.description),
        ),
      ),
    ),
  );
}

// A checkbox per flag; each change asks the API whether the flags ticked go together, and shows its answer.
function combinationForm(executable) {
  const answer = h("div", { class: "combination-answer", "aria-live": "polite" });
  const boxes = executable.parameters.map((p) =>
    h("input", { type: "checkbox", value: p.flag, id: `flag-${executable.name}-${p.flag}` }),
  );
  let asked = 0;
  const check = async () => {
    const flags = boxes.filter((box) => box.checked).map((box) => box.value);
    const mine = ++asked;
    const { ok, data } = await api("POST", `/executables/${enc(executable.name)}/check`, { flags });
    if (mine !== asked) return; // a later change asked again
    answer.replaceChildren(
      ok
        ? h("p", { class: "argv" }, "argv: ", h("code", {}, [executable.path, ...data.argv].join(" ")))
        : alertBox(data),
    );
  };
  for (const box of boxes) box.addEventListener("change", check);
  return h(
    "form",
    { class: "combination", onsubmit: (submitted) => submitted.preventDefault() },
    h(
      "div",
      { class: "flags" },
      boxes.map((box) => h("label", { for: box.id }, box, " ", box.value)),
    ),
    answer,
  );
}
