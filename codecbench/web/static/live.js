// Live state and progress of the experiments on this page (elements with data-live-experiment),
// from the server-sent events at this script's data-events URL. The browser's EventSource resends
// the last event id after a reconnect, so the stream resumes where it stopped. Without JavaScript
// the page simply shows the state it was rendered with.
(function () {
  "use strict";
  var url = document.currentScript.getAttribute("data-events");
  var source = new EventSource(url);
  var log = document.getElementById("events");
  source.addEventListener("experiment", function (message) {
    var data = JSON.parse(message.data);
    var holders = document.querySelectorAll("[data-live-experiment]");
    for (var i = 0; i < holders.length; i++) {
      if (holders[i].getAttribute("data-live-experiment") !== data.experiment_id) continue;
      var state = holders[i].querySelector("[data-field=state]");
      var progress = holders[i].querySelector("[data-field=progress]");
      if (data.state && state) {
        state.textContent = data.state;  // textContent: whatever comes is shown as text
        state.className = "state state-" + data.state;
      }
      if (progress && (data.progress || data.problem)) progress.textContent = data.problem || data.progress;
    }
    if (log && data.line) {
      var item = document.createElement("li");
      item.textContent = data.line;
      log.appendChild(item);
      log.scrollTop = log.scrollHeight;
    }
  });
  source.addEventListener("end", function () { source.close(); });
})();
