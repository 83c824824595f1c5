// The models view: named models (GET /api/models) and the selected model's versions (GET /api/models/{name})
// with their stage (production marked), verdict, key scores, run, who and when, the forced flag, and their
// A/B results when the API lists them (an `ab` list per version; absent: nothing shown). Refreshed with the
// jobs (dashboard.js). Like there, every value from the API goes into the page as text, never as HTML.
"use strict";

(function () {
  const { api, el, fmtTime, fmtNum, DASH, verdictCell, onRefresh, refresh } = window.brightrun;
  const $ = (id) => document.getElementById(id);
  let chosen = null; // the model whose versions are shown; the first one until the user picks one

  function renderModels(models) {
    $("models-card").hidden = false;
    $("model-count").textContent = models.length ? `(${models.length})` : "";
    $("no-models").hidden = models.length > 0;
    const rows = models.map((m) => {
      const production = m.production
        ? el("span", { className: "badge stage-production", text: `v${m.production}` })
        : el("span", { className: "muted", text: "none" });
      const row = el(
        "tr",
        {
          className: m.name === chosen ? "selected" : "",
          attrs: {
            "data-model": m.name,
            "data-production": m.production ? String(m.production) : "",
            tabindex: "0",
            "aria-selected": m.name === chosen ? "true" : "false",
          },
        },
        [
          el("td", { className: "job-id" }, [el("code", { text: m.name })]),
          el("td", { className: "num", text: String(m.versions) }),
          el("td", { text: m.latest ? `v${m.latest}` : DASH }),
          el("td", {}, [production]),
          verdictCell({ verdict: m.production_verdict }),
        ],
      );
      const pick = () => {
        chosen = m.name;
        refresh();
      };
      row.addEventListener("click", pick);
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          pick();
        }
      });
      return row;
    });
    $("models-body").replaceChildren(...rows);
  }

  // The evaluation's figures a version was promoted with: the judge's win rate and the gates' base → adapter.
  function scoresCell(scores) {
    const parts = [];
    if (scores && scores.win_rate !== null && scores.win_rate !== undefined) {
      const ci = scores.win_rate_ci95 ? ` [${scores.win_rate_ci95.map((v) => fmtNum(v, 2)).join(", ")}]` : "";
      parts.push(el("div", { text: `win rate ${fmtNum(scores.win_rate, 2)}${ci}` }));
    }
    for (const g of (scores && scores.gates) || []) {
      const figures = g.base !== undefined && g.adapter !== undefined ? ` ${fmtNum(g.base, 3)} → ${fmtNum(g.adapter, 3)}` : "";
      parts.push(el("div", { className: `gate gate-${g.status}`, text: `${g.gate}: ${g.status}${figures}` }));
    }
    if (!parts.length) parts.push(el("span", { className: "muted", text: DASH }));
    return el("td", { className: "scores" }, parts);
  }

  // A/B results with this version on one side: its own win rate over the other (B's rate is the stored one).
  function abCell(v) {
    if (!Array.isArray(v.ab)) return el("td", { className: "muted", text: DASH, attrs: { "data-ab": "absent" } });
    const items = v.ab.map((t) => {
      const rate = t.win_rate_b_over_a;
      const own = rate === null || rate === undefined ? null : t.side === "A" ? 1 - rate : rate;
      const ci = t.ci95 && own !== null ? t.ci95.map((x) => (t.side === "A" ? 1 - x : x)).sort((a, b) => a - b) : null;
      const text = `vs ${t.other}: ${own === null ? "no judge" : "wins " + fmtNum(own, 2)}` +
        (ci ? ` [${ci.map((x) => fmtNum(x, 2)).join(", ")}]` : "") + (t.n_prompts ? ` · ${t.n_prompts} prompts` : "");
      return el("li", { text, attrs: { "data-ab-other": String(t.other), "data-ab-win": own === null ? "" : fmtNum(own, 2) } });
    });
    if (!items.length) items.push(el("li", { className: "muted", text: "none yet" }));
    return el("td", { attrs: { "data-ab": String(v.ab.length) } }, [el("ul", { className: "ab" }, items)]);
  }

  // People's grades (versions/ratings.py): the adapter's mean 1-5 with its interval, and the rating page.
  function humanCell(v) {
    const h = v.human || { n: 0 };
    const parts = [];
    if (h.n) {
      const ci = h.ci95 ? ` [${h.ci95.map((x) => fmtNum(x, 1)).join(", ")}]` : "";
      parts.push(el("div", { text: `${fmtNum(h.human_eval_score, 2)}${ci} · ${h.n} rating${h.n === 1 ? "" : "s"}` }));
    } else {
      parts.push(el("span", { className: "muted", text: "not rated" }));
    }
    if (v.complete && !v.deleted) {
      parts.push(el("a", { text: "rate", attrs: { href: `/rate#version=${encodeURIComponent(v.ref)}` } }));
    }
    return el("td", { attrs: { "data-human": String(h.n) } }, parts);
  }

  function renderVersions(model) {
    $("model-detail").hidden = false;
    $("model-name").textContent = model.name;
    $("model-production").textContent = model.production ? `production: v${model.production}` : "no production version";
    const rows = [...model.versions].reverse().map((v) => {
      const stage = [el("span", { className: `badge stage-${v.stage}`, text: v.stage === "production" ? "★ production" : v.stage })];
      if (v.rolled_back) stage.push(el("span", { className: "badge flag", text: "rolled back" }));
      if (!v.complete) stage.push(el("span", { className: "badge flag", text: "upload unfinished" }));
      if (v.deleted) stage.push(el("span", { className: "badge flag", text: "files deleted" }));
      const flags = v.forced ? [el("span", { className: "badge forced", text: "forced", attrs: { title: "promoted despite its verdict" } })] : [];
      return el(
        "tr",
        {
          className: v.stage === "production" ? "production" : "",
          attrs: {
            "data-version": String(v.version),
            "data-stage": v.stage,
            "data-forced": String(Boolean(v.forced)),
            "data-run-id": v.run_id,
          },
        },
        [
          el("td", {}, [el("code", { text: v.ref })]),
          el("td", { className: "stage" }, stage),
          verdictCell(v),
          scoresCell(v.scores),
          el("td", {}, [el("code", { text: v.run_id })]),
          el("td", {}, [el("span", { text: v.created_by }), el("div", { className: "muted", text: fmtTime(v.created_at, false) })]),
          el("td", {}, flags.length ? flags : [el("span", { className: "muted", text: DASH })]),
          abCell(v),
          humanCell(v),
        ],
      );
    });
    $("versions-body").replaceChildren(...rows);
  }

  onRefresh(async () => {
    const { models } = await api("/api/models");
    if (!models.some((m) => m.name === chosen)) chosen = models.length ? models[0].name : null;
    renderModels(models);
    if (chosen) renderVersions(await api("/api/models/" + encodeURIComponent(chosen)));
    else $("model-detail").hidden = true;
  });
})();
