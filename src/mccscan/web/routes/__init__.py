"""The API's routers: scans (upload, history, events, results), viewer (images drawn from a
scan) and pages (the viewer page itself)."""
