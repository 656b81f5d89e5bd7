// The Bulkhead console's one script (no inline script: the page's Content-Security-Policy
// allows only files from the gateway). Forms call the admin API with the session cookie and
// the session's CSRF token; errors are the API's own messages. Every value from the API is
// put in the page as text (textContent), never as HTML.
"use strict";

(function () {
  const main = document.querySelector("main");
  const csrf = main ? main.dataset.csrf : "";

  async function api(method, path, body) {
    const init = {
      method,
      credentials: "same-origin",
      headers: { accept: "application/json", "x-csrf-token": csrf || "" },
    };
    if (body !== undefined) {
      init.headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      const message = error.message || "HTTP " + response.status;
      throw new Error(error.field ? error.field + ": " + message : message);
    }
    return data;
  }

  function say(form, message, failed) {
    const out = form.querySelector(".result");
    if (!out) return;
    out.textContent = message;
    out.classList.toggle("error", !!failed);
    out.setAttribute("role", failed ? "alert" : "status");
  }

  function number(input) {
    const v = input.value.trim();
    return v === "" ? null : Number(v);
  }

  function limits(form) {
    const out = {};
    for (const name of ["tokens_per_minute", "requests_per_minute", "monthly_tokens"]) {
      const input = form.elements.namedItem(name);
      if (input) out[name] = number(input);
    }
    return out;
  }

  function int(s) {
    return Number(s).toLocaleString("en-US");
  }

  // ---- sortable tables: the header cells become buttons ----
  function makeSortable(table) {
    const head = table.tHead;
    if (!head || !head.rows.length) return;
    Array.from(head.rows[0].cells).forEach((th, column) => {
      if (!th.textContent.trim()) return;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.textContent = th.textContent;
      th.textContent = "";
      th.appendChild(button);
      th.setAttribute("aria-sort", "none");
      button.addEventListener("click", () => {
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        Array.from(head.rows[0].cells).forEach((c) => c.setAttribute("aria-sort", "none"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        const key = (row) => {
          const cell = row.cells[column];
          if (!cell) return "";
          const raw = cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
          const n = Number(raw.replace(/[,%]/g, ""));
          return raw !== "" && !Number.isNaN(n) ? n : raw.toLowerCase();
        };
        rows.sort((a, b) => {
          const x = key(a);
          const y = key(b);
          const order = x < y ? -1 : x > y ? 1 : 0;
          return ascending ? order : -order;
        });
        rows.forEach((r) => body.appendChild(r));
      });
    });
  }
  document.querySelectorAll("table.sortable").forEach(makeSortable);

  // ---- dialogs ----
  document.querySelectorAll("[data-close]").forEach((b) =>
    b.addEventListener("click", () => {
      const dialog = b.closest("dialog");
      if (dialog) dialog.close();
      if (b.hasAttribute("data-reload")) window.location.reload();
    })
  );
  document.querySelectorAll("[data-copy]").forEach((b) =>
    b.addEventListener("click", async () => {
      const input = document.getElementById(b.dataset.copy);
      const dialog = b.closest("dialog");
      try {
        await navigator.clipboard.writeText(input.value);
        if (dialog) say(dialog, "Copied.", false);
      } catch (_) {
        input.select();
        if (dialog) say(dialog, "Select the key and copy it (Ctrl+C).", false);
      }
    })
  );

  // ---- onboarding ----
  const onboard = document.querySelector('[data-form="onboard"]');
  if (onboard) {
    onboard.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = onboard.elements;
      const body = {
        slug: f.namedItem("slug").value.trim(),
        display_name: f.namedItem("display_name").value,
      };
      if (f.namedItem("openai").value === "shared") body.openai = { isolation: "shared" };
      const service = f.namedItem("search").value;
      if (service) body.search = { isolation: "shared_index", service };
      try {
        await api("POST", "/admin/v1/tenants", body);
        window.location.assign("/console/tenants/" + encodeURIComponent(body.slug));
      } catch (error) {
        say(onboard, error.message, true);
      }
    });
  }

  const tenant = document.querySelector(".tenant");
  const slug = tenant ? tenant.dataset.slug : null;
  const tenantApi = slug ? "/admin/v1/tenants/" + encodeURIComponent(slug) : null;

  // ---- limits ----
  const limitsForm = document.querySelector('[data-form="limits"]');
  if (limitsForm) {
    limitsForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("PATCH", tenantApi, { limits: limits(limitsForm) });
        say(limitsForm, "Limits saved.", false);
      } catch (error) {
        say(limitsForm, error.message, true);
      }
    });
  }

  // ---- keys ----
  const keyForm = document.querySelector('[data-form="key"]');
  if (keyForm) {
    keyForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {
        name: keyForm.elements.namedItem("name").value,
        scope: keyForm.elements.namedItem("scope").value,
        limits: limits(keyForm),
      };
      for (const k of Object.keys(body.limits)) if (body.limits[k] === null) delete body.limits[k];
      try {
        const created = await api("POST", tenantApi + "/keys", body);
        const dialog = document.getElementById("secret");
        document.getElementById("secret-value").value = created.key;
        say(keyForm, "Key created.", false);
        dialog.showModal();
      } catch (error) {
        say(keyForm, error.message, true);
      }
    });
  }
  document.querySelectorAll("[data-revoke]").forEach((b) =>
    b.addEventListener("click", () =>
      confirmThen("Revoke this key? Calls made with it are refused at once.", async () => {
        await api("DELETE", tenantApi + "/keys/" + encodeURIComponent(b.dataset.revoke));
        window.location.reload();
      })
    )
  );

  const keyLimits = document.querySelector('[data-form="key-limits"]');
  document.querySelectorAll("[data-key-limits]").forEach((b) =>
    b.addEventListener("click", () => {
      const f = keyLimits.elements;
      f.namedItem("tokens_per_minute").value = b.dataset.tpm || "";
      f.namedItem("requests_per_minute").value = b.dataset.rpm || "";
      f.namedItem("monthly_tokens").value = b.dataset.monthly || "";
      keyLimits.dataset.key = b.dataset.keyLimits;
      say(keyLimits, "", false);
      keyLimits.closest("dialog").showModal();
    })
  );
  if (keyLimits) {
    keyLimits.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await api("PATCH", tenantApi + "/keys/" + encodeURIComponent(keyLimits.dataset.key), { limits: limits(keyLimits) });
        window.location.reload();
      } catch (error) {
        say(keyLimits, error.message, true);
      }
    });
  }

  // ---- suspend / reactivate / offboard, confirmed by typing the slug ----
  function confirmThen(text, action) {
    const dialog = document.getElementById("confirm");
    const form = dialog.querySelector("form");
    document.getElementById("confirm-text").textContent = text;
    say(form, "", false);
    const input = document.getElementById("confirm-slug");
    input.value = "";
    const submit = async (event) => {
      event.preventDefault();
      if (input.value.trim() !== slug) {
        say(form, "Type " + slug + " to confirm.", true);
        return;
      }
      try {
        await action();
        form.removeEventListener("submit", submit);
        dialog.close();
      } catch (error) {
        say(form, error.message, true);
      }
    };
    form.addEventListener("submit", submit);
    dialog.addEventListener("close", () => form.removeEventListener("submit", submit), { once: true });
    dialog.showModal();
    input.focus();
  }
  const actions = {
    suspend: ["Suspend this tenant? Its calls are refused until it is reactivated.", () => api("PATCH", tenantApi, { status: "suspended" })],
    reactivate: ["Reactivate this tenant?", () => api("PATCH", tenantApi, { status: "active" })],
    offboard: ["Offboard this tenant? Its keys stop working and its data is removed.", () => api("DELETE", tenantApi)],
  };
  document.querySelectorAll("[data-confirm]").forEach((b) =>
    b.addEventListener("click", () => {
      const [text, call] = actions[b.dataset.confirm];
      confirmThen(text, async () => {
        await call();
        window.location.assign(b.dataset.confirm === "offboard" ? "/console/tenants" : window.location.pathname);
      });
    })
  );

  // ---- charts ----
  function chart(container, xs, series, title) {
    container.textContent = "";
    if (typeof uPlot === "undefined" || !xs.length) {
      container.textContent = xs.length ? "" : "No calls in this period.";
      return;
    }
    const palette = ["#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#65a30d", "#db2777"];
    const names = Object.keys(series);
    const width = Math.max(280, Math.min(container.clientWidth || 800, 1100));
    const options = {
      title,
      width,
      height: 260,
      series: [{}].concat(names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 2 }))),
      axes: [{}, { size: 70 }],
    };
    /* global uPlot */
    new uPlot(options, [xs].concat(names.map((n) => series[n])), container);
  }

  const fleet = document.getElementById("fleet-chart");
  if (fleet && fleet.dataset.series) {
    const data = JSON.parse(fleet.dataset.series);
    chart(fleet, data.x, data.series, "");
  }

  const usage = document.querySelector("[data-usage]");
  async function loadUsage() {
    const range = document.getElementById("u-range").value;
    const group = document.getElementById("u-group").value;
    const metric = document.getElementById("u-metric").value;
    const now = new Date();
    const from = new Date(now.getTime() - 30 * 86400e3);
    if (range === "day") from.setUTCHours(0, 0, 0, 0);
    else from.setUTCMinutes(0, 0, 0);
    const query = new URLSearchParams({ granularity: range, from: from.toISOString(), to: now.toISOString() });
    if (group) query.set("group_by", group);
    try {
      const data = await api("GET", usage.dataset.usage + "/usage?" + query.toString());
      const step = range === "day" ? 86400 : 3600;
      const xs = [];
      for (let t = Math.floor(from.getTime() / 1000); t <= now.getTime() / 1000; t += step) xs.push(t);
      const series = {};
      const label = (row) => (group === "key" ? row.group || "token" : row.group || "All calls");
      for (const row of data.rows) {
        const name = group ? label(row) : "All calls";
        if (!series[name]) series[name] = xs.map(() => 0);
        const at = Math.floor(Date.parse(row.period_start) / 1000);
        const i = xs.indexOf(at);
        if (i >= 0) series[name][i] += row[metric] || 0;
      }
      const names = Object.keys(series);
      chart(document.getElementById("usage-chart"), names.length ? xs : [], series, "");
      document.getElementById("usage-caption").textContent =
        names.length ? names.length + " series; " + data.rows.length + " rows" : "No calls in this period.";
      const table = document.getElementById("usage-table");
      Array.from(table.querySelectorAll("thead, tbody")).forEach((e) => e.remove());
      const thead = table.createTHead().insertRow();
      for (const h of ["Period (UTC)", group ? "Group" : null, "Calls", "Tokens", "Errors"]) {
        if (h === null) continue;
        const th = document.createElement("th");
        th.scope = "col";
        th.textContent = h;
        thead.appendChild(th);
      }
      const body = table.createTBody();
      for (const row of data.rows) {
        const tr = body.insertRow();
        const cells = [row.period_start.replace("T", " ").slice(0, 16)];
        if (group) cells.push(label(row));
        cells.push(int(row.requests), int(row.total_tokens), int(row.errors));
        for (const c of cells) tr.insertCell().textContent = c;
      }
      usage.setAttribute("data-loaded", String(data.rows.reduce((n, r) => n + r.requests, 0)));
      say(usage, "", false);
    } catch (error) {
      say(usage, error.message, true);
    }
  }
  if (usage) {
    ["u-range", "u-group", "u-metric"].forEach((id) => document.getElementById(id).addEventListener("change", loadUsage));
    const csv = document.getElementById("csv");
    document.getElementById("u-range").addEventListener("change", (e) => {
      csv.href = csv.href.replace(/granularity=\w+/, "granularity=" + e.target.value);
    });
    loadUsage();
  }

  // ---- operations, refreshed while one runs ----
  const ops = document.querySelector("[data-operations]");
  async function loadOperations() {
    try {
      const data = await api("GET", ops.dataset.operations);
      const body = document.querySelector("#operations tbody");
      body.textContent = "";
      let running = false;
      for (const op of data.data) {
        const tr = body.insertRow();
        const progress = op.progress && typeof op.progress === "object" ? JSON.stringify(op.progress) : "";
        for (const c of [op.kind, op.status + (op.phase ? " (" + op.phase + ")" : ""), progress, op.createdDateTime]) {
          tr.insertCell().textContent = c || "";
        }
        running = running || op.status === "running" || op.status === "notStarted";
      }
      if (!data.data.length) body.insertRow().insertCell().textContent = "No operations.";
      if (running) setTimeout(loadOperations, 2000);
    } catch (error) {
      say(ops, error.message, true);
    }
  }
  if (ops) loadOperations();
})();
