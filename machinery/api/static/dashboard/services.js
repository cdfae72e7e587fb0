// The services page: each service with its typed contract and the health of its last probe.

import {
  LIST_SIZE,
  h,
  api,
  pageHeader,
  loading,
  empty,
  alertBox,
  typeBadge,
  when,
  plural,
  pagination,
} from "./shared.js";

export async function servicesPage(page) {
  page.show(pageHeader("Services", "Microservices and their typed contracts"), loading());
  const [{ ok, data, headers }, probes] = await Promise.all([
    api("GET", `/services?page_size=${LIST_SIZE}`),
    api("GET", "/health/services"),
  ]);
  const health = new Map((probes.ok ? probes.data : []).map((probe) => [probe.service, probe]));
  const header = pageHeader(
    "Services",
    "Microservices and their typed contracts",
    ok && h("span", { class: "count" }, plural(pagination(headers).total, "service")),
  );
  if (!ok) return page.show(header, alertBox(data));
  page.show(
    header,
    data.length
      ? h("div", { class: "cards" }, data.map((service) => serviceCard(service, health.get(service.name))))
      : empty("No service is registered yet: POST one to /services, or run machinery apply."),
  );
}

// The colours of the step statuses that mean the same: fine, trying again, failed.
const HEALTH_LOOKS = { up: "completed", unreachable: "retrying", down: "failed" };

// probe: the last probe of the service's health check, if it has one and it was probed.
function serviceCard(service, probe) {
  return h(
    "article",
    { class: "card service", id: `service-${service.name}` },
    h(
      "header",
      {},
      h("h2", {}, service.name),
      h("span", { class: "badge method" }, service.kind === "command" ? "command" : service.method),
      probe &&
        h(
          "span",
          {
            class: `badge status health status-${HEALTH_LOOKS[probe.status]}`,
            title: `${probe.status} since ${when(probe.since)}${probe.error ? `: ${probe.error}` : ""}`,
          },
          probe.status,
        ),
      h("code", { class: "address" }, service.kind === "command" ? commandLine(service) : service.address),
    ),
    service.description && h("p", { class: "muted" }, service.description),
    h("h3", {}, "Inputs"),
    fieldTable(service.inputs),
    h("h3", {}, "Outputs"),
    fieldTable(service.outputs),
    h(
      "footer",
      { class: "muted" },
      `times out after ${service.timeout} s · ${plural(service.retry.attempts, "attempt")}, `,
      `backoff ${service.retry.backoff} s ×${service.retry.multiplier}`,
      service.concurrency && ` · at most ${plural(service.concurrency, "call")} at once`,
    ),
  );
}

// A command service as the line it runs: its executable, then each argument, an input's value as <input>.
function commandLine(service) {
  const words = service.arguments.map((a) =>
    [a.flag, "value" in a ? JSON.stringify(a.value) : a.input && `<${a.input}>`].filter(Boolean).join(" "),
  );
  return ["$", service.executable, ...words, service.stdin ? `< <${service.stdin}>` : ""].join(" ").trim();
}

function fieldTable(fields) {
  if (fields.length === 0) return empty("None.");
  return h(
    "table",
    { class: "fields" },
    h(
      "tbody",
      {},
      fields.map((f) =>
        h(
          "tr",
          {},
          h("td", {}, h("code", {}, f.name), f.required === false && h("span", { class: "optional" }, "optional")),
          h("td", {}, typeBadge(f)),
          h(
            "td",
            { class: "muted" },
            f.description,
            "default" in f && h("span", { class: "default" }, ` default ${JSON.stringify(f.default)}`),
          ),
        ),
      ),
    ),
  );
}
