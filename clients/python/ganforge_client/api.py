"""Client: ganforge's HTTP API from Python, on httpx (sync).

Its methods live in five groups along the API's seams, each a small class on the shared
plumbing (transport.Transport): jobs.JobsApi (jobs, their events, wait), checkpoints.
CheckpointsApi (checkpoints and the pictures and metrics drawn from them), translations.
TranslationsApi (an image through a translation model), folders.FoldersApi (a folder of
images translated on the worker) and datasets.DatasetsApi (uploads).
Client is all of them.
"""

from __future__ import annotations

from ganforge_client.checkpoints import CheckpointsApi
from ganforge_client.datasets import DatasetsApi
from ganforge_client.folders import FoldersApi
from ganforge_client.jobs import JobsApi
from ganforge_client.translations import TranslationsApi


class Client(JobsApi, CheckpointsApi, TranslationsApi, FoldersApi, DatasetsApi):
    """ganforge's API: ``Client(url, key)``, or GANFORGE_URL / GANFORGE_KEY from the environment.

    Methods return the models in ganforge_client.models and raise ganforge_client.errors:
    ApiError (a subclass per status) for an error answer, ConnectionFailed when the server
    cannot be reached, JobFailed / JobCanceled from wait() for a job that did not succeed.
    Use it as a context manager, or call close().
    """
