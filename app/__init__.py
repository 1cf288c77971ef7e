"""HTTP layer: Starlette app, API handlers, pages and the inference actor."""
