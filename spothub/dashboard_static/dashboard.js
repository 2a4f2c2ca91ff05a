// spothub dashboard: reads the API through the local server (/api/...), which signs each request.
"use strict";

const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh") || 5) * 1000;
const GOOD = new Set(["serving", "running", "ready", "healthy", "ok", "launched", "completed", "enabled", "idle", "busy",
  "standby-ready", "standby-promoted"]);
const WARN = new Set(["placing", "launching", "replacing", "creating", "starting", "pending", "degraded", "at-risk",
  "interrupted", "cordoned", "draining", "listing", "excluded", "notice", "deleting", "stopping", "unhealthy",
  "standby-failed"]);
const BAD = new Set(["failed", "launch-failed", "error", "gone", "unreachable"]);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function tone(value) {
  const word = String(value ?? "").toLowerCase();
  if (GOOD.has(word)) return "ok";
  if (WARN.has(word)) return "warn";
  if (BAD.has(word)) return "bad";
  return "";
}

function badge(value) {
  return el("span", { class: tone(value) }, value ?? "-");
}

function ago(iso) {
  if (!iso) return "-";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (Number.isNaN(seconds)) return iso;
  if (seconds < 90) return `${seconds}s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  return `${Math.round(seconds / 3600)} h ago`;
}

function table(columns, rows, empty) {
  if (!rows.length) return el("p", { class: "empty" }, empty);
  return el("table", {},
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((cells) => el("tr", {}, cells.map((cell) =>
      el("td", { class: typeof cell === "string" && cell.length > 40 ? "text" : null }, cell ?? "-"))))));
}

async function read(path) {
  const response = await fetch(`/api/${path}`, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => ({ message: `HTTP ${response.status}` }));
  if (!response.ok) {
    const error = new Error(body.message || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function fill(id, content) {
  const body = document.querySelector(`#${id} .body`);
  body.replaceChildren(content);
}

function failed(id, error) {
  const missing = error.status === 403 || error.status === 404;
  fill(id, el("p", { class: missing ? "empty" : "error" },
    missing ? `not in this deployment's API (${error.message})` : error.message));
}

function gpuUtilization(gpu) {
  const gpus = (gpu && gpu.gpus) || [];
  const values = gpus.map((g) => g.utilization_pct).filter((v) => typeof v === "number");
  if (!values.length) return gpu && gpu.available === false ? "no GPU" : "-";
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  return `${Math.round(mean)}% of ${gpus.length}`;
}

