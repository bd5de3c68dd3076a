"""HTTP only: routers, schemas, dependencies, error mapping."""
