"""The web dashboard: HTML pages and scripts that are one more client of the /v1 API."""