const panels = {
  async serving() {
    const data = await read("spot-instances");
    const sw = document.getElementById("switch");
    sw.textContent = `provisioning ${data.provisioning} · ${data.state}`;
    sw.className = `pill ${tone(data.provisioning === "enabled" ? "ok" : "")}`;
    fill("serving", el("div", {},
      data.endpoint ? el("p", {}, "endpoint ", el("code", {}, data.endpoint)) : null,
      table(["REPLICA", "STATUS", "REGION", "INSTANCE", "CAPACITY", "IN SERVICE SINCE", "WHY"],
        data.replicas.map((r) => [r.replica_id, badge(r.status), r.region || (r.target_region ? `→ ${r.target_region}` : null),
          r.instance_id, r.capacity_type, r.placed_at, r.error || r.reason]), "no replicas: provisioning is off"),
      (data.standbys || []).length ? el("div", {}, el("h3", {}, "Warm standbys"),
        table(["REPLICA", "STATUS", "REGION", "ZONE", "CAPACITY", "INSTANCE", "READY SINCE"],
          data.standbys.map((s) => [s.replica_id, badge(s.status), s.region, s.zone || "-", s.capacity_type,
            s.instance_id, s.ready_at]), "")) : null));
    fill("instances", table(["INSTANCE", "STATUS", "REGION", "ZONE", "TYPE", "CAPACITY", "WORKLOAD", "HEARTBEAT", "GPU"],
      data.instances.map((i) => [i.instance_id, badge(i.status), i.region, i.availability_zone, i.instance_type,
        i.capacity_type, i.ready === null ? "-" : badge(i.ready ? "healthy" : "starting"), ago(i.last_seen),
        gpuUtilization(i.gpu)]), "no instances"));
    fill("remediations", table(["AT", "INSTANCE", "ALARM", "REASON"],
      data.remediations.slice().reverse().map((r) => [r.at, r.instance_id, r.alarm_name, r.reason]), "none recorded"));
  },
  async regions() {
    const data = await read("regions");
    fill("regions", el("div", {},
      el("p", { class: "dim" }, `best ${data.best || "none"} (${data.reason || ""})`),
      table(["RANK", "REGION", "SCORE", "SPOT $/h", "STATE", "WHY"], (data.regions || []).map((r) => [
        r.rank ?? "-", r.region, r.placement_score ?? "-", r.spot_price == null ? "-" : Number(r.spot_price).toFixed(4),
        badge(r.state), r.excluded ? `${r.excluded.kind || "excluded"} until ${r.excluded.until}` : r.reason]),
      "no worker regions")));
  },
  async timeline() {
    const data = await read("events?limit=30");
    fill("timeline", table(["AT", "KIND", "REGION", "WHAT"],
      data.events.map((e) => [e.at, badge(e.kind), e.region, e.summary]), "nothing happened yet"));
  },
  async jobs() {
    const data = await read("jobs?limit=10");
    fill("jobs", table(["JOB", "STATUS", "CREATED"],
      (data.jobs || []).map((j) => [j.job_id, badge(j.status), j.created_at]), "no jobs"));
  },
  async search() {
    const data = await read("search/status");
    const rows = Object.entries(data).filter(([, v]) => v === null || typeof v !== "object");
    fill("search", el("div", { class: "kv" }, rows.flatMap(([k, v]) => [el("span", { class: "dim" }, k),
      el("span", {}, k === "status" ? badge(v) : v ?? "-")])));
  },
  async deployments() {
    const [data, resources] = await Promise.all([read("deployments?limit=50"), read("resources/available")]);
    fill("deployments", el("div", {},
      el("p", { class: "dim" }, `GPUs: ${resources.allocated} allocated of ${resources.total}, ${resources.free} free`),
      table(["DEPLOYMENT", "MODEL", "TENANT", "STATUS", "REPLICAS", "GPUS", "CREATED"],
        data.deployments.map((d) => [d.deployment_id, d.model, d.tenant, badge(d.status), d.replicas, d.gpus,
          d.created_at]), "no deployments")));
  },
  async nodes() {
    const data = await read("nodes");
    fill("nodes", table(["NODE", "STATUS", "REGION", "TYPE", "GPUS (ALLOC/TOTAL)", "UTILIZATION", "HEARTBEAT", "TASKS"],
      data.nodes.map((n) => [n.instance_id, badge(n.status), n.region, n.instance_type,
        `${n.gpus_allocated}/${n.gpus_total}`,
        n.gpu_utilization_pct == null ? "-" : `${Math.round(n.gpu_utilization_pct)}%`, ago(n.last_heartbeat),
        n.tasks.map((t) => `${t.deployment_id} (${t.status})`).join(", ") || "-"]), "no GPU nodes"));
  },
};

async function health() {
  const pill = document.getElementById("health");
  try {
    const data = await read("health");
    pill.textContent = data.healthy ? "healthy" : `attention: ${data.checks.filter((c) => !c.ok).map((c) => c.name).join(", ")}`;
    pill.className = `pill ${data.healthy ? "ok" : "warn"}`;
  } catch (error) {
    pill.textContent = error.status === 404 || error.status === 403 ? "health: n/a" : "API unreachable";
    pill.className = `pill ${error.status === 404 || error.status === 403 ? "" : "bad"}`;
  }
}

async function refresh() {
  await Promise.all([
    health(),
    ...Object.entries(panels).map(([id, load]) => load().catch((error) =>
      (id === "serving" ? ["serving", "instances", "remediations"] : [id]).forEach((shown) => failed(shown, error)))),
  ]);
  document.getElementById("refreshed").textContent = `updated ${new Date().toLocaleTimeString()}`;
  document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
}

async function main() {
  const config = await fetch("/config.json").then((r) => r.json()).catch(() => ({}));
  document.getElementById("api").textContent = config.api_url || "";
  for (;;) {
    await refresh();
    await new Promise((resolve) => setTimeout(resolve, REFRESH_MS));
  }
}

main();
