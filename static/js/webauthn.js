// Passkeys on the page: registration, passwordless sign-in and second factor.
//
// Each form with data-webauthn="register|sign-in|second-factor" names two endpoints:
// data-options-url (the server's PublicKeyCredential*OptionsJSON, challenge kept
// server-side) and data-verify-url (receives credential.toJSON()). Requests carry the CSRF
// token from the form's hidden input. No inline script: this module is loaded with
// <script type="module">.

const supported =
  typeof window.PublicKeyCredential === "function" &&
  typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
  typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function";

function csrfToken(form) {
  const input = form.querySelector('input[name="csrfmiddlewaretoken"]');
  return input ? input.value : "";
}

async function postJSON(url, form, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: {
      "Content-Type": "application/json",
      Accept: "application/json",
      "X-CSRFToken": csrfToken(form),
    },
    body: JSON.stringify(body || {}),
  });
  let data = {};
  try {
    data = await response.json();
  } catch {
    data = {};
  }
  if (!response.ok) {
    const error = new Error((data.error && data.error.message) || "Something went wrong. Try again.");
    error.redirect = data.error && data.error.redirect;
    throw error;
  }
  return data;
}

function setStatus(form, text, isError) {
  const status = form.querySelector("[data-webauthn-status]");
  if (!status) return;
  status.textContent = text;
  status.classList.toggle("errorlist", Boolean(isError));
}

function showRecoveryCodes(codes) {
  const section = document.getElementById("new-recovery-codes");
  const list = section && section.querySelector("[data-recovery-codes]");
  if (!section || !list) return false;
  list.replaceChildren(
    ...codes.map((code) => {
      const item = document.createElement("code");
      item.className = "recovery-code";
      item.textContent = code;
      return item;
    }),
  );
  section.hidden = false;
  section.scrollIntoView({ block: "center" });
  return true;
}

async function register(form) {
  const options = await postJSON(form.dataset.optionsUrl, form);
  const publicKey = PublicKeyCredential.parseCreationOptionsFromJSON(options);
  const credential = await navigator.credentials.create({ publicKey });
  const nameInput = form.querySelector('input[name="passkey_name"]');
  const result = await postJSON(form.dataset.verifyUrl, form, {
    name: nameInput ? nameInput.value : "",
    credential: credential.toJSON(),
  });
  if (result.recovery_codes && result.recovery_codes.length && showRecoveryCodes(result.recovery_codes)) {
    setStatus(form, `Passkey “${result.passkey.name}” added.`, false);
    return;
  }
  window.location.assign(result.redirect || window.location.pathname);
}

async function authenticate(form) {
  const options = await postJSON(form.dataset.optionsUrl, form);
  const publicKey = PublicKeyCredential.parseRequestOptionsFromJSON(options);
  const credential = await navigator.credentials.get({ publicKey });
  const result = await postJSON(form.dataset.verifyUrl, form, {
    credential: credential.toJSON(),
    next: form.dataset.next || "",
  });
  window.location.assign(result.redirect || "/");
}

function describe(error) {
  if (error && error.name === "NotAllowedError") return "The passkey request was cancelled or timed out.";
  if (error && error.name === "InvalidStateError") return "This passkey is already registered.";
  return (error && error.message) || "Something went wrong. Try again.";
}

for (const form of document.querySelectorAll("form[data-webauthn]")) {
  const button = form.querySelector("button[type=submit]");
  if (!supported) {
    if (button) button.disabled = true;
    setStatus(form, "This browser doesn't support passkeys.", true);
    continue;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (button) button.disabled = true;
    setStatus(form, "Waiting for your passkey…", false);
    try {
      if (form.dataset.webauthn === "register") {
        await register(form);
      } else {
        await authenticate(form);
      }
    } catch (error) {
      if (error && error.redirect) {
        window.location.assign(error.redirect);
        return;
      }
      setStatus(form, describe(error), true);
    } finally {
      if (button) button.disabled = false;
    }
  });
}
