// The jobs dashboard: the table of jobs and the selected job's loss curves, from the service's JSON API.
// models.js adds the models view through window.brightrun (the helpers below and a refresh hook).
// Every value from the API is user data (job ids, error messages, paths): it goes into the page through
// textContent and attributes only, never parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "brightrun.jobs.token";
  const LIVE = new Set(["queued", "preprocessing", "model_loaded", "training"]);
  const STATUSES = new Set([...LIVE, "completed", "failed", "cancelled", "interrupted"]);
  const LIVE_MS = 3000; // refresh while a job is live
  const IDLE_MS = 30000; // otherwise, slowly, so that new jobs still show up

  const $ = (id) => document.getElementById(id);
  let token = null;
  let selected = null; // the job id shown below the table
  let pinned = false; // true once the user picked a job; otherwise the newest is shown
  let timer = null;
  let busy = false;
  let again = false; // a refresh was asked for while one was running
  let plot = null;
  let plotJob = null;

  class AuthError extends Error {}
  const hooks = []; // more views to refresh with the jobs (models.js), each an async function

  // ---- token: from #token=..., then sessionStorage; the fragment is removed from the address bar

  function takeTokenFromFragment() {
    if (!location.hash || location.hash.length < 2) return;
    const params = new URLSearchParams(location.hash.slice(1));
    const fromUrl = params.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      params.delete("token");
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    }
  }

  function showSignIn(message) {
    clearTimeout(timer);
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    document.body.dataset.state = "signed-out";
    $("sign-in").hidden = false;
    const views = ["jobs-card", "detail", "models-card", "model-detail"];
    for (const id of [...views, "refresh", "sign-out", "live", "banner"]) $(id).hidden = true;
    $("updated").textContent = "";
    $("sign-in-error").hidden = !message;
    $("sign-in-error").textContent = message || "";
    $("token-input").focus();
  }

  function signedIn() {
    $("sign-in").hidden = true;
    $("refresh").hidden = false;
    $("sign-out").hidden = false;
  }

  // ---- API

  async function api(path) {
    const response = await fetch(path, {
      headers: { Authorization: "Bearer " + token, Accept: "application/json" },
      cache: "no-store",
    });
    if (response.status === 401 || response.status === 403) {
      throw new AuthError(`The service refused the token (HTTP ${response.status}). Enter it again.`);
    }
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  // ---- formatting (all return plain strings)

  const DASH = "—";
  const fmtLoss = (v) => (v === null || v === undefined || v === "" ? DASH : Number(v).toFixed(4));
  const fmtCost = (v) => (v === null || v === undefined ? DASH : "$" + Number(v).toFixed(2));
  const fmtNum = (v, digits) => (v === null || v === undefined ? DASH : Number(v).toFixed(digits));
  function fmtTime(v, seconds = true) {
    if (!v) return DASH; // the API's ISO 8601 in UTC, shown as "YYYY-MM-DD HH:MM[:SS]"
    return String(v).replace("T", " ").slice(0, seconds ? 19 : 16);
  }
  function fmtSteps(job) {
    const step = job.step ?? 0;
    return job.total_steps ? `${step} / ${job.total_steps}` : String(step);
  }
  function fraction(job) {
    if (job.status === "completed") return 1;
    if (!job.total_steps) return 0;
    return Math.max(0, Math.min(1, (job.step || 0) / job.total_steps));
  }
  const statusClass = (status) => "badge status-" + (STATUSES.has(status) ? status : "unknown");

  // ---- DOM helpers

  const el = window.brightrunEl; // dom.js

  function progressCell(job) {
    const pct = Math.round(fraction(job) * 100);
    const fill = el("div", { className: "fill" });
    fill.style.width = pct + "%";
    const bar = el(
      "div",
      {
        className: "progress" + (LIVE.has(job.status) ? " running" : ""),
        attrs: { role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(pct) },
      },
      [fill],
    );
    return el("td", { className: "col-progress" }, [bar, el("span", { className: "steps", text: fmtSteps(job) })]);
  }

  // ---- the table

  function renderJobs(jobs) {
    $("jobs-card").hidden = false;
    $("job-count").textContent = jobs.length ? `(${jobs.length})` : "";
    $("no-jobs").hidden = jobs.length > 0;
    const body = $("jobs-body");
    const rows = jobs.map((job) => {
      const idCell = el("td", { className: "job-id" }, [el("code", { text: job.id })]);
      if (job.error_message) {
        idCell.append(el("div", { className: "row-error", text: job.error_message, attrs: { title: job.error_message } }));
      }
      const row = el(
        "tr",
        {
          className: job.id === selected ? "selected" : "",
          attrs: {
            "data-job-id": job.id,
            "data-status": job.status,
            tabindex: "0",
            "aria-selected": job.id === selected ? "true" : "false",
          },
        },
        [
          idCell,
          el("td", {}, [el("span", { className: statusClass(job.status), text: job.status })]),
          progressCell(job),
          el("td", {}, [
            el("span", { text: job.preset || DASH }),
            el("span", { className: "muted", text: " · " }),
            el("span", { text: job.model || DASH }),
          ]),
          el("td", { className: "num", text: `${fmtCost(job.estimated_cost)} / ${fmtCost(job.actual_cost)}` }),
          el("td", { className: "num", text: fmtLoss(job.eval_loss) }),
          verdictCell(job),
          el("td", { className: "num", text: fmtLoss(job.last_loss) }),
          el("td", { className: "muted", text: fmtTime(job.created_at, false) }),
        ],
      );
      row.addEventListener("click", () => select(job.id));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          select(job.id);
        }
      });
      return row;
    });
    body.replaceChildren(...rows);
  }

  // The evaluation's verdict (evals/): pass | fail | incomplete, or a dash before `just eval RUN`.
  function verdictCell(job) {
    if (!job.verdict) return el("td", { className: "verdict muted", text: DASH, attrs: { "data-verdict": "" } });
    return el("td", { className: "verdict", attrs: { "data-verdict": job.verdict } }, [
      el("span", { className: `badge verdict-${job.verdict}`, text: job.verdict }),
    ]);
  }

  function markSelected() {
    for (const row of $("jobs-body").querySelectorAll("tr")) {
      const on = row.getAttribute("data-job-id") === selected;
      row.classList.toggle("selected", on);
      row.setAttribute("aria-selected", on ? "true" : "false");
    }
  }

  function select(jobId) {
    selected = jobId;
    pinned = true;
    markSelected();
    refresh();
  }

  // ---- the selected job

  function fact(list, label, value) {
    list.append(el("dt", { text: label }), el("dd", { text: value }));
  }

  function renderDetail(job) {
    $("detail").hidden = false;
    $("detail-id").textContent = job.id;
    $("detail-status").className = statusClass(job.status);
    $("detail-status").textContent = job.status;

    const facts = el("dl", { attrs: { id: "detail-facts" } });
    fact(facts, "Preset · model", `${job.preset || DASH} · ${job.model || DASH}`);
    fact(facts, "Hardware", job.hardware || DASH);
    if (job.gpu_type) {
      const price = job.price_per_hour == null ? "" : ` · ${fmtCost(job.price_per_hour)}/h`;
      fact(facts, "GPU", `${job.gpu_count || 1} × ${job.gpu_type}${price}`);
    }
    fact(facts, "Steps", fmtSteps(job));
    fact(facts, "Epoch", fmtNum(job.epoch, 2));
    fact(facts, "Created", fmtTime(job.created_at));
    fact(facts, "Started", fmtTime(job.started_at));
    fact(facts, "Completed", fmtTime(job.completed_at));
    fact(facts, "Cost est. / actual", `${fmtCost(job.estimated_cost)} / ${fmtCost(job.actual_cost)}`);
    fact(facts, "GPU hours", fmtNum(job.gpu_hours, 3));
    fact(facts, "Last loss · eval loss", `${fmtLoss(job.last_loss)} · ${fmtLoss(job.eval_loss)}`);
    if (job.retry_count) fact(facts, "Retries", String(job.retry_count));
    if (job.verdict) fact(facts, "Verdict", job.verdict);
    for (const g of (job.evaluation && job.evaluation.gates) || []) {
      facts.append(
        el("dt", { text: g.gate }),
        el("dd", { className: `gate gate-${g.status}`, text: `${g.status} · ${g.detail}` }),
      );
    }
    if (job.artifact_path) fact(facts, "Adapter", job.artifact_path);
    if (job.error_message) {
      facts.append(el("dt", { text: "Error" }), el("dd", { className: "error-text", text: job.error_message }));
    }
    $("detail-facts").replaceWith(facts);

    const hparams = el("dl", { className: "compact", attrs: { id: "detail-hparams" } });
    const entries = Object.entries(job.hyperparameters || {});
    for (const [key, value] of entries) {
      fact(hparams, key, typeof value === "object" && value !== null ? JSON.stringify(value) : String(value));
    }
    if (!entries.length) hparams.append(el("dd", { className: "muted", text: "none recorded" }));
    $("detail-hparams").replaceWith(hparams);

    const artifacts = job.artifacts || [];
    $("artifacts-title").hidden = artifacts.length === 0;
    $("detail-artifacts").replaceChildren(
      ...artifacts.map((a) => {
        const parts = [a.artifact_type, a.storage_path || a.path, a.size_bytes ? `${a.size_bytes} bytes` : null];
        return el("li", { text: parts.filter(Boolean).join(" · ") });
      }),
    );
    renderChart(job);
  }

  // ---- loss curves: train loss and eval loss against step (one x per logged step)

  function chartData(history) {
    const bySteps = new Map();
    for (const point of history || []) {
      if (point.step === null || point.step === undefined) continue;
      const row = bySteps.get(point.step) || { loss: null, eval: null };
      if (point.loss !== null && point.loss !== undefined) row.loss = point.loss;
      if (point.eval_loss !== null && point.eval_loss !== undefined) row.eval = point.eval_loss;
      bySteps.set(point.step, row);
    }
    const steps = [...bySteps.keys()].sort((a, b) => a - b);
    const train = steps.map((s) => bySteps.get(s).loss);
    const evals = steps.map((s) => bySteps.get(s).eval);
    return [steps, train, evals];
  }

  function chartWidth(box) {
    return Math.max(320, Math.floor(box.clientWidth || box.parentElement.clientWidth || 640));
  }

  // data-points (train + eval) counts the values in the plot uPlot holds: 0 when nothing was drawn.
  function markDrawn(box, jobId) {
    const count = (i) => (plot ? plot.data[i].filter((v) => v !== null && v !== undefined).length : 0);
    box.setAttribute("data-job-id", jobId);
    box.setAttribute("data-train-points", String(count(1)));
    box.setAttribute("data-eval-points", String(count(2)));
    box.setAttribute("data-points", String(count(1) + count(2)));
  }

  function renderChart(job) {
    const box = $("loss-chart");
    const data = chartData(job.metrics_history);
    const any = data[1].some((v) => v !== null) || data[2].some((v) => v !== null);
    $("chart-empty").hidden = any;
    if (!any || typeof uPlot === "undefined") {
      if (plot) plot.destroy();
      plot = null;
      plotJob = null;
      box.hidden = true;
      markDrawn(box, job.id);
      return;
    }
    box.hidden = false;
    if (plot && plotJob === job.id) {
      plot.setData(data);
      markDrawn(box, job.id);
      return;
    }
    if (plot) plot.destroy();
    plotJob = job.id;
    plot = new uPlot(
      {
        width: chartWidth(box),
        height: 300,
        scales: { x: { time: false } },
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
        series: [
          { label: "step", value: (u, v) => (v === null || v === undefined ? DASH : String(v)) },
          {
            label: "train loss",
            stroke: "#2563eb",
            width: 2,
            spanGaps: true,
            value: (u, v) => fmtLoss(v),
            points: { show: data[0].length <= 60, size: 5 },
          },
          {
            label: "eval loss",
            stroke: "#dc2626",
            width: 2,
            dash: [6, 4],
            spanGaps: true,
            value: (u, v) => fmtLoss(v),
            points: { show: true, size: 8, fill: "#dc2626" },
          },
        ],
        axes: [
          { label: "step", grid: { stroke: "#eef0f3" } },
          { label: "loss", size: 60, grid: { stroke: "#eef0f3" } },
        ],
      },
      data,
      box,
    );
    markDrawn(box, job.id);
  }

  window.addEventListener("resize", () => {
    if (plot) plot.setSize({ width: chartWidth($("loss-chart")), height: 300 });
  });

  // ---- the refresh loop

  function showBanner(message) {
    $("banner").hidden = !message;
    $("banner").textContent = message || "";
  }

  async function refresh() {
    if (!token) return;
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    clearTimeout(timer);
    let live = false;
    try {
      const { jobs } = await api("/api/training/jobs");
      live = jobs.some((job) => LIVE.has(job.status));
      if (!pinned || !jobs.some((job) => job.id === selected)) selected = jobs.length ? jobs[0].id : null;
      renderJobs(jobs);
      if (selected) {
        renderDetail(await api("/api/training/jobs/" + encodeURIComponent(selected)));
      } else {
        $("detail").hidden = true;
      }
      for (const hook of hooks) await hook();
      showBanner(null);
      $("live").hidden = !live;
      $("live").setAttribute("data-live", String(live));
      $("updated").textContent = "updated " + new Date().toLocaleTimeString();
      document.body.dataset.state = "ready";
    } catch (error) {
      if (error instanceof AuthError) {
        busy = false;
        showSignIn(error.message);
        return;
      }
      showBanner(`Could not load jobs: ${error.message}. Retrying.`);
      if (document.body.dataset.state !== "ready") document.body.dataset.state = "error";
      live = true; // retry soon
    } finally {
      busy = false;
    }
    timer = setTimeout(refresh, again ? 0 : live ? LIVE_MS : IDLE_MS);
    again = false;
  }

  window.brightrun = Object.freeze({
    api,
    el,
    fmtTime,
    fmtNum,
    DASH,
    verdictCell,
    onRefresh: (hook) => hooks.push(hook),
    refresh: () => refresh(),
  });

  // ---- start

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    token = value;
    signedIn();
    document.body.dataset.state = "loading";
    refresh();
  });
  $("refresh").addEventListener("click", () => refresh());
  $("sign-out").addEventListener("click", () => showSignIn(null));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && token) refresh();
  });

  takeTokenFromFragment();
  token = sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    signedIn();
    refresh();
  } else {
    showSignIn(null);
  }
})();
