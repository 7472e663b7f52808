"""The dashboard's routes, all under ``/ui`` (added to the app's routes in service/app.py)."""

from __future__ import annotations

from starlette.routing import Route

from service.ui import actions, assets, live, pages, signin

ROUTES = [
    Route("/ui", pages.targets_page, methods=["GET"]),
    Route("/ui/login", signin.login_form, methods=["GET"]),
    Route("/ui/login", signin.login, methods=["POST"]),
    Route("/ui/logout", signin.logout, methods=["POST"]),
    Route("/ui/targets/{name}/status", pages.target_status, methods=["GET"]),
    Route("/ui/targets/{name}/{action}", actions.act, methods=["POST"]),
    Route("/ui/deployments", pages.history, methods=["GET"]),
    Route("/ui/deployments/{deployment_id}", pages.deployment, methods=["GET"]),
    Route("/ui/deployments/{deployment_id}/stream", live.stream, methods=["GET"]),
    Route("/ui/events/{event_id}", pages.event, methods=["GET"]),
    Route("/ui/static/{name}", assets.static_file, methods=["GET"]),
]
