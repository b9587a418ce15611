// The console works without this script; with it, destructive forms ask first and the parts
// marked data-refresh (the queues page) or data-reload (a job still running) stay current.
"use strict";

document.addEventListener("submit", (event) => {
  const question = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});

function refresh(element) {
  const every = Number(element.dataset.interval || 3000);
  const tick = async () => {
    try {
      // An ended session answers with a redirect to the login form: never paste that in here.
      const answer = await fetch(element.dataset.refresh, {
        headers: { Accept: "text/html" },
        credentials: "same-origin",
        redirect: "manual",
      });
      if (answer.type === "opaqueredirect") {
        element.setAttribute("data-stale", "the session ended; reload the page to log in");
      } else if (answer.ok) {
        // Server-rendered and escaped like every page: text from tasks never becomes markup.
        element.innerHTML = await answer.text();
        element.removeAttribute("data-stale");
      } else {
        element.setAttribute("data-stale", String(answer.status));
      }
    } catch (error) {
      element.setAttribute("data-stale", "unreachable");
    }
    window.setTimeout(tick, every);
  };
  window.setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-refresh]").forEach(refresh);
  const reload = Number(document.body.dataset.reload || 0);
  if (reload > 0) {
    window.setTimeout(() => window.location.reload(), reload);
  }
});
