// Confirms a magic-link sign-in.
//
// The confirmation page is served with `Referrer-Policy: no-referrer` (its URL holds the
// token). A plain form POST from such a page carries `Origin: null`, which Django's CSRF
// protection rightly refuses; fetch() keeps the page's real Origin, and the CSRF token from
// the form goes along. The server answers JSON with where to go next.

const form = document.querySelector("form[data-magic-link]");

if (form) {
  const button = form.querySelector("#confirm-sign-in");
  const status = form.querySelector("[data-magic-link-status]");

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button) button.disabled = true;
    if (status) status.textContent = "Signing you in…";
    const token = form.querySelector('input[name="csrfmiddlewaretoken"]');
    try {
      const response = await fetch(window.location.pathname, {
        method: "POST",
        credentials: "same-origin",
        headers: { Accept: "application/json", "X-CSRFToken": token ? token.value : "" },
        body: new FormData(form),
      });
      const data = await response.json().catch(() => ({}));
      if (response.ok && data.redirect) {
        // replace(): the token URL does not stay in the history.
        window.location.replace(data.redirect);
        return;
      }
      if (response.status === 429) {
        if (status) status.textContent = "Too many attempts. Wait a minute and try again.";
        if (button) button.disabled = false;
        return;
      }
      window.location.reload();
    } catch {
      if (status) status.textContent = "Something went wrong. Try again.";
      if (button) button.disabled = false;
    }
  });
}
