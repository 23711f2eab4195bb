/* "Copy" buttons for read-only fields (the staff bill group page's portal link, a new
 * API key or webhook signing secret).
 *
 * Served by the app: the CSP forbids inline scripts, so everything is wired up from data
 * attributes. Markup:
 *   <input id="x" readonly data-select-on-focus>
 *   <button type="button" data-copy-target="x" data-copy-status="x-status"
 *           data-copy-done="Link copied" hidden>Copy</button>
 *   (data-copy-selected: what to announce when the text could only be selected)
 *   <p id="x-status" role="status" aria-live="polite"></p>
 * The button starts hidden and is shown here, so without JavaScript there is no dead
 * button: the field is still there for the user to select and copy by hand.
 *
 * The target may also be plain text (<code id="x" data-copy-value="DE89...">DE89 ...</code>,
 * the bank details of an invoice): its data-copy-value is copied when it has one (an IBAN
 * without the spaces it is shown with), else its text; it is selected as a range.
 */
(function () {
  "use strict";

  function announce(button, message) {
    var region = document.getElementById(button.getAttribute("data-copy-status"));
    if (!region) { return; }
    // Clear first so that a second copy of the same text is announced again.
    region.textContent = "";
    window.setTimeout(function () { region.textContent = message; }, 50);
  }

  function isInput(field) {
    return field.tagName === "INPUT" || field.tagName === "TEXTAREA";
  }

  function valueOf(field) {
    if (isInput(field)) { return field.value; }
    return field.getAttribute("data-copy-value") || field.textContent.trim();
  }

  function selectAll(field) {
    if (!isInput(field)) {
      var range = document.createRange();
      range.selectNodeContents(field);
      var selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      return;
    }
    field.focus();
    field.select();
    if (field.setSelectionRange) { field.setSelectionRange(0, field.value.length); }
  }

  function copyBySelection(field) {
    selectAll(field);
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  function copy(button) {
    var field = document.getElementById(button.getAttribute("data-copy-target"));
    if (!field) { return; }
    var done = function () {
      announce(button, button.getAttribute("data-copy-done") || "Copied");
    };
    var fallback = function () {
      if (copyBySelection(field)) {
        done();
      } else {
        // Nothing could copy for us: leave the text selected for Ctrl+C or Cmd+C.
        selectAll(field);
        announce(button, button.getAttribute("data-copy-selected") ||
          "The link is selected: press Ctrl+C (or Cmd+C on a Mac) to copy it.");
      }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(valueOf(field)).then(done, fallback);
    } else {
      fallback();
    }
  }

  function init() {
    var buttons = document.querySelectorAll("[data-copy-target]");
    Array.prototype.forEach.call(buttons, function (button) {
      button.hidden = false;
      button.addEventListener("click", function (event) {
        event.preventDefault();
        copy(button);
      });
    });
    var fields = document.querySelectorAll("[data-select-on-focus]");
    Array.prototype.forEach.call(fields, function (field) {
      field.addEventListener("focus", function () { field.select(); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
