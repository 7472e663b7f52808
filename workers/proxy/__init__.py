"""The front proxy: Caddy (Debian's 2.6.2), driven only through its admin API.

How Caddy 2.6 behaves (each point observed against /usr/bin/caddy 2.6.2 while building
this; the tests in tests/workers/test_proxy.py keep the ones rollhook relies on):

1. Every admin change reloads the whole configuration; there are no partial reloads
   (caddyserver/caddy#3143); a change that leaves it equal is skipped ("config is
   unchanged"). Each reload restarts the admin endpoint too: a kept-alive admin
   connection can be reset under the next call, so the client opens one per call.
   A proxied request in flight survives a reload: the old handler finishes it (a 3 s
   request on A completed after the switch to B), and ``apps.http.grace_period`` (1 s)
   did not cut it short, so a reload never bounds it.
2. A request *waiting* in reverse_proxy's retry loop (``load_balancing.try_duration``)
   is ended by any reload, even of an unrelated route: the loop waits on the handler's
   context, which unloading the old configuration cancels (reverseproxy.go,
   ``LoadBalancing.tryAgain``: ``case <-ctx.Done(): return false``). Observed: 503 "no
   upstreams available" or 502 (refused dial) within milliseconds of the change.
3. After a dial error (connection refused) any method is retried; after any other
   error, "no upstreams available" included, only GET, unless ``retry_match`` matches
   (``tryAgain``; caddyserver/caddy#4245, #6259).
4. A request with a body retried after a refused dial fails: 502 "http: invalid Read on
   closed Body". Go's transport closes the body when the dial fails and Caddy reuses it
   (caddyserver/caddy#5454 on 2.6.1, #7546; fixed by #7547 in 2026, after 2.11.1).
   ``buffer_requests`` does not help in 2.6.2. A body survives only if no dial is tried
   while it waits, i.e. while no upstream is *available* (unhealthy), not refusing.
5. An upstream that answers, 502 included, has answered: Caddy passes it on and never
   retries. Requests must not reach an app that is booting or being gated.
6. Past ``try_duration`` the client gets 503 (no available upstream) or 502 (refused).
7. WebSockets and other upgraded connections through a reverse_proxy are closed when its
   configuration is unloaded (2.6 has no ``stream_close_delay``: #5471, #5567 in 2.7).
8. Admin over a unix socket checks the Host header against ``admin.origins`` (default
   ``[""]``, which no HTTP/1.1 client can send: "host not allowed"); rollhook sets
   ``["rollhook"]``. Nothing listens on TCP for admin once ``admin.listen`` is a socket.
9. Active health checks mark an upstream unhealthy on the first failed probe and healthy
   on the first good one, with no reload; a request waiting for an available upstream
   re-selects every ``try_interval`` and goes on as soon as one is healthy.
10. ``GET /reverse_proxy/upstreams`` counts in-flight requests per address across
    reloads, but drops an address that no loaded configuration names, even while old
    requests to it are still running (observed).
11. ``tls internal`` issues from Caddy's local CA; ``pki...local.install_trust: false``
    keeps it out of the system trust store. Automatic HTTPS covers servers with host
    matchers that listen on another port than 80; its redirects bind port 80, so only a
    server on :443 keeps them. No ACME, no network, with ``internal``.

Hence two Caddy processes (``rollhook proxy`` runs both; ``config`` renders them):

- **front**: one route per target (``listen``, ``hosts``), proxying to the target's unix
  socket on the switch and probing it every 100 ms. Its configuration changes only when
  a route is added, changed or removed, so nothing reloads it while requests are held.
  Held requests wait here with no upstream available (no dial: bodies intact, any
  method: ``retry_match`` all), each for up to the route's ``hold``, then get 503.
- **switch**: one server per target on that socket. It answers the probe (200 ready,
  503 holding) and proxies everything else to the upstream that serves. ``hold`` and
  ``serve`` reload only the switch: requests in flight there finish (1), no request
  waits in its retry loop during a planned switch (2), WebSockets through it reconnect.

The verbs (``Proxy``): ``route`` / ``remove`` a target; ``hold`` (the switch's probe says
503; within ~0.3 s the front stops sending and holds new requests; returns once those
already sent have finished or ``drain`` s passed); ``serve`` (the switch proxies to the
new upstream and says ready; held requests go there within a probe interval; requests in
flight on the old upstream finish there, which is start-first's switch); ``drain`` (wait,
bounded, for those to finish; then forget the old upstream). The caller must ``hold``
before it stops an app: an app that disappears while served is only covered by the
switch's own retry, i.e. for requests without a body (4).
"""

from workers.proxy.admin import CaddyAdmin, ProxyError
from workers.proxy.config import Layout, Route, Switch, front_config, route_of, switch_config
from workers.proxy.driver import Proxy

__all__ = [
    "CaddyAdmin",
    "Layout",
    "Proxy",
    "ProxyError",
    "Route",
    "Switch",
    "front_config",
    "route_of",
    "switch_config",
]
