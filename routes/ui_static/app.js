// The operators' page: reads the module's own API with the token kept in this tab's session storage.
// Every value from the API is put in the page as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "lambda-action-token";
const REFRESH_MS = 5000;
const expanded = new Set();
let refreshTimer = null;

function $(selector) { return document.querySelector(selector); }

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const body = await response.json().catch(() => ({}));
  if (response.status === 401 && token) { signOut("Your token expired or was refused: sign in again."); }
  if (!response.ok) throw new Error(body.error || ("HTTP " + response.status));
  return body;
}

function showSignIn(message) {
  $("#sign-in").hidden = false;
  $("#board").hidden = true;
  $("#sign-out").hidden = true;
  $("#who").textContent = "";
  $("#sign-in-error").textContent = message || "";
}

function showBoard() {
  $("#sign-in").hidden = true;
  $("#board").hidden = false;
  $("#sign-out").hidden = false;
  refresh();
  if (refreshTimer === null) refreshTimer = setInterval(refresh, REFRESH_MS);
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (refreshTimer !== null) { clearInterval(refreshTimer); refreshTimer = null; }
  showSignIn(message);
}

function filters() {
  const form = new FormData($("#filters"));
  const since = new Date(Date.now() - Number(form.get("period")) * 1000).toISOString();
  return { since, functionName: form.get("function_name").trim(), success: form.get("success") };
}

function query(parameters) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(parameters)) if (value) search.set(key, value);
  return search.toString();
}

function number(value, digits) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function statsRow(item, name) {
  const row = element("tr");
  row.append(element("td", name));
  for (const key of ["count", "successes", "function_errors", "throttles", "other_failures"]) {
    row.append(element("td", item[key], "number"));
  }
  const rate = element("td", null, "rate");
  const bar = element("span", null, "bar");
  const filled = element("span");
  filled.style.width = ((item.success_rate || 0) * 100).toFixed(1) + "%";
  bar.append(filled);
  rate.append(bar, " ", element("span", item.success_rate === null ? "–" : (item.success_rate * 100).toFixed(1) + "%"));
  row.append(rate);
  for (const key of ["p50_ms", "p95_ms", "p99_ms"]) row.append(element("td", number(item[key], 1), "number"));
  return row;
}

function renderStats(stats) {
  const body = $("#stats tbody");
  body.replaceChildren(...stats.functions.map((item) => statsRow(item, item.function_name)));
  $("#stats tfoot").replaceChildren(statsRow(stats.totals, "All functions"));
}

function renderChart(invocations) {
  const points = invocations.filter((item) => item.duration_ms !== null && item.status_code !== null);
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("viewBox", "0 0 600 180");
  if (points.length === 0) {
    const empty = document.createElementNS(svgNS, "text");
    empty.setAttribute("x", "10"); empty.setAttribute("y", "20");
    empty.textContent = "no answered calls in this period";
    svg.append(empty);
    $("#chart").replaceChildren(svg);
    return;
  }
  const times = points.map((item) => Date.parse(item.invoked_at));
  const first = Math.min(...times), last = Math.max(...times);
  const slowest = Math.max(...points.map((item) => item.duration_ms), 1);
  points.forEach((item, index) => {
    const dot = document.createElementNS(svgNS, "circle");
    const x = last === first ? 300 : 20 + ((times[index] - first) / (last - first)) * 560;
    dot.setAttribute("cx", x.toFixed(1));
    dot.setAttribute("cy", (170 - (item.duration_ms / slowest) * 150).toFixed(1));
    dot.setAttribute("r", "3");
    if (!item.success) dot.setAttribute("class", "failed");
    const title = document.createElementNS(svgNS, "title");
    title.textContent = item.function_name + ": " + item.duration_ms.toFixed(1) + " ms";
    dot.append(title);
    svg.append(dot);
  });
  const label = document.createElementNS(svgNS, "text");
  label.setAttribute("x", "4"); label.setAttribute("y", "12");
  label.textContent = "slowest " + slowest.toFixed(1) + " ms";
  svg.append(label);
  $("#chart").replaceChildren(svg);
}

