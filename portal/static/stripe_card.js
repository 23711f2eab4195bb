/* The add-card page in Stripe mode: mount Stripe's card Element, confirm the page's
 * SetupIntent with Stripe.js when the form is submitted, and post only the resulting
 * PaymentMethod id (the card number never reaches the portal). Loaded after Stripe.js
 * (both deferred, in order); no inline script, as the Content-Security-Policy asks. */
(function () {
  "use strict";
  var form = document.getElementById("stripe-card-form");
  if (!form) {
    return;
  }
  var key = form.getAttribute("data-publishable-key");
  var secret = form.getAttribute("data-client-secret");
  var errors = document.getElementById("card-errors");
  var button = form.querySelector("button[type=submit]");
  function fail(message) {
    errors.textContent = message;
    document.getElementById("card-element").closest(".field").classList.add("field-error");
    button.disabled = false;
  }
  if (!key || !secret) {
    return; // the staff preview, or the processor could not be reached: nothing to mount
  }
  if (typeof window.Stripe !== "function") {
    fail("The card form could not be loaded. Check your connection and reload the page.");
    button.disabled = true;
    return;
  }
  var stripe = window.Stripe(key);
  var card = stripe.elements().create("card", { hidePostalCode: true });
  card.mount("#card-element");
  form.addEventListener("submit", function (event) {
    if (form.elements.payment_method.value) {
      return; // confirmed: let the form post the PaymentMethod id
    }
    event.preventDefault();
    button.disabled = true;
    errors.textContent = "";
    var name = form.elements.holder_name.value.trim();
    var details = name ? { name: name } : {};
    stripe
      .confirmCardSetup(secret, { payment_method: { card: card, billing_details: details } })
      .then(function (result) {
        if (result.error) {
          fail(result.error.message || "Your card could not be saved. Check the details and try again.");
          return;
        }
        form.elements.payment_method.value = result.setupIntent.payment_method;
        form.submit();
      }, function () {
        fail("Your card could not be saved. Check your connection and try again.");
      });
  });
})();
