// Copy buttons: <button data-copy-target="element-id">. Uses the async Clipboard API and
// falls back to selecting the text so the user can copy it by hand.

export function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function announce(message) {
  const status = document.getElementById("copy-status");
  if (status) {
    status.textContent = message;
  }
}

for (const button of document.querySelectorAll("button[data-copy-target]")) {
  button.addEventListener("click", async () => {
    const target = document.getElementById(button.dataset.copyTarget);
    if (!target) {
      return;
    }
    const text = target.textContent.trim();
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
      announce("Copied to the clipboard.");
    } catch {
      selectText(target);
      announce("Copying was blocked by the browser: the key is selected, press Ctrl+C (⌘C).");
    }
  });
}
