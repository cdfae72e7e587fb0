// The machinery dashboard: one page over the REST API, routed by the URL's fragment (#/workflows/x).
// One module per page, and shared.js for what two pages or more use, so that a newcomer reads a page in one
// sitting and each page is tested on its own.

import { eventPage } from "./event.js";
import { eventsPage } from "./events.js";
import { executablesPage } from "./executables.js";
import { fleetPage, fleetsPage, workloadPage } from "./fleets.js";
import { schedulesPage } from "./schedules.js";
import { servicesPage } from "./services.js";
import { register, start } from "./shared.js";
import { workflowPage } from "./workflow.js";
import { workflowsPage } from "./workflows.js";

register(/^\/services$/, servicesPage);
register(/^\/executables$/, executablesPage);
register(/^\/workflows$/, workflowsPage);
register(/^\/workflows\/([^/]+)$/, workflowPage);
register(/^\/events$/, eventsPage);
register(/^\/events\/([^/]+)$/, eventPage);
register(/^\/schedules$/, schedulesPage);
register(/^\/fleets$/, fleetsPage);
register(/^\/fleets\/([^/]+)$/, fleetPage);
register(/^\/fleets\/([^/]+)\/workloads\/([^/]+)$/, workloadPage);
start();
