// The taskfleet dashboard: jobs and their progress, pushed by the scheduler
// (/events, about once a second), and a job's tasks on request. Everything
// shown is set as text, never as markup: file names and output are data.
"use strict";

const CHART_POINTS = 120; // seconds of throughput the chart keeps
const TASKS_SHOWN = 50;

const history = new Map(); // job id -> [{at, finished}], for rates and the chart
let selected = null; // the job whose page is open
let lastJobs = [];
let listedCount = -1; // the shown status's count when the task list was last fetched

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
  const counts = $("job-counts");
  counts.replaceChildren();
  for (const status of ["succeeded", "failed", "timed_out", "lost", "cancelled"]) {
    counts.appendChild(cell(String(job.by_status[status]), `number count-${status}`));
  }
  counts.appendChild(cell(String(left), "number"));
  $("job-cancel").hidden = !(job.state === "queued" || job.state === "running");
  drawChart(job.job);
  const count = job.by_status[$("task-status").value] ?? 0;
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
  listedCount = job ? job.by_status[status] : -1;
  const response = await fetch(`/jobs/${encodeURIComponent(selected)}/tasks?status=${status}&limit=${TASKS_SHOWN}`);
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

function openJob(jobId) {
  selected = jobId;
  listedCount = -1;
  $("task-record").hidden = true;
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
  events.addEventListener("error", () => { $("connection").textContent = "reconnecting…"; });
}

async function start() {
  if (new URLSearchParams(location.search).get("login") === "refused") {
    $("login-refused").hidden = false;
  }
  const session = await (await fetch("/session")).json();
  if (!session.signed_in) {
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
