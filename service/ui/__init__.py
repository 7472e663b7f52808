"""The dashboard at ``/ui``: server-rendered pages over the same API that people and CI call.

``routes.py`` lists the pages; ``session.py`` and ``csrf.py`` sign people in and guard
their forms; ``calls.py`` runs the API in-process, so every read and every action of the
dashboard is the HTTP API's own code; ``render.py`` holds the templates and the headers
every page carries (a Content-Security-Policy that allows no inline script).
"""