function outcomeOf(item) {
  if (item.success === null) return "running";
  if (item.success) return "success";
  return item.function_error ? "function error (" + item.function_error + ")" : (item.error_code || "failed");
}

function detailBlock(title, text) {
  const block = element("div");
  block.append(element("strong", title), element("pre", text === null || text === undefined ? "–" : text));
  return block;
}

async function renderDetail(row, invocationId) {
  const detailRow = element("tr", null, "detail");
  detailRow.dataset.detailOf = invocationId;
  const cell = element("td", "loading…");
  cell.colSpan = 7;
  detailRow.append(cell);
  row.after(detailRow);
  try {
    const { invocation } = await api("/api/v1/invocations/" + encodeURIComponent(invocationId));
    const asText = (value) => (typeof value === "string" ? value : JSON.stringify(value, null, 2));
    cell.replaceChildren(
      detailBlock("Payload", asText(invocation.payload)),
      detailBlock("Response", asText(invocation.response_payload)),
      detailBlock("Error", invocation.error_message),
      detailBlock("Log tail", invocation.log_tail),
      detailBlock("Full log", invocation.logs.log_group ? invocation.logs.log_group + "\n" + invocation.logs.insights_query : invocation.logs.note),
      detailBlock("Request ids", "request " + (invocation.x_request_id || "–") + ", Lambda " + (invocation.request_id || "–")),
    );
  } catch (error) {
    cell.textContent = error.message;
  }
}

function renderInvocations(invocations) {
  const rows = [];
  for (const item of invocations) {
    const row = element("tr", null, "invocation" + (item.success === false ? " failed" : ""));
    row.dataset.invocationId = item.invocation_id;
    row.append(
      element("td", item.invoked_at.replace("T", " ").replace("Z", "")),
      element("td", item.function_name),
      element("td", item.invocation_type),
      element("td", item.transport),
      element("td", outcomeOf(item), "outcome"),
      element("td", number(item.duration_ms, 1), "number"),
      element("td", item.invocation_id),
    );
    row.addEventListener("click", () => toggle(row, item.invocation_id));
    rows.push(row);
  }
  $("#invocations tbody").replaceChildren(...rows);
  for (const row of rows) if (expanded.has(row.dataset.invocationId)) renderDetail(row, row.dataset.invocationId);
}

function toggle(row, invocationId) {
  const open = document.querySelector('tr.detail[data-detail-of="' + invocationId + '"]');
  if (open) { open.remove(); expanded.delete(invocationId); return; }
  expanded.add(invocationId);
  renderDetail(row, invocationId);
}

async function refresh() {
  const { since, functionName, success } = filters();
  try {
    const [stats, page] = await Promise.all([
      api("/api/v1/stats?" + query({ since, function_name: functionName })),
      api("/api/v1/invocations?" + query({ since, function_name: functionName, success, limit: "100" })),
    ]);
    renderStats(stats);
    renderChart(page.invocations);
    renderInvocations(page.invocations);
    $("#board-error").textContent = "";
    $("#refreshed").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || "0") + 1);
  } catch (error) {
    $("#board-error").textContent = error.message;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#credentials").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    try {
      const body = await api("/api/v1/token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ client_id: form.get("client_id"), client_secret: form.get("client_secret") }),
      });
      sessionStorage.setItem(TOKEN_KEY, body.token);
      $("#who").textContent = form.get("client_id");
      event.target.reset();
      showBoard();
    } catch (error) {
      $("#sign-in-error").textContent = error.message;
    }
  });
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, new FormData(event.target).get("token").trim());
    event.target.reset();
    showBoard();
  });
  $("#filters").addEventListener("submit", (event) => { event.preventDefault(); expanded.clear(); refresh(); });
  $("#sign-out").addEventListener("click", () => signOut(""));
  if (sessionStorage.getItem(TOKEN_KEY)) showBoard(); else showSignIn("");
});
