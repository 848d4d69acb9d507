// Aegir web UI: what plain HTML cannot do. Every page works without it.
//  - an operation's log follows live (Server-Sent Events from /operations/ID/events);
//  - "Log in to site" opens the one-time link as soon as the operation produced it;
//  - a delete button stays disabled until the uri is typed; restores ask for confirmation.
"use strict";

function followLog(log) {
  let after = Number(log.dataset.after || 0);
  const url = log.dataset.events;
  let source = null;
  const open = () => {
    source = new EventSource(url + "?after=" + after);
    source.addEventListener("log", (e) => {
      const line = JSON.parse(e.data);
      if (line.id <= after) return;
      after = line.id;
      const li = document.createElement("li");
      li.className = "l-" + line.level;
      const time = document.createElement("time");
      time.textContent = line.ts.slice(11, 19);
      const lvl = document.createElement("span");
      lvl.className = "lvl";
      lvl.textContent = line.level;
      li.append(time, " ", lvl, " ", line.message);
      log.append(li);
      li.scrollIntoView({ block: "nearest" });
    });
    source.addEventListener("end", () => {
      source.close();
      // One last refresh of the steps and status, now final (htmx's own polling may be a
      // second away).
      const state = document.getElementById("op-state");
      if (state && window.htmx) {
        const url = location.pathname + "/state" + location.search;
        window.htmx.ajax("GET", url, { target: state, swap: "outerHTML" });
      }
    });
    source.onerror = () => {
      // The browser reconnects by itself, but without our ?after=; reopen from where we are.
      source.close();
      setTimeout(open, 1000);
    };
  };
  open();
}

function goToLogin() {
  const link = document.getElementById("login-link");
  if (link && link.dataset.go === "1" && !sessionStorage.getItem("went:" + link.href)) {
    sessionStorage.setItem("went:" + link.href, "1");
    location.assign(link.href);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const log = document.getElementById("log");
  if (log && log.dataset.events) {
    const state = document.getElementById("op-state");
    if (!state || state.dataset.finished !== "true") followLog(log);
  }
  goToLogin();
  for (const input of document.querySelectorAll("input[data-must-equal]")) {
    const button = input.form.querySelector("button[type=submit]");
    const check = () => { button.disabled = input.value !== input.dataset.mustEqual; };
    input.addEventListener("input", check);
    check();
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
});

document.addEventListener("htmx:afterSwap", goToLogin);
