"""File routes: /view, /upload/image and /upload/mask, /internal/files. Every name from a request is confined."""

from __future__ import annotations

import io
import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from graph_runtime import UnsafePathError, strict_json
from graph_runtime.limits import LIMITS
from graph_runtime.paths import check_file_name

from .replies import error
from .security import BodyTooLarge, confine

# Served inline (the editor shows them with <img>/<video>); anything else downloads as an attachment.
INLINE_TYPES = {"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "video/mp4", "video/webm",
                "audio/mpeg", "audio/wav", "audio/x-wav", "audio/flac", "audio/ogg"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


MAX_LISTED = 10_000


def disposition(kind: str, name: str) -> str:
    """RFC 6266/5987: an ASCII ``filename`` for old clients and ``filename*`` with the exact UTF-8 name."""
    clean = "".join(c for c in name if c >= " " and c not in '"\\\x7f')
    ascii_name = clean.encode("ascii", "replace").decode("ascii").replace("?", "_") or "file"
    if ascii_name == clean:
        return f'{kind}; filename="{clean}"'
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(clean, safe='')}"


# -- /internal/files ---------------------------------------------------------------------------------------


async def list_folder(request: Request) -> Response:
    """ComfyUI's ``/internal/files/{output|input|temp}``: the folder's file names, newest first (the editor's
    pickers read it). Only plain files directly in the folder; at most ``MAX_LISTED`` names."""
    state = request.app.state.server
    try:
        base = state.paths.folder(request.path_params["directory_type"])
    except UnsafePathError as exc:
        return error(400, str(exc))

    def names() -> list[str]:
        try:
            entries = [e for e in os.scandir(base) if e.is_file() and not e.name.startswith(".")]
        except OSError:
            return []
        entries.sort(key=lambda e: -e.stat().st_mtime)
        return [e.name for e in entries[:MAX_LISTED]]

    return JSONResponse(await run_in_threadpool(names))


# -- /view ---------------------------------------------------------------------------------------------------


async def view(request: Request) -> Response:
    state = request.app.state.server
    q = request.query_params
    filename = q.get("filename", "")
    if not filename:
        return error(400, "filename is required")
    try:
        base = state.paths.folder(q.get("type") or "output")
        path = confine(base, q.get("subfolder", ""), filename)
    except UnsafePathError as exc:
        return error(400, str(exc), "unsafe_path")
    if not path.is_file():
        return error(404, f"no such file: {filename}", "not_found")
    preview = q.get("preview")
    channel = (q.get("channel") or "").lower()
    if path.suffix.lower() in IMAGE_SUFFIXES and (preview or channel in ("rgb", "a")):
        try:
            data, media = await run_in_threadpool(_convert, path, preview, channel)
        except Exception as exc:  # not an image, truncated, too large: the file is fine, the preview is not
            return error(400, f"cannot convert {filename}: {str(exc).replace(str(path), path.name)}")
        return Response(data, media_type=media, headers={"X-Content-Type-Options": "nosniff",
                                                         "Content-Disposition": disposition("inline", path.name)})
    media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media not in INLINE_TYPES:
        # never a type a browser would render as a page (HTML, SVG, XML): plain text or bytes, downloaded
        media = "text/plain; charset=utf-8" if media in ("text/plain", "text/csv") else "application/octet-stream"
        shown_as = disposition("attachment", path.name)
    else:
        shown_as = disposition("inline", path.name)
    headers = {"X-Content-Type-Options": "nosniff", "Content-Disposition": shown_as,
               "Content-Security-Policy": "default-src 'none'; sandbox"}
    return FileResponse(path, media_type=media, headers=headers)


def _convert(path: Path, preview: str | None, channel: str) -> tuple[bytes, str]:
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
        if width * height > LIMITS.max_image_pixels:
            raise ValueError(f"{width}x{height} is over the limit of {LIMITS.max_image_pixels:,} pixels "
                             f"(max_image_pixels)")
        im.load()
        if channel == "a":
            im = im.getchannel("A") if "A" in im.getbands() else Image.new("L", im.size, 255)
        elif channel == "rgb" or preview:
            im = im.convert("RGB") if im.mode not in ("RGB", "L") else im
        fmt, quality = "png", 90
        if preview:
            name, _, q = preview.partition(";")
            fmt = name.strip().lower() or "webp"
            if q.strip().isdigit():
                quality = max(1, min(100, int(q)))
        if fmt not in ("webp", "jpeg", "jpg", "png"):
            fmt = "webp"
        fmt = "jpeg" if fmt == "jpg" else fmt
        buf = io.BytesIO()
        im.save(buf, format=fmt.upper(), quality=quality) if fmt != "png" else im.save(buf, format="PNG")
    return buf.getvalue(), f"image/{fmt}"


# -- /upload/image -------------------------------------------------------------------------------------------


async def upload_image(request: Request) -> Response:
    return await _upload(request, mask=False)


