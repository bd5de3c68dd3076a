"""/v1/datasets: built-ins and uploads."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status

from app.api.dataset_schemas import DatasetPublic, DatasetsPublic
from app.api.deps import PrincipalDep, ServicesDep, SessionDep, require_writable_store
from app.api.errors import problem_responses
from app.core.datasets import records as datasets
from app.core.datasets import uploads

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], responses=problem_responses(401, 503))

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": f"Upload {uploads.ACCEPTED}: as the multipart form field `file` "
        "(`curl -F file=@x.zip`), or as the raw body (`--data-binary @x.zip`).",
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "name": {"type": "string", "maxLength": 200},
                        "pairing": {"type": "string", "enum": ["auto", "paired", "unpaired"]},
                    },
                }
            },
            "application/zip": _BINARY,
            "application/octet-stream": _BINARY,
        },
    }
}
_PROBLEMS = problem_responses(
    408,
    413,
    415,
    422,
    described={
        408: "the body was idle or too slow (see GANFORGE_UPLOAD_IDLE_TIMEOUT_SECONDS)",
        413: "over the upload size or pixel limit, or the owner's storage quota",
        415: "neither a zip nor an npz",
        422: "an unsafe archive, or data the loaders refuse",
    },
)


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> DatasetsPublic:
    """Uploaded datasets (newest first), then the built-ins with whether each is on this server."""
    items = [DatasetPublic.of(d) for d in datasets.list_uploads(session, owner_id=principal.scope)]
    items += [DatasetPublic.of_builtin(*b) for b in datasets.builtins(services.settings)]
    return DatasetsPublic(items=items)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetPublic,
    dependencies=[Depends(require_writable_store)],
    openapi_extra=_UPLOAD_BODY,
    responses=_PROBLEMS,
)
async def upload_dataset(
    request: Request,
    services: ServicesDep,
    response: Response,
    principal: PrincipalDep,
    name: Annotated[
        str | None,
        Query(min_length=1, max_length=200, description="dataset name (default: the file's name)"),
    ] = None,
    filename: Annotated[
        str | None, Query(max_length=255, description="the file's name, for a raw body (x.npz)")
    ] = None,
    pairing: Annotated[
        Literal["auto", "paired", "unpaired"] | None,
        Query(
            description="for a zip of A/ and B/ folders: paired (same file names in both), "
            "unpaired (two domains), or auto (default: paired when the names match, unpaired "
            "when none do)"
        ),
    ] = None,
) -> DatasetPublic:
    """Upload a dataset: a zip of images (class subfolders become labels), a zip of pairs or of
    two domains (A/ + B/, trainA/ + trainB/, or AB/ of side-by-side images), or an .npz.

    The body is streamed to disk and refused (413) as soon as it passes the size cap; a zip is
    checked for unsafe names, links, entry count and expansion before anything is unpacked.
    """
    ds = await uploads.upload_dataset(
        request.stream(),
        services.store,
        services.settings,
        services.uploads,
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
        filename=filename,
        name=name,
        owner_id=principal.owner_id,
        pairing=pairing,
    )
    response.headers["Location"] = f"/v1/datasets/{ds.id}"
    return DatasetPublic.of(ds)


@router.get("/{dataset_id}", response_model=DatasetPublic, responses=problem_responses(404, 422))
def get_dataset(dataset_id: str, session: SessionDep, principal: PrincipalDep) -> DatasetPublic:
    return DatasetPublic.of(
        datasets.get_upload(session, dataset_id=dataset_id, owner_id=principal.scope)
    )


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(
        404, 409, 422, described={409: "an unfinished job uses the dataset"}
    ),
)
def delete_dataset(
    dataset_id: str, session: SessionDep, services: ServicesDep, principal: PrincipalDep
) -> Response:
    """Delete an upload (409 while an unfinished job uses it)."""
    datasets.delete_upload(session, services.store, dataset_id=dataset_id, owner_id=principal.scope)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
