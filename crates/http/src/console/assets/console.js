// br-cti console: drag-and-drop upload with progress, live job progress, confirmations.
// No framework, no other host: everything goes to this node.
"use strict";

function csrf() {
  const main = document.querySelector("main[data-csrf]");
  return main ? main.dataset.csrf : "";
}

function setupUpload() {
  const zone = document.getElementById("dropzone");
  if (!zone) return;
  const input = document.getElementById("file");
  const button = document.getElementById("upload-button");
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  const send = (file) => {
    if (!file) return;
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("task_id", "");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/console/datasets/upload");
    xhr.setRequestHeader("X-CSRF-Token", csrf());
    bar.hidden = false;
    bar.value = 0;
    status.classList.remove("error");
    status.textContent = file.name + " …";
    button.disabled = true;
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) bar.value = Math.floor((e.loaded * 100) / e.total);
    };
    xhr.onload = () => {
      button.disabled = false;
      let answer = null;
      try { answer = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (answer && answer.code === 200 && answer.data && answer.data.file_hash) {
        bar.value = 100;
        window.location.assign("/console/datasets/" + answer.data.file_hash);
      } else {
        status.classList.add("error");
        status.textContent = (answer && answer.error) || (xhr.status + " " + xhr.statusText);
      }
    };
    xhr.onerror = () => {
      button.disabled = false;
      status.classList.add("error");
      status.textContent = "network error";
    };
    xhr.send(form);
  };
  button.addEventListener("click", () => send(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
  });
}

// A panel with data-poll is reloaded every second while its content says data-live="1";
// when the job ends, the page reloads to show the new records.
function setupPolling() {
  const box = document.querySelector("[data-poll]");
  if (!box) return;
  const live = () => !!box.querySelector('[data-live="1"]');
  if (!live()) return;
  const tick = () => {
    fetch(box.dataset.poll, { credentials: "same-origin" })
      .then((r) => (r.ok ? r.text() : Promise.reject(r.status)))
      .then((html) => {
        box.innerHTML = html;
        if (live()) {
          setTimeout(tick, 1000);
        } else {
          window.location.reload();
        }
      })
      .catch(() => setTimeout(tick, 3000));
  };
  setTimeout(tick, 1000);
}

function setupConfirm() {
  document.querySelectorAll("form[data-confirm]").forEach((f) => {
    f.addEventListener("submit", (e) => {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setupUpload();
  setupPolling();
  setupConfirm();
});
