// dicomnode dashboard: log in (token in a cookie), poll page fragments, retry buttons. No libraries.
"use strict";

const COOKIE = "dicomnode_token";

function setToken(token) {
  const value = token ? encodeURIComponent(token) : "";
  const expiry = token ? "" : "; max-age=0";
  document.cookie = `${COOKIE}=${value}; path=/; SameSite=Strict${expiry}`;
}

function poll(element) {
  const url = element.dataset.poll;
  const every = Number(element.dataset.interval || 3000);
  const refresh = async () => {
    // Not while an action's answer is on screen: the admin must be able to read it.
    if (element.querySelector(".action-result.busy")) return;
    try {
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) element.innerHTML = await response.text();
    } catch (_) {
      // the node is restarting: try again next time
    }
  };
  setInterval(refresh, every);
}

async function retry(button) {
  const jobId = button.dataset.retry;
  const result = document.getElementById(`retry-result-${jobId}`);
  button.disabled = true;
  result.classList.add("busy");
  result.textContent = "retrying…";
  const response = await fetch(`/api/jobs/${jobId}/retry`, {
    method: "POST",
    credentials: "same-origin",
    headers: { "X-Dicomnode-Action": "1" },
  });
  const body = await response.json().catch(() => ({}));
  result.textContent = response.ok ? `retried: ${body.done}` : `not retried: ${body.detail || response.status}`;
  result.classList.toggle("error", !response.ok);
  setTimeout(() => result.classList.remove("busy"), response.ok ? 500 : 10000);
  if (!response.ok) button.disabled = false;
}

document.addEventListener("click", (event) => {
  const target = event.target.closest("[data-retry], [data-logout]");
  if (!target) return;
  if (target.dataset.logout !== undefined) {
    setToken("");
    return;
  }
  event.preventDefault();
  retry(target);
});

const form = document.getElementById("login-form");
if (form) {
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(document.getElementById("token").value.trim());
    window.location.assign(form.dataset.next || "/");
  });
}

document.querySelectorAll("[data-poll]").forEach(poll);
