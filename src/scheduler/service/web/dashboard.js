// The taskfleet dashboard: jobs and their progress, pushed by the scheduler
// (/events, about once a second), and a job's tasks on request. Everything
// shown is set as text, never as markup: file names and output are data.
"use strict";

const CHART_POINTS = 120; // seconds of throughput the chart keeps
const TASKS_SHOWN = 50;
const FLEET_SECONDS = 3600; // the fleet chart's span

const history = new Map(); // job id -> [{at, finished}], for rates and the chart
let selected = null; // the job whose page is open
let lastJobs = [];
let listedCount = -1; // the shown status's count when the task list was last fetched
let fleetSamples = []; // the fleet's samples, oldest first

function $(id) { return document.getElementById(id); }

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function age(seconds) {
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function dollars(amount) {
  if (amount === null || amount === undefined) return "";
  if (amount === 0) return "$0";
  return amount >= 0.01 ? `$${amount.toFixed(2)}` : `$${amount.toPrecision(2)}`;
}

function costText(job) {
  // What a job used and cost, in words (client.report.usage_lines says the same).
  const usage = job.usage || {};
  if (!usage.instance_seconds && !job.aws_requests) {
    return job.cpu_seconds ? `used ${job.cpu_seconds.toFixed(2)} CPU-seconds on local workers` : "";
  }
  let text = `used ${usage.instance_seconds.toFixed(1)} instance-seconds, ` +
    `${job.aws_requests.toLocaleString()} AWS requests`;
  if (job.cost_usd !== null && job.cost_usd !== undefined) {
    text += `: ${dollars(job.cost_usd)}`;
    if (job.cost_per_1000_tasks_usd !== null) text += ` (${dollars(job.cost_per_1000_tasks_usd)} per 1,000 tasks)`;
  }
  if (job.priced_at) text += ` at ${job.priced_at.instance_basis}`;
  if (job.first_worker_seconds !== undefined && job.first_worker_seconds !== null) {
    text += `; first worker after ${job.first_worker_seconds.toFixed(1)} s`;
  }
  return text;
}

function rate(jobId) {
  // Tasks finished per second over the last few updates.
  const points = history.get(jobId) || [];
  if (points.length < 2) return 0;
  const first = points[Math.max(0, points.length - 6)];
  const last = points[points.length - 1];
  const span = last.at - first.at;
  return span > 0 ? (last.finished - first.finished) / span : 0;
}

function remember(update) {
  for (const job of update.jobs) {
    const points = history.get(job.job) || [];
    points.push({ at: update.at, finished: job.finished });
    if (points.length > CHART_POINTS + 1) points.shift();
    history.set(job.job, points);
  }
}

function progressBar(job) {
  const bar = document.createElement("div");
  bar.className = "bar" + (job.state === "done" ? (job.failed ? " failed" : " done") : "");
  const fill = document.createElement("div");
  fill.style.width = `${job.tasks ? (100 * job.finished) / job.tasks : 0}%`;
  bar.appendChild(fill);
  bar.title = `${job.finished} of ${job.tasks}`;
  return bar;
}

function renderJobs(update) {
  const rows = $("job-rows");
  rows.replaceChildren();
  for (const job of update.jobs) {
    const row = document.createElement("tr");
    row.className = "clickable";
    row.dataset.job = job.job;
    row.appendChild(cell(job.job));
    row.appendChild(cell(job.state, `state state-${job.state}`));
    row.appendChild(cell(job.placement));
    const progress = document.createElement("td");
    progress.appendChild(progressBar(job));
    row.appendChild(progress);
    row.appendChild(cell(job.state === "running" ? rate(job.job).toFixed(1) : "", "number"));
    row.appendChild(cell(String(job.failed), "number"));
    row.appendChild(cell(dollars(job.cost_usd), "number"));
    row.appendChild(cell(age(update.at - job.created_at), "number"));
    const actions = document.createElement("td");
    if (job.state === "queued" || job.state === "running") {
      const cancel = document.createElement("button");
      cancel.type = "button";
      cancel.textContent = "Cancel";
      cancel.dataset.cancel = job.job;
      actions.appendChild(cancel);
    }
    row.appendChild(actions);
    rows.appendChild(row);
  }
  $("no-jobs").hidden = update.jobs.length > 0;
}

function renderJob(update) {
  const job = update.jobs.find((j) => j.job === selected);
  if (!job) return;
  $("job-id").textContent = job.job;
  $("job-state").textContent = job.state;
  $("job-state").className = `state state-${job.state}`;
  $("job-bar").style.width = `${job.tasks ? (100 * job.finished) / job.tasks : 0}%`;
  const left = job.tasks - job.finished;
  const perSecond = rate(job.job);
  const eta = job.state === "running" && perSecond > 0 ? `, about ${age(left / perSecond)} left` : "";
  $("job-summary").textContent =
    `${job.finished} of ${job.tasks} tasks finished${eta}; files: ${job.files.join(", ")}` +
    (job.file_count > job.files.length ? ` (+${job.file_count - job.files.length} more)` : "");
  $("job-cost").textContent = costText(job);
  const counts = $("job-counts");
  counts.replaceChildren();
  for (const status of ["succeeded", "failed", "timed_out", "lost", "cancelled"]) {
    counts.appendChild(cell(String(job.by_status[status]), `number count-${status}`));
  }
  counts.appendChild(cell(String(left), "number"));
  $("job-cancel").hidden = !(job.state === "queued" || job.state === "running");
  drawChart(job.job);
  const shown = $("task-status").value;
  const count = shown === "slowest" ? job.finished : job.by_status[shown] ?? 0;
  if (count !== listedCount) loadTasks();
}

function drawChart(jobId) {
  const points = history.get(jobId) || [];
  const rates = [];
  for (let i = 1; i < points.length; i++) {
    const span = points[i].at - points[i - 1].at;
    rates.push(span > 0 ? (points[i].finished - points[i - 1].finished) / span : 0);
  }
  const top = Math.max(1, ...rates);
  const step = 600 / Math.max(1, CHART_POINTS - 1);
  const coordinates = rates.map((r, i) => `${(i * step).toFixed(1)},${(118 - (r / top) * 116).toFixed(1)}`);
  $("job-chart").querySelector("polyline").setAttribute("points", coordinates.join(" "));
  $("job-chart-scale").textContent = `tasks finished per second, last ${rates.length} s; top ${top.toFixed(1)}/s`;
}

async function loadTasks() {
  if (!selected) return;
  const status = $("task-status").value;
  const job = lastJobs.find((j) => j.job === selected);
  listedCount = !job ? -1 : status === "slowest" ? job.finished : job.by_status[status];
  const which = status === "slowest" ? "slowest=true" : `status=${status}`;
  const response = await fetch(`/jobs/${encodeURIComponent(selected)}/tasks?${which}&limit=${TASKS_SHOWN}`);
  if (response.status === 401) { sessionEnded(); return; }
  if (!response.ok) return;
  const records = (await response.text()).split("\n").filter((line) => line).map((line) => JSON.parse(line));
  const rows = $("task-rows");
  rows.replaceChildren();
  for (const record of records) {
    const row = document.createElement("tr");
    row.className = "clickable";
    row.appendChild(cell(`${record.file}:${record.line}`));
    row.appendChild(cell(record.task, "task"));
    row.appendChild(cell(record.exit_code === null ? "" : String(record.exit_code), "number"));
    row.appendChild(cell((record.duration_ms / 1000).toFixed(3), "number"));
    row.appendChild(cell(tail(record.stderr || record.error || ""), "stderr"));
    row.addEventListener("click", () => {
      $("task-record").textContent = JSON.stringify(record, null, 2);
      $("task-record").hidden = false;
    });
    rows.appendChild(row);
  }
  $("no-tasks").hidden = records.length > 0;
}

function tail(text) {
  const lines = text.trimEnd().split("\n");
  return lines.slice(-3).join("\n").slice(-300);
}

function renderFleet(fleet) {
  // A stream opened again sends every sample again: keep each once.
  const lastAt = fleetSamples.length ? fleetSamples[fleetSamples.length - 1].at : 0;
  fleetSamples = fleetSamples.concat(fleet.samples.filter((s) => s.at > lastAt))
    .filter((s) => s.at > Date.now() / 1000 - FLEET_SECONDS);
  $("fleet-stack").textContent = `${fleet.stack}: up to ${fleet.max_workers} × ` +
    `${fleet.instance_types.join(" or ")}${fleet.spot ? " (spot)" : ""}, ` +
    `${fleet.slots_per_instance} slot${fleet.slots_per_instance === 1 ? "" : "s"} each`;
  const latest = fleetSamples[fleetSamples.length - 1];
  const counts = $("fleet-counts");
  counts.replaceChildren();
  if (latest) {
    for (const value of [latest.desired, latest.pending, latest.in_service, latest.busy, latest.leaving,
      latest.in_service * fleet.slots_per_instance, latest.visible, latest.in_flight, latest.dead_letters]) {
      counts.appendChild(cell(String(value), "number"));
    }
  }
  drawFleet(fleet.max_workers);
  const overhead = fleet.overhead;
  $("fleet-overhead").textContent = `For no job (long polls that found nothing, these looks): ` +
    `${overhead.aws_requests.toLocaleString()} AWS requests, ${dollars(overhead.cost_usd) || "$?"}`;
  $("fleet").hidden = Boolean(selected);
}

function drawFleet(maxWorkers) {
  // From the first sample kept (at least a minute, at most the hour) to now.
  const now = Date.now() / 1000;
  const first = fleetSamples.length ? fleetSamples[0].at : now;
  const span = Math.min(FLEET_SECONDS, Math.max(60, now - first));
  const top = Math.max(1, maxWorkers, ...fleetSamples.map((s) => s.desired));
  const x = (at) => ((600 * (at - (now - span))) / span).toFixed(1);
  const y = (n) => (114 - (n / top) * 108).toFixed(1); // off the frame, so 0 shows
  const line = (field) => fleetSamples.map((s) => `${x(s.at)},${y(s[field])}`).join(" ");
  $("fleet-chart").querySelector("polyline.in-service").setAttribute("points", line("in_service"));
  $("fleet-chart").querySelector("polyline.desired").setAttribute("points", line("desired"));
  $("fleet-chart-scale").textContent = `instances in service (solid) and desired (dashed), ` +
    `last ${age(span)}, top ${top}; ${fleetSamples.length} looks`;
}

function openJob(jobId) {
  selected = jobId;
  listedCount = -1;
  $("task-record").hidden = true;
  $("fleet").hidden = Boolean(jobId) || fleetSamples.length === 0;
  $("jobs").hidden = Boolean(jobId);
  $("job").hidden = !jobId;
  if (jobId) {
    $("job-download").href = `/jobs/${encodeURIComponent(jobId)}/results`;
    $("job-download").setAttribute("download", `${jobId}.jsonl`);
    renderJob({ jobs: lastJobs, at: Date.now() / 1000 });
  }
}

function route() {
  const match = location.hash.match(/^#job=([0-9A-Za-z._-]+)$/);
  openJob(match ? match[1] : null);
}

async function cancel(jobId) {
  const response = await fetch(`/jobs/${encodeURIComponent(jobId)}/cancel`, { method: "POST" });
  if (response.status === 401) { sessionEnded(); return; }
  $("connection").textContent = response.ok ? `job ${jobId} cancelled` : `cancel refused (${response.status})`;
}

function listen() {
  const events = new EventSource("/events");
  events.addEventListener("jobs", (message) => {
    const update = JSON.parse(message.data);
    lastJobs = update.jobs;
    remember(update);
    renderJobs(update);
    if (selected) renderJob(update);
    $("connection").textContent = update.dispatch === "ok" ? "live" : "dispatch stopped";
  });
  events.addEventListener("fleet", (message) => renderFleet(JSON.parse(message.data)));
  events.addEventListener("error", async () => {
    $("connection").textContent = "reconnecting…";
    // The stream ends when the session does; a refused one (401, 429) is not retried.
    if (!(await signedIn())) {
      events.close();
      sessionEnded();
    } else if (events.readyState === EventSource.CLOSED) {
      $("connection").textContent = "too many open streams; retrying in 10 s";
      setTimeout(listen, 10000);
    }
  });
}

async function signedIn() {
  try {
    return (await (await fetch("/session")).json()).signed_in;
  } catch {
    return true; // the scheduler is out of reach: the session may well be alive
  }
}

function sessionEnded() {
  for (const id of ["jobs", "job", "fleet", "logout"]) $(id).hidden = true;
  $("session-ended").hidden = false;
  $("login").hidden = false;
  $("connection").textContent = "signed out";
}

async function start() {
  if (new URLSearchParams(location.search).get("login") === "refused") {
    $("login-refused").hidden = false;
  }
  if (!(await signedIn())) {
    $("login").hidden = false;
    $("connection").textContent = "signed out";
    return;
  }
  $("logout").hidden = false;
  $("job-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-cancel]");
    if (button) { cancel(button.dataset.cancel); return; }
    const row = event.target.closest("tr[data-job]");
    if (row) location.hash = `job=${row.dataset.job}`;
  });
  $("job-cancel").addEventListener("click", () => { if (selected) cancel(selected); });
  $("task-status").addEventListener("change", loadTasks);
  window.addEventListener("hashchange", route);
  route();
  listen();
}

start();