async def upload_mask(request: Request) -> Response:
    """ComfyUI's mask upload: the uploaded image's alpha becomes the alpha of the image ``original_ref``
    names (``{"filename", "subfolder", "type"}``), stored as a PNG under the upload's name (the mask editor)."""
    return await _upload(request, mask=True)


async def _upload(request: Request, mask: bool) -> Response:
    state = request.app.state.server
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        return error(400, "expected a multipart/form-data body with an 'image' file")
    try:
        form = await request.form(max_files=1, max_fields=16, max_part_size=1024 * 1024)
    except BodyTooLarge:
        raise
    except Exception as exc:
        return error(400, f"bad multipart body: {exc}")
    try:
        upload = form.get("image")
        if upload is None or isinstance(upload, str) or not upload.filename:
            return error(400, "the form has no 'image' file")
        kind = str(form.get("type") or "input")
        subfolder = str(form.get("subfolder") or "")
        overwrite = str(form.get("overwrite") or "").lower() in ("1", "true", "yes")
        try:
            base = state.paths.folder(kind)
            check_file_name(upload.filename, "the uploaded file's name")
            confine(base, upload.filename, allow_subdirs=False)
            path = confine(base, subfolder, upload.filename)
        except UnsafePathError as exc:
            return error(400, str(exc), "unsafe_path")
        if path == base.resolve():
            return error(400, f"{upload.filename!r} does not name a file in the {kind} folder", "unsafe_path")
        problem = folder_problem(base.resolve(), path.parent)
        if problem:
            return error(409, f"subfolder {subfolder!r}: {problem}", "conflict")
        if path.is_dir():
            return error(409, f"{upload.filename!r} is a folder in the {kind} folder", "conflict")
        source = upload.file
        if mask:
            try:
                ref = strict_json.loads(str(form.get("original_ref") or ""))
                if not isinstance(ref, dict) or not isinstance(ref.get("filename"), str):
                    raise ValueError("expected an object with a filename")
                original = confine(state.paths.folder(str(ref.get("type") or "input")),
                                   str(ref.get("subfolder") or ""), ref["filename"])
            except (ValueError, UnsafePathError) as exc:
                return error(400, f"original_ref: {exc}")
            if not original.is_file():
                return error(404, f"original_ref: no such file: {ref['filename']}", "not_found")
            try:
                source = await run_in_threadpool(_masked, original, upload.file)
            except Exception as exc:  # not an image, truncated, too large
                return error(400, f"cannot apply the mask to {original.name}: {type(exc).__name__}: "
                                  f"{str(exc).replace(str(original), original.name)}")
        try:
            path = await run_in_threadpool(_store_upload, source, path, overwrite)
        except OSError as exc:
            return error(409, f"cannot store {upload.filename!r}: {exc.strerror or type(exc).__name__}", "conflict")
        return JSONResponse({"name": path.name, "subfolder": subfolder, "type": kind})
    finally:
        await form.close()


def _masked(original: Path, mask_file) -> io.BytesIO:
    """The original image with the mask image's alpha (resized to fit), as PNG bytes."""
    from PIL import Image


    Image.MAX_IMAGE_PIXELS = LIMITS.max_image_pixels
    with Image.open(original) as img, Image.open(mask_file) as m:
        out = img.convert("RGBA")
        alpha = m.convert("RGBA").getchannel("A")
        if alpha.size != out.size:
            alpha = alpha.resize(out.size, Image.Resampling.LANCZOS)
        out.putalpha(alpha)
    buf = io.BytesIO()
    out.save(buf, format="PNG")
    buf.seek(0)
    return buf


def folder_problem(root: Path, folder: Path) -> str | None:
    """Why ``folder`` (inside ``root``) cannot hold a file: a part of it is a file. None when it can."""
    current = root
    for part in folder.relative_to(root).parts:
        current = current / part
        if current.exists() and not current.is_dir():
            return f"{current.relative_to(root).as_posix()} is a file, not a folder"
    return None


TEMP_PREFIXES = (".upload-", ".tmp-")


def remove_stale_temp_files(*roots: Path) -> int:
    """Delete the half-written uploads and settings files a killed server left behind; returns how many."""
    removed = 0
    for root in roots:
        if not root.is_dir():
            continue
        for path in root.rglob(".*"):
            if path.name.startswith(TEMP_PREFIXES) and path.is_file() and not path.is_symlink():
                try:
                    path.unlink()
                    removed += 1
                except OSError:
                    pass
    return removed


def _store_upload(src, path: Path, overwrite: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        stem, suffix, n = path.stem, path.suffix, 1
        while path.exists():
            path = path.with_name(f"{stem} ({n}){suffix}")
            n += 1
    src.seek(0)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(src, out, 1024 * 1024)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# -- settings ------------------------------------------------------------------------------------------------


# -- userdata ------------------------------------------------------------------------------------------------


