// The schedules page: each schedule with when it runs, its next runs and the events it made; an admin pauses,
// resumes and deletes them here.

import {
  LIST_POLL_MS,
  LIST_SIZE,
  h,
  api,
  enc,
  may,
  pageHeader,
  loading,
  empty,
  alertBox,
  statusBadge,
  when,
  plural,
  pagination,
  eventsTable,
} from "./shared.js";

const NEXT_RUNS = 5;
const LATEST_EVENTS = 5;

export async function schedulesPage(page) {
  const administers = await may("admin");
  const subtitle = "Workflows sent their data on a cron expression or an interval";
  const count = h("span", { class: "count" });
  const list = h("div", {}, loading());
  page.show(pageHeader("Schedules", subtitle, count), list);

  const poller = page.poll(LIST_POLL_MS, async () => {
    const { ok, data, headers } = await api("GET", `/schedules?page_size=${LIST_SIZE}`);
    if (!ok) {
      list.replaceChildren(alertBox(data));
      return false;
    }
    count.textContent = plural(pagination(headers).total, "schedule");
    if (data.length === 0) {
      list.replaceChildren(
        empty("No schedule yet: POST one to /schedules, with a workflow, its data and a cron or an interval."),
      );
      return true;
    }
    const cards = await Promise.all(data.map((schedule) => scheduleCard(schedule, administers, poller)));
    list.replaceChildren(h("div", { class: "cards" }, cards));
    return true;
  });
}

async function scheduleCard(schedule, administers, poller) {
  const key = enc(schedule.id);
  const [next, events] = await Promise.all([
    api("GET", `/schedules/${key}/next?count=${NEXT_RUNS}`),
    api("GET", `/schedules/${key}/events?page_size=${LATEST_EVENTS}`),
  ]);
  const feedback = h("div", {});
  const act = (method, path) => async () => {
    const { ok, data } = await api(method, path);
    if (!ok) feedback.replaceChildren(alertBox(data));
    else poller.kick();
  };
  const actions = administers && [
    schedule.paused
      ? h("button", { class: "primary", onclick: act("POST", `/schedules/${key}/resume`) }, "Resume")
      : h("button", { onclick: act("POST", `/schedules/${key}/pause`) }, "Pause"),
    h(
      "button",
      {
        onclick: () => {
          if (confirm(`Delete the schedule ${schedule.name}? The events it made stay.`)) {
            act("DELETE", `/schedules/${key}`)();
          }
        },
      },
      "Delete",
    ),
  ];
  return h(
    "article",
    { class: "card schedule", id: `schedule-${schedule.name}` },
    h(
      "header",
      {},
      h("h2", {}, schedule.name),
      h("span", { class: "schedule-state" }, statusBadge(schedule.paused ? "paused" : "running")),
      h(
        "span",
        { class: "muted" },
        " sends ",
        h("a", { href: `#/workflows/${enc(schedule.workflow.name)}` }, schedule.workflow.name),
      ),
    ),
    h(
      "p",
      { class: "recurrence" },
      h("code", {}, recurrence(schedule)),
      h("span", { class: "muted" }, ` · overlap ${schedule.overlap} · catch-up ${schedule.catch_up}`),
    ),
    h(
      "p",
      { class: "muted small tally" },
      `${plural(schedule.runs, "run")} · ${schedule.skipped} skipped · last run ${when(schedule.last_run_at)}`,
    ),
    schedule.last_error && h("div", { class: "alert", role: "alert" }, h("strong", {}, schedule.last_error)),
    h("h3", {}, schedule.paused ? "Next runs once resumed" : "Next runs"),
    next.ok ? h("ol", { class: "next-runs" }, next.data.runs.map((run) => h("li", {}, when(run)))) : alertBox(next.data),
    h("h3", {}, "Latest events"),
    events.ok ? eventsTable(events.data, false) : alertBox(events.data),
    feedback,
    actions && h("div", { class: "actions" }, actions),
  );
}

function recurrence(schedule) {
  if (schedule.cron) return `${schedule.cron} (${schedule.timezone})`;
  return `every ${plural(schedule.interval, "second")}`;
}
