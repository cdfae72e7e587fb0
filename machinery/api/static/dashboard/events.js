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

export async function eventsPage(page, query) {
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
