"""The harness's live dashboard (`--dashboard [PORT]`): a page on 127.0.0.1 that follows the run.

How it is built, and why so small: `state.LiveState` listens to the same events as the terminal
progress (stress.report.progress forwards them), plus each capacity step and each host reading,
and keeps a bounded picture of the run. `server.DashboardServer` serves one static page
(`page.PAGE`, inline CSS and script, no data) and a Server-Sent Events feed of that picture
(`/events`, a JSON snapshot whenever it changed, at most every half second) on the harness's own
event loop. SSE rather than a WebSocket: the feed only flows one way, the browser's EventSource
reconnects by itself, and plain HTTP on asyncio streams needs no framework that would take over
the harness's signal handling. See docs/harness.md "Live dashboard".

Nothing in the run imports this package but the session and the CLI's option; `server` uses
stress.model.http11 to read requests.
"""
