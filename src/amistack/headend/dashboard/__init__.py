"""The head-end's web dashboard (docs/dashboard.md): Jinja2 pages under /ui, live over
server-sent events, served by the head-end's API app (`headend.api.create_app` adds it).

- `fleet.py`: what the pages show, from the repository (fleet rows, the day strip, the load
  profile with outages as gaps);
- `views.py`: the routes, each declaring its right like every API route, the CSRF check and the
  streams;
- `live.py`: what the running engine adds (held key generations, counters);
- `static/vendor/`: htmx, uPlot and cytoscape.js, pinned by web/package-lock.json and copied
  here by `make setup`; shipped as package data, so nothing is fetched at run time.
"""
