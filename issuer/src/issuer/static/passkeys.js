// Passkeys at the issuer (W3C WebAuthn Level 3): the browser side of issuer/passkeys.py.
// A form with data-passkey="register" or "login" fetches its ceremony's options (POST, the
// form's CSRF token in X-CSRFToken), asks the authenticator (navigator.credentials.create or
// get), puts the PublicKeyCredential as JSON into the form's "credential" field and submits it.
"use strict";

(function () {
  function toBytes(base64url) {
    const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
    return Uint8Array.from(binary, (c) => c.charCodeAt(0));
  }

  function toBase64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) binary += String.fromCharCode(byte);
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    options.excludeCredentials = (options.excludeCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) }));
    return options;
  }

  function requestOptions(options) {
    options.challenge = toBytes(options.challenge);
    options.allowCredentials = (options.allowCredentials || []).map((c) => ({ ...c, id: toBytes(c.id) }));
    return options;
  }

  function credentialJSON(credential) {
    const response = credential.response;
    const json = {
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || undefined,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: { clientDataJSON: toBase64url(response.clientDataJSON) },
    };
    if (response.attestationObject) {
      json.response.attestationObject = toBase64url(response.attestationObject);
      json.response.transports = response.getTransports ? response.getTransports() : [];
    } else {
      json.response.authenticatorData = toBase64url(response.authenticatorData);
      json.response.signature = toBase64url(response.signature);
      if (response.userHandle) json.response.userHandle = toBase64url(response.userHandle);
    }
    return JSON.stringify(json);
  }

  function showError(text) {
    const alert = document.getElementById("passkey-error");
    if (alert) {
      alert.textContent = text;
      alert.hidden = false;
    }
  }

  async function ceremony(form) {
    const ask = await fetch(form.dataset.options, {
      method: "POST",
      credentials: "same-origin",
      headers: { "X-CSRFToken": form.elements.csrf_token.value, Accept: "application/json" },
    });
    if (ask.status === 401 && form.dataset.passkey === "register") {
      form.submit(); // the login is too old for a factor change: the page sends the browser to log in again
      return;
    }
    if (!ask.ok) throw new Error("options");
    const options = await ask.json();
    const credential =
      form.dataset.passkey === "register"
        ? await navigator.credentials.create({ publicKey: creationOptions(options) })
        : await navigator.credentials.get({ publicKey: requestOptions(options) });
    form.elements.credential.value = credentialJSON(credential);
    form.submit();
  }

  for (const form of document.querySelectorAll("form[data-passkey]")) {
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (!window.PublicKeyCredential) {
        showError("This browser cannot use passkeys.");
        return;
      }
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      ceremony(form).catch((error) => {
        button.disabled = false;
        showError(
          error && error.name === "NotAllowedError"
            ? "The passkey request was cancelled or timed out."
            : "The passkey could not be used. Please try again."
        );
      });
    });
  }
})();
