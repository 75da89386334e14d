// Synchronised zoom on the reconstructions: the pointer over either image of a pair magnifies both
// around the same point, so the same crop of the original and the decoded image sit side by side.
// Without JavaScript both images are shown plainly.
(function () {
  "use strict";
  var SCALE = 4;
  document.querySelectorAll("[data-zoom]").forEach(function (pair) {
    var images = pair.querySelectorAll(".side img");
    function zoom(x, y) {
      images.forEach(function (img) {
        img.style.transformOrigin = (x * 100) + "% " + (y * 100) + "%";
        img.style.transform = "scale(" + SCALE + ")";
      });
    }
    function reset() { images.forEach(function (img) { img.style.transform = ""; }); }
    pair.querySelectorAll(".side").forEach(function (side) {
      side.addEventListener("mousemove", function (event) {
        var box = side.getBoundingClientRect();
        zoom((event.clientX - box.left) / box.width, (event.clientY - box.top) / box.height);
      });
      side.addEventListener("mouseleave", reset);
    });
  });
})();
