"""The simulator's File Upload and Attachment/Add (reference §8, "Files and attachments").

File Upload lives on the regional files host (`files-<region>.leadsquared.com/File/Upload`);
the simulator is its own files host, so it serves `/File/Upload` beside `/v2/`. Keys come in
the multipart form (`AccessKey`, `SecretKey`), as the reference lists them. The answer
(switch upload_answer): `uploadedFile` (the stored file's name) and `s3FilePath`, the file's
S3 URL (reference §8, §9: Chatwoot's client and a client mirroring a working n8n template
read it), or `uploadedFile` alone (the upload page's text) [DOC:file-upload-to-leads].
`Attachment/Add` takes that S3 URL as `AttachmentFile` (the docs call it "S3URL"
[DOC:attach-a-file-to-activities]) and refuses anything else, a URL a client built itself
included. The simulator stands in for S3 at `<base>/s3/<bucket>/<name>`, which serves the
bytes back for tests and the lead page.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from hmac import compare_digest
from typing import Any

from aiohttp import web

from plugins.leadsquared.simulator.key import SIM_KEY
from plugins.leadsquared.simulator.state import INVALID, ApiError, invalid, missing

UPLOAD_PATH = "/File/Upload"
S3_PREFIX = "/s3/lsq-simulator-files/"  # the stand-in for the account's S3 bucket
FILE_PATH = S3_PREFIX + "{name:.+}"
ATTACH_PATH = "ProspectActivity.svc/Attachment/Add"
FILE_TYPES = {"0", "1", "3", "7"}  # document, image, lead attachment, custom-field-set document
# The default of knob upload_limit. UNSURE: no source found for the files host's size
# limit (searched the docs, pages, issues and code corpora for LeadSquared File Upload
# size limits and 413 answers, December 2026; [DOC:file-upload-to-leads] names none).
MAX_UPLOAD = 200 * 1024 * 1024


@dataclass(frozen=True)
class StoredFile:
    name: str
    filename: str
    content_type: str
    data: bytes
    file_type: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


async def upload(request: web.Request) -> web.Response:
    """POST /File/Upload, multipart: uploadFiles, FileType, AccessKey, SecretKey,
    FileStorageType, EnableResize; answers the stored file's name in `uploadedFile`."""
    sim = request.app[SIM_KEY]
    sim.record(request)
    if not request.content_type.startswith("multipart/form-data"):
        return _error(ApiError(INVALID, f"Content-Type {request.content_type!r} is not "
                                        "multipart/form-data", 400))
    form, upload = await _read_form(request, sim.knobs.upload_limit, sim.knobs.upload_rate)
    if (status := sim.broken.get(UPLOAD_PATH.rsplit("/", 1)[-1])) is not None:
        # break_endpoint("Upload"): the files host down behind its gateway, which read the
        # body first (as a buffering proxy does) and answers its error page [FAULT]
        return sim.fault_answer(status or 503)
    if sim.knobs.latency:  # knob latency (row K4): every call, uploads too
        await asyncio.sleep(sim.knobs.latency)
    if not (compare_digest(form.get("AccessKey", "").encode(), sim.access_key.encode())
            and compare_digest(form.get("SecretKey", "").encode(), sim.secret_key.encode())):
        return _error(ApiError("MXUnAuthorizedAccessException",
                               "Invalid access key or secret key", 401))
    if upload is None:
        return _error(missing("uploadFiles"))
    if form.get("FileType", "") not in FILE_TYPES:
        return _error(invalid(f"FileType must be one of {', '.join(sorted(FILE_TYPES))}"))
    filename, content_type, data = upload
    name = f"{sim.store.new_id()}/{filename}"
    sim.store.files[name] = StoredFile(name, filename, content_type, data, form["FileType"])
    answer = {"Status": "Success", "uploadedFile": name}
    if sim.store.switches.upload_answer == "s3":
        answer["s3FilePath"] = s3_url(sim.base_url, name)
    return web.json_response(answer)


def s3_url(base: str, name: str) -> str:
    """The stored file's S3 URL (the simulator's stand-in for the bucket)."""
    return base.rstrip("/") + S3_PREFIX + name


async def _read_form(request: web.Request, limit: int = MAX_UPLOAD,
                     rate: int = 0) -> tuple[dict[str, str], tuple | None]:
    reader = await request.multipart()
    form: dict[str, str] = {}
    upload = None
    while (part := await reader.next()) is not None:
        if part.name == "uploadFiles":
            data = await _read_upload(part, limit, rate)
            upload = (part.filename or "file", part.headers.get("Content-Type",
                                                                "application/octet-stream"),
                      bytes(data))
        elif part.name:
            form[part.name] = (await part.text()).strip()
    return form, upload


async def _read_upload(part: Any, limit: int = MAX_UPLOAD, rate: int = 0) -> bytearray:
    """The file part's bytes up to `limit` (413 beyond). Read chunk by chunk: the part's
    read() stops at the app's client_max_size (aiohttp's 1 MiB), which refused every
    photo or video over 1 MiB that the files host takes. `rate` (knob upload_rate): bytes
    a second, read in tenths of a second's worth (a slow uplink)."""
    data = bytearray()
    size = max(1, rate // 10) if rate else 1 << 20
    while chunk := await part.read_chunk(size):
        data.extend(chunk)
        if len(data) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(data))
        if rate:
            await asyncio.sleep(len(chunk) / rate)
    return data


async def serve_file(request: web.Request) -> web.Response:
    """GET the S3 URL: the stored bytes (tests compare them; the lead page links them)."""
    stored = request.app[SIM_KEY].store.files.get(request.match_info["name"])
    if stored is None:
        raise web.HTTPNotFound(text="no such uploaded file")
    return web.Response(body=stored.data, content_type=stored.content_type)


def attach(store: Any, body: Any, files_base: str) -> dict[str, str]:
    """Attachment/Add: refused for an unknown activity, a type without Allow Attachments
    (§8), or an AttachmentFile that is not the S3 URL of a file uploaded to this account;
    else the attachment's id."""
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    for name in ("ProspectActivityId", "AttachmentName", "AttachmentFile"):
        if not str(body.get(name) or "").strip():
            raise missing(name)
    activity = store.activities.get(str(body["ProspectActivityId"]))
    if activity is None:
        raise invalid(f"No activity {body['ProspectActivityId']}")
    kind = store.types.get(activity.event)
    if kind is None or not kind.allow_attachments:
        raise invalid("Attachments are not allowed for this activity type")
    prefix = s3_url(files_base, "")
    url = str(body["AttachmentFile"])
    stored = store.files.get(url[len(prefix):]) if url.startswith(prefix) else None
    if stored is None:
        raise invalid(f"AttachmentFile {url!r} is not the S3 URL of a file uploaded to this "
                      "account")
    attachment = {"Id": store.new_id(), "AttachmentName": str(body["AttachmentName"]),
                  "Description": str(body.get("Description") or ""), "AttachmentFile": url,
                  "File": stored.name}
    store.attachments.setdefault(activity.id, []).append(attachment)
    return {"Id": attachment["Id"]}


def _error(error: ApiError) -> web.Response:
    return web.json_response(error.body(), status=error.status)
