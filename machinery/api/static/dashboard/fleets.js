// The fleets pages: every fleet with its workloads by state; a fleet's counts, its spread over hosts, a table of
// its workloads filtered by state, label and host, and the feed of its lifecycle events; a workload's history.

import {
  LIST_POLL_MS,
  h,
  api,
  enc,
  pageHeader,
  crumbs,
  card,
  loading,
  empty,
  alertBox,
  statusBadge,
  plural,
} from "./shared.js";

const STATES = ["initializing", "up", "unreachable", "dead"];
const PAGE_SIZE = 50;
const FEED_SIZE = 30;

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
    pageHeader(name, "Its workloads by state, the spread over its hosts, and what happened to them"),
    card("By state", summary),
    card("Spread over hosts", spread),
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
