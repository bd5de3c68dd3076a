"""The Client's dataset methods: a streamed multipart upload, list, get, delete."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

from ganforge_client.models import Dataset
from ganforge_client.transport import CHUNK_BYTES, Transport, seg

Progress = Callable[[int, int], object]


def _form_quote(value: str) -> str:
    # What browsers do for a multipart filename: the characters that would end the header.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class DatasetsApi(Transport):
    def upload_dataset(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        pairing: str | None = None,
        progress: Progress | None = None,
    ) -> Dataset:
        """Upload a zip of images, of pairs (A/ + B/, AB/) or of two domains, or an .npz,
        streamed from disk; ``pairing`` (auto, paired, unpaired) says how A/ and B/ are read;
        ``progress(sent, total)`` is called with the file's bytes sent so far."""
        path = Path(path)
        size = path.stat().st_size
        boundary = secrets.token_hex(16)
        head = b""
        for field, value in (("name", name), ("pairing", pairing)):
            if value is not None:
                head += (
                    f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n'
                    f"{value}\r\n"
                ).encode()
        head += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_form_quote(path.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()

        def body() -> Iterator[bytes]:
            yield head
            sent = 0
            if progress is not None:
                progress(0, size)
            with path.open("rb") as f:
                while sent < size:
                    chunk = f.read(min(CHUNK_BYTES, size - sent))
                    if not chunk:
                        raise OSError(f"{path} shrank while it was being uploaded")
                    yield chunk  # resumed once httpx has written it
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, size)
            yield tail

        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            # explicit, so httpx sends the generator with a length instead of chunked
            "Content-Length": str(len(head) + size + len(tail)),
        }
        return Dataset.model_validate(
            self._json("POST", "/v1/datasets", content=body(), headers=headers)
        )

    def list_datasets(self) -> list[Dataset]:
        """Uploads (newest first), then the built-ins, each saying whether it is available."""
        items = self._json("GET", "/v1/datasets")["items"]
        return [Dataset.model_validate(d) for d in items]

    def get_dataset(self, dataset_id: str) -> Dataset:
        return Dataset.model_validate(self._json("GET", f"/v1/datasets/{seg(dataset_id)}"))

    def delete_dataset(self, dataset_id: str) -> None:
        self.request("DELETE", f"/v1/datasets/{seg(dataset_id)}")
