// amistack head-end dashboard: live parts over server-sent events, the load-profile chart
// (uPlot) and the mesh graph (cytoscape.js). No inline script: the pages' CSP forbids it.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var main = document.querySelector("[data-sse]");
  var handlers = {};

  document.body.addEventListener("htmx:beforeSwap", function (e) {
    // a refusal (403) or a bad request answers an HTML message: show it where the result goes
    if (e.detail.xhr.status >= 400 && e.detail.xhr.status < 500) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  if (!main && live) {  // a page with nothing live (a confirmation, a result): say so
    live.textContent = "static";
  }
  if (main) {
    var es = new EventSource(main.dataset.sse);
    es.onopen = function () { if (live) { live.textContent = "live"; live.className = "live on"; } };
    es.onerror = function () { if (live) { live.textContent = "reconnecting…"; live.className = "live"; } };
    document.querySelectorAll("[data-swap]").forEach(function (el) {
      es.addEventListener(el.dataset.swap, function (e) {
        el.innerHTML = e.data;
        if (window.htmx) { window.htmx.process(el); }
        document.dispatchEvent(new CustomEvent("ami:" + el.dataset.swap));
      });
    });
    handlers.es = es;
    // a page left for another (or kept in the back/forward cache) must give its connection
    // back: browsers allow six per server, and a stream holds one
    window.addEventListener("pagehide", function () { es.close(); });
    window.addEventListener("pageshow", function (e) { if (e.persisted) { location.reload(); } });
  }

  // -- the load profile -----------------------------------------------------------------------
  var chartEl = document.getElementById("profile");
  if (chartEl && window.uPlot) {
    var initial = JSON.parse(document.getElementById("profile-data").textContent);
    var plot = new window.uPlot({
      width: Math.max(280, chartEl.clientWidth), height: 260,
      scales: { x: { time: true } },
      series: [{}, { label: "imported Wh", stroke: "#0b5cad", width: 2, spanGaps: false },
               { label: "exported Wh", stroke: "#1a7f37", width: 1, spanGaps: false }],
      axes: [{}, { label: "Wh" }]
    }, initial, chartEl);
    window.addEventListener("resize", function () {
      plot.setSize({ width: Math.max(280, chartEl.clientWidth), height: 260 });
    });
    if (handlers.es) {
      handlers.es.addEventListener("chart", function (e) { plot.setData(JSON.parse(e.data)); });
    }
  }

  // -- the mesh -------------------------------------------------------------------------------
  var meshEl = document.getElementById("mesh");
  if (meshEl && window.cytoscape) {
    var stats = document.getElementById("mesh-stats");
    var nodeInfo = document.getElementById("node");
    var cy = null;
    var show = function (data) {
      var t0 = performance.now();
      var elements = data.nodes.map(function (n) { return { group: "nodes", data: n }; })
        .concat(data.edges.map(function (e) { return { group: "edges", data: e }; }));
      if (cy) { cy.destroy(); }
      cy = window.cytoscape({
        container: meshEl, elements: elements, textureOnViewport: true,
        hideEdgesOnViewport: data.nodes.length > 300,
        style: [
          { selector: "node", style: { "width": 8, "height": 8, "background-color": "#1a7f37" } },
          { selector: "node[kind = 'concentrator']", style: { "width": 24, "height": 24,
            "background-color": "#0d2236", "label": "data(label)", "font-size": 12 } },
          { selector: "node[state = 'installed']", style: { "background-color": "#0b5cad" } },
          { selector: "node[state = 'decommissioned']", style: { "background-color": "#6e7781" } },
          { selector: "node[join = 'unjoined']", style: { "background-color": "#6e7781" } },
          { selector: "node[kind = 'node'][!auth]", style: { "background-color": "#bc4c00" } },
          { selector: "node:selected", style: { "border-width": 3, "border-color": "#f0b400" } },
          { selector: "edge", style: { "width": 1, "line-color": "#c4ccd4" } },
          // link quality: the LQI when reported, else the node's ETX to its parent (RFC 6551:
          // 1 is a perfect link), thicker the better
          { selector: "edge[etx > 0]", style: { "width": "mapData(etx, 1, 4, 3, 0.5)",
            "line-color": "#57606a" } },
          { selector: "edge[lq >= 0]", style: { "width": "mapData(lq, 0, 255, 0.5, 3)",
            "line-color": "#57606a" } }
        ],
        // a reported DODAG: its tree, radially (one ring per hop from the root: a wide tree of
        // 1,000 nodes stays legible); otherwise the star: the concentrators in the middle, their
        // meters round them
        layout: data.dodag ? { name: "breadthfirst", animate: false, directed: true, circle: true,
          spacingFactor: 0.5,
          roots: data.nodes.filter(function (n) { return n.kind === "concentrator"; })
            .map(function (n) { return "#" + CSS.escape(n.id); }).join(",") } :
          { name: "concentric", animate: false, minNodeSpacing: 4,
            concentric: function (n) { return n.data("kind") === "concentrator" ? 2 : 1; },
            levelWidth: function () { return 1; } }
      });
      cy.on("tap", "node", function (evt) { describe(evt.target.data()); });
      window.requestAnimationFrame(function () {
        var ms = Math.round(performance.now() - t0);
        meshEl.dataset.nodes = String(data.nodes.length);
        meshEl.dataset.renderMs = String(ms);
        stats.textContent = data.nodes.length + " nodes, " + data.edges.length + " links drawn in " +
          ms + " ms" + (data.truncated ? " (first nodes only: choose a concentrator)" : "");
      });
    };
    var describe = function (d) {
      nodeInfo.innerHTML = "";
      var add = function (k, v, href) {
        var div = document.createElement("div"), dt = document.createElement("dt"), dd = document.createElement("dd");
        dt.textContent = k;
        if (href) { var a = document.createElement("a"); a.href = href; a.textContent = v; dd.appendChild(a); }
        else { dd.textContent = v; }
        div.appendChild(dt); div.appendChild(dd); nodeInfo.appendChild(div);
      };
      if (d.kind === "meter") {
        add("Meter", d.label, main.dataset.sse.split("/mesh")[0] + "/meters/" + encodeURIComponent(d.id));
        add("State", d.state); add("Cell", d.cell || "-"); add("Last reading received", d.last);
        add("Parent", "its concentrator (star: no DODAG reported)");
      } else if (d.kind === "node") {
        if (d.meter_id) { add("Meter", d.meter_id, main.dataset.sse.split("/mesh")[0] + "/meters/" + encodeURIComponent(d.meter_id)); }
        add("EUI-64", d.eui64); add("Address", d.address || "-"); add("Concentrator", d.concentrator);
        var up = cy.getElementById(d.id).incomers("node");
        add("Parent", up.length ? up[0].data("eui64") : "-");
        add("Rank", d.rank === undefined || d.rank === null ? "-" : String(d.rank));
        add("Hops", d.hops === undefined || d.hops === null ? "-" : String(d.hops));
        add("ETX", d.etx === undefined || d.etx === null ? "-" : String(d.etx));
        add("Link quality", d.lq === undefined || d.lq === null ? "-" : String(d.lq));
        add("Join state", d.join); add("PANA authenticated", d.auth ? "yes" : "no");
        add("Children", String(cy.getElementById(d.id).outgoers("node").length));
      } else { add("Concentrator", d.label); add("Meters", String(cy.getElementById(d.id).degree())); }
    };
    var load = function () {
      fetch(meshEl.dataset.graph, { credentials: "same-origin" })
        .then(function (r) { return r.json(); }).then(show);
    };
    document.getElementById("find-go").addEventListener("click", function () {
      var id = document.getElementById("find").value, n = cy && cy.getElementById(id);
      if (cy && !n.length) {  // a DODAG node by its meter id or EUI-64
        n = cy.nodes().filter(function (x) { return x.data("meter_id") === id || x.data("eui64") === id; });
      }
      if (n && n.length) {
        cy.$(":selected").unselect(); n.select(); cy.zoom(Math.max(cy.zoom(), 1.5)); cy.center(n);
        describe(n.data());
      }
      else { stats.textContent = "no node " + id; }
    });
    var versions = 0;  // the stream's first graph version is the one just loaded
    document.addEventListener("ami:graph", function () { if (versions++ > 0) { load(); } });
    load();
  }
})();
