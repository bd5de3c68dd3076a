"""The FastAPI application."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from celery import Celery
from fastapi import Depends, FastAPI

from app.api import errors
from app.api.deps import Services, check_parameters
from app.api.routes import (
    checkpoints,
    datasets,
    health,
    history,
    jobs,
    translate,
    translations,
    webhooks,
)
from app.api.telemetry import MetricsMiddleware
from app.core.access import revocations
from app.core.artifacts.selection import get_store
from app.core.datasets.uploads import UploadGate
from app.core.db import migrate
from app.core.integrations.telemetry import Exposition
from app.core.integrations.webhook_delivery import Dispatcher
from app.core.jobs.queue import JobQueue, celery_config, queue_length
from app.core.serving.exports import Exports
from app.core.serving.job_pictures import JobPictures
from app.core.serving.sampling import Sampler, SamplingService
from app.core.settings import Settings, get_settings
from app.dashboard import pages as dashboard
from gan_core.config import TrainConfig
from gan_core.memory import estimate_training_memory

log = logging.getLogger("ganforge.api")


def build_services(settings: Settings, local_worker: Callable[[], bool] | None = None) -> Services:
    celery = Celery("ganforge-api")
    celery.conf.update(celery_config(settings))
    store = get_store(settings.resolved_store_dir, settings.store_url)
    sampler = Sampler(
        settings.generator_cache_size,
        settings.png_cache_size,
        settings.png_cache_bytes,
        precision=settings.sample_precision,
    )
    sampling = SamplingService(settings, store, sampler)
    return Services(
        settings=settings,
        store=store,
        sampling=sampling,
        pictures=JobPictures(sampling),
        exports=Exports(sampling),
        exposition=Exposition(settings, lambda: queue_length(settings)),
        queue=JobQueue(celery, settings),
        celery=celery,
        uploads=UploadGate(settings),
        local_worker=local_worker,
    )


def create_app(
    settings: Settings | None = None, *, local_worker: Callable[[], bool] | None = None
) -> FastAPI:
    """The API. ``local_worker`` tells whether embedded serve's own worker process is alive."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = app.state.services
        migrate(settings.resolved_database_url)
        services.store.ping()
        services.store.open_scratch()  # and remove what interrupted uploads left behind
        if not settings.auth:
            log.warning(
                "GANFORGE_AUTH=false: every request acts as an admin; bind to localhost only"
            )
        # The first memory estimate initialises torch's meta device (~1 s): not on a request.
        warm = asyncio.create_task(asyncio.to_thread(estimate_training_memory, TrainConfig()))
        dispatcher = asyncio.create_task(
            Dispatcher(settings, f"{socket.gethostname()}:{os.getpid()}").run()
        )
        revocations_task = asyncio.create_task(
            revocations.listen(
                settings,
                lambda key_id: services.key_cache.discard_where(lambda p: p.key_id == key_id),
            )
        )
        try:
            yield
        finally:
            revocations_task.cancel()
            dispatcher.cancel()
            warm.cancel()
            services.uploads.close()
            services.sampling.sampler.close()
            services.store.close_scratch()

    app = FastAPI(
        title="ganforge",
        version="0.1.0",
        description="Train GANs and fetch PNG samples from their checkpoints.",
        lifespan=lifespan,
        dependencies=[Depends(check_parameters)],
    )
    app.state.services = build_services(settings, local_worker)
    errors.install(app)
    app.add_middleware(MetricsMiddleware)
    for module in (
        health,
        datasets,
        jobs,
        checkpoints,
        translate,
        translations,
        history,
        webhooks,
    ):
        app.include_router(module.router)
    app.include_router(dashboard.router)  # pages and /ui/static: no data, the scripts call /v1
    return app
