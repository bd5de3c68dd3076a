"""The service's domain, shared by the API and the worker; never imports FastAPI or Celery."""
