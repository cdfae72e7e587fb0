// The events page: every event, filtered by workflow, status and data, and a button to retry the failed ones.

import {
  LIST_POLL_MS,
  LIST_SIZE,
  h,
  api,
  may,
  pageHeader,
  card,
  loading,
  alertBox,
  plural,
  pagination,
  eventsTable,
} from "./shared.js";

const EVENT_STATUSES = ["accepted", "running", "waiting", "paused", "completed", "failed", "cancelled"];
const PAGE_SIZE = 20;

// The addresses of the pages before this one, newest last, for "Newer": a page deep in the list is reached by the
// cursor of the one before it (which costs the same however deep), and has no number to go back to.
const trail = [];

export async function eventsPage(page, query) {
  const produces = await may("producer");
  const filters = {
    workflow: query.get("workflow") ?? "",
    status: query.get("status") ?? "",
    data: query.get("data") ?? "",
  };
  const cursor = query.get("cursor") ?? "";
  const number = Number(query.get("n") ?? 1);
  const go = (change) => {
    const next = new URLSearchParams(
      Object.entries({ ...filters, cursor: "", n: 1, ...change }).filter(([, v]) => v !== "" && v !== 1),
    );
    location.hash = `#/events${next.size ? `?${next}` : ""}`;
  };
  // Another filter starts from the newest events again.
  const filter = (change) => {
    trail.length = 0;
    go(change);
  };
  const workflowSelect = h(
    "select",
    { id: "filter-workflow", onchange: (e) => filter({ workflow: e.target.value }) },
    h("option", { value: "" }, "All workflows"),
  );
  const statusSelect = h(
    "select",
    { id: "filter-status", onchange: (e) => filter({ status: e.target.value }) },
    h("option", { value: "" }, "Any status"),
    EVENT_STATUSES.map((s) => h("option", { value: s, selected: s === filters.status }, s)),
  );
  const dataInput = h("input", {
    type: "text",
    id: "filter-data",
    class: "mono",
    value: filters.data,
    placeholder: 'data holds {"customer": "acme"}',
    onchange: (e) => filter({ data: e.target.value.trim() }),
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
      page_size: PAGE_SIZE,
      ...Object.fromEntries(Object.entries({ ...filters, cursor }).filter(([, v]) => v)),
    });
    const { ok, data, headers } = await api("GET", `/events?${params}`);
    if (!ok) {
      list.replaceChildren(alertBox(data));
      return false;
    }
    const pages = pagination(headers);
    const next = headers.get("X-Next-Cursor");
    // A search counts up to 10,000 events, and one on fields no workflow declares searchable stops after a second.
    const total =
      pages.total_exact === false ? `more than ${pages.total.toLocaleString("en")} events` : plural(pages.total, "event");
    const stopped = pages.complete === false ? " · the search stopped after a second: older events may match" : "";
    list.replaceChildren(eventsTable(data, true));
    pager.replaceChildren(
      h(
        "button",
        {
          disabled: number === 1 && !cursor,
          onclick: () => (trail.length ? (location.hash = trail.pop()) : go({})),
        },
        trail.length || !cursor ? "← Newer" : "⇤ Newest",
      ),
      h(
        "span",
        { class: "muted small" },
        `page ${number}${pages.total_exact === false ? "" : ` of ${pages.total_pages || 1}`} · ${total}${stopped}`,
      ),
      h(
        "button",
        {
          disabled: !next,
          onclick: () => {
            trail.push(location.hash);
            go({ cursor: next, n: number + 1 });
          },
        },
        "Older →",
      ),
    );
    return true;
  });
}
