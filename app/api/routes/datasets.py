"""/v1/datasets: built-ins and uploads."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from app.api.deps import ServicesDep, SessionDep
from app.api.schemas import DatasetPublic, DatasetsPublic
from app.core import datasets

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])


@router.get("", response_model=DatasetsPublic)
def list_datasets(session: SessionDep, services: ServicesDep) -> DatasetsPublic:
    """Uploaded datasets (newest first), then the built-ins with whether each is on this server."""
    items = [DatasetPublic.of(d) for d in datasets.list_uploads(session)]
    for info, available, where in datasets.builtins(services.settings):
        items.append(DatasetPublic(
            id=info.name, name=info.name, kind="builtin", builtin=True, available=available,
            where=where, channels=info.channels, image_size=info.native_size,
            num_classes=info.num_classes, class_names=list(info.class_names or []) or None,
        ))
    return DatasetsPublic(items=items)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, session: SessionDep) -> DatasetPublic:
    return DatasetPublic.of(datasets.get_upload(session, dataset_id=dataset_id))


@router.delete("/{dataset_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(dataset_id: str, session: SessionDep, services: ServicesDep) -> Response:
    """Delete an upload (409 while an unfinished job uses it)."""
    ds = datasets.delete_upload(session, dataset_id=dataset_id)
    session.commit()
    services.store.delete(f"datasets/{ds.id}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
