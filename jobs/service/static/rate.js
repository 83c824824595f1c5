// The rating page (issue 27, item 6): a version's held-out prompts one at a time, two replies in an order
// the service drew for this rater (it alone knows which is the adapter's), a 1-5 grade per criterion for each
// reply and a preference. Opened as /rate#version=NAME@vN (the dashboard's versions table links here).
// Like the dashboard, every value from the API goes into the page as text, never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "brightrun.jobs.token"; // the dashboard's: signed in there, signed in here
  const RATER_KEY = "brightrun.rater";
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.hash.slice(1));
  let token = null;
  let current = null; // the prompt shown: the API's `next` answer

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  const el = window.brightrunEl; // dom.js

  // NAME@vN from the fragment, checked before any call is built from it.
  const ref = params.get("version") || "";
  const parsed = /^([A-Za-z0-9][A-Za-z0-9_-]{0,63})@v([1-9][0-9]{0,8})$/.exec(ref);
  const base = parsed ? `/api/models/${encodeURIComponent(parsed[1])}/versions/${parsed[2]}/ratings` : null;

  function show(state) {
    document.body.dataset.state = state;
    $("sign-in").hidden = state !== "signed-out";
    $("who").hidden = state !== "who";
    $("prompt").hidden = state !== "rating";
    $("rating").hidden = state !== "rating";
    $("done").hidden = state !== "done";
  }

  function fail(message) {
    $("banner").textContent = message;
    $("banner").hidden = false;
    show("error");
  }

  async function call(path, body) {
    const response = await fetch(path, {
      method: body ? "POST" : "GET",
      headers: {
        Authorization: "Bearer " + token,
        Accept: "application/json",
        ...(body ? { "Content-Type": "application/json" } : {}),
      },
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const detail = typeof data.error === "string" ? data.error : `HTTP ${response.status}`;
      throw new HttpError(response.status, detail);
    }
    return data;
  }

  function refused(error) {
    if (error.status === 401 || error.status === 403) {
      sessionStorage.removeItem(TOKEN_KEY);
      token = null;
      show("signed-out");
      return;
    }
    fail(error.message);
  }

  // ---- one prompt

  function scale(slot, criterion, low, high) {
    const choices = [];
    for (let g = low; g <= high; g++) {
      choices.push(
        el("label", {}, [
          el("input", { attrs: { type: "radio", name: `${slot}.${criterion.key}`, value: String(g) } }),
          ` ${g}`,
        ]),
      );
    }
    return el("fieldset", { className: "criterion", attrs: { "data-criterion": criterion.key } }, [
      el("legend", { text: criterion.question }),
      ...choices,
    ]);
  }

  function render(next) {
    current = next;
    $("progress").textContent = `rated ${next.rated} of ${next.total} · as ${next.rater}`;
    $("banner").hidden = true;
    if (next.done) {
      $("done-text").textContent = `You have rated every held-out prompt of ${next.ref} (${next.total}). Thank you.`;
      show("done");
      return;
    }
    const item = next.item;
    const feeling = item.emotion ? `${item.emotion}${item.intensity != null ? ` (intensity ${item.intensity})` : ""}` : "not stated";
    $("client").textContent = `persona: ${item.persona || "not stated"} · feeling: ${feeling}` +
      (item.topic ? ` · topic: ${item.topic}` : "");
    $("prompt").dataset.item = item.id;
    $("conversation").replaceChildren(
      ...item.conversation.map((m) =>
        el("div", { className: `turn ${m.role}` }, [
          el("span", { className: "who", text: m.role === "user" ? "Client" : "Consultant" }),
          m.content,
        ]),
      ),
    );
    const [low, high] = next.scale;
    $("answers").replaceChildren(
      ...next.answers.map((a, i) =>
        el("section", { className: "card answer", attrs: { "data-slot": a.slot } }, [
          el("h2", { text: `Reply ${i + 1}` }),
          el("p", { className: "text", text: a.text }),
          ...next.criteria.map((c) => scale(a.slot, c, low, high)),
        ]),
      ),
    );
    $("rating").reset();
    $("missing").hidden = true;
    show("rating");
    window.scrollTo(0, 0);
  }

  async function load() {
    show("loading");
    try {
      render(await call(`${base}/next?rater=${encodeURIComponent(localStorage.getItem(RATER_KEY))}`));
    } catch (error) {
      refused(error);
    }
  }

  // ---- submit: every grade and a preference, or say what is missing

  $("rating").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData($("rating"));
    const scores = {};
    const missing = [];
    current.answers.forEach((a, i) => {
      scores[a.slot] = {};
      for (const c of current.criteria) {
        const grade = form.get(`${a.slot}.${c.key}`);
        if (grade === null) missing.push(`reply ${i + 1}: ${c.key.replaceAll("_", " ")}`);
        else scores[a.slot][c.key] = Number(grade);
      }
    });
    const preference = form.get("preference");
    if (preference === null) missing.push("which reply you prefer");
    if (missing.length) {
      $("missing").textContent = "Still to grade: " + missing.join(", ");
      $("missing").hidden = false;
      return;
    }
    $("submit").disabled = true;
    try {
      const body = { rater: current.rater, item: current.item.id, scores, preference };
      render((await call(base, body)).next);
    } catch (error) {
      if (error.status === 409) {
        await load(); // rated already (another tab): the next one
      } else {
        refused(error);
      }
    } finally {
      $("submit").disabled = false;
    }
  });

  // ---- start: a version, a token, a name

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token-input").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("who-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("who-input").value.trim();
    if (!name) return;
    localStorage.setItem(RATER_KEY, name);
    start();
  });

  function start() {
    if (!base) return fail(`Open this page as /rate#version=NAME@vN (got "${ref}").`);
    $("version-ref").textContent = ref;
    token = sessionStorage.getItem(TOKEN_KEY);
    if (!token) return show("signed-out");
    if (!localStorage.getItem(RATER_KEY)) return show("who");
    load();
  }

  const fromUrl = params.get("token"); // the dashboard's #token=... works here too; then out of the address bar
  if (fromUrl) {
    sessionStorage.setItem(TOKEN_KEY, fromUrl);
    params.delete("token");
    history.replaceState(null, "", location.pathname + "#" + params.toString());
  }
  start();
})();
