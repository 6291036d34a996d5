// callq operator page: re-render <main> from the server on a timer, and at once when the call's SSE stream has news.
"use strict";
(function () {
  const main = document.getElementById("main");
  const live = document.getElementById("live");
  const updated = document.getElementById("updated");
  if (!main || !main.dataset.refresh) {
    return;
  }
  let busy = false;
  let again = false;

  function setLive(state, text) {
    live.dataset.state = state;
    live.textContent = text;
  }

  async function refresh() {
    if (busy) {
      again = true; // an event arrived while fetching: fetch once more afterwards, never in parallel
      return;
    }
    busy = true;
    try {
      const response = await fetch(main.dataset.refresh, { credentials: "same-origin", cache: "no-store" });
      if (response.status === 401) {
        window.location.assign("/ui"); // the session expired: back to the login form
        return;
      }
      if (response.ok) {
        main.innerHTML = await response.text();
        updated.textContent = new Date().toLocaleTimeString();
      }
    } catch (err) {
      updated.textContent = "offline, retrying";
    } finally {
      busy = false;
      if (again) {
        again = false;
        refresh();
      }
    }
  }

  setInterval(refresh, Number(main.dataset.every || 2) * 1000);

  const stream = main.dataset.stream;
  const head = main.querySelector(".call-head");
  if (!stream) {
    live.hidden = true;
  } else if (head && head.dataset.state === "disconnected") {
    setLive("off", "call ended");
  } else {
    // EventSource cannot send headers: the HttpOnly session cookie authenticates the stream. Start after the
    // newest event already on the page; on reconnects the browser resumes with Last-Event-ID by itself.
    const newest = main.querySelector("ol.events li");
    const source = new EventSource(newest ? stream + "?after=" + encodeURIComponent(newest.dataset.seq) : stream);
    setLive("connecting", "connecting…");
    source.onopen = function () { setLive("on", "● live"); };
    source.onerror = function () {
      if (source.readyState !== EventSource.CLOSED) {
        setLive("connecting", "reconnecting…");
      }
    };
    // Named SSE events reach only listeners of that name, so listen for each type ACS sends.
    for (const type of (main.dataset.events || "").split(",")) {
      source.addEventListener(type, function () {
        refresh();
        if (type === "CallDisconnected") {
          source.close(); // ACS sends nothing after it; the server ends the stream too
          setLive("off", "call ended");
        }
      });
    }
  }
})();
