"""ganforge's service: app.core (domain, no web/queue imports) and app.api (HTTP)."""
