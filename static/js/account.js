// Account pages: copy and download recovery codes, copy the authenticator app's key.
//
// The codes never leave the browser: copying writes them to the clipboard, downloading
// makes a text file from the page itself (a Blob), so they are in no URL, request or
// server log. Buttons start hidden and appear only where this script runs.
//
//   <div id="codes" data-codes-for="email">  <code class="recovery-code">…</code> … </div>
//   <button data-codes-copy="codes">          <button data-codes-download="codes">
//   <button data-copy-from="element-id">      (copies the element's text)

import { selectText } from "./copy.js";

const FILE_NAME = "latchkey-recovery-codes.txt";

function codesIn(container) {
  return [...container.querySelectorAll(".recovery-code")]
    .map((element) => element.textContent.trim())
    .filter(Boolean);
}

function say(button, message) {
  const group = button.closest("[data-copy-group]");
  const status = group && group.querySelector("[data-copy-status]");
  if (status) status.textContent = message;
}

async function copy(button, text, fallbackElement) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
    say(button, "Copied to the clipboard.");
    window.setTimeout(() => {
      button.textContent = button.dataset.label;
    }, 2500);
  } catch {
    selectText(fallbackElement);
    say(button, "The browser blocked copying: the text is selected, press Ctrl+C (⌘C).");
  }
}

function fileText(container, codes) {
  const generated = container.dataset.codesGenerated || new Date().toISOString().slice(0, 16).replace("T", " ") + " UTC";
  const lines = ["Latchkey recovery codes"];
  if (container.dataset.codesFor) lines.push(`Account: ${container.dataset.codesFor}`);
  lines.push(`Generated: ${generated}`, "", ...codes, "");
  lines.push("Each code signs you in once if you can't use your authenticator app or passkeys.");
  lines.push("Generating a new set voids these codes.");
  return lines.join("\n") + "\n";
}

function download(text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = FILE_NAME;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

function reveal(button) {
  button.dataset.label = button.textContent;
  button.hidden = false;
}

for (const button of document.querySelectorAll("button[data-codes-copy]")) {
  reveal(button);
  button.addEventListener("click", () => {
    const container = document.getElementById(button.dataset.codesCopy);
    if (!container) return;
    copy(button, codesIn(container).join("\n") + "\n", container);
  });
}

for (const button of document.querySelectorAll("button[data-codes-download]")) {
  reveal(button);
  button.addEventListener("click", () => {
    const container = document.getElementById(button.dataset.codesDownload);
    if (!container) return;
    const codes = codesIn(container);
    if (!codes.length) return;
    download(fileText(container, codes));
    say(button, `Saved as ${FILE_NAME} in your downloads.`);
  });
}

for (const button of document.querySelectorAll("button[data-copy-from]")) {
  reveal(button);
  button.addEventListener("click", () => {
    const source = document.getElementById(button.dataset.copyFrom);
    if (!source) return;
    copy(button, source.textContent.replace(/\s+/g, ""), source);
  });
}
