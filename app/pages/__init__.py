"""Server-rendered pages (Jinja + HTMX): the browser chat."""
