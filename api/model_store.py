"""A staged model file becomes a stored model: quota, pre-flight, its own folder, its row.

Uploads and example imports both end here, so an example is stored, checked and counted
against the quotas exactly as the same file uploaded would be.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.orm import Session

from api import files
from api.auth import require_model_room
from api.db import ModelRecord, new_id
from api.keys import Owner
from api.settings import Settings


async def store_model(session: Session, settings: Settings, owner: Owner,
                      staged: files.StagedUpload, *, arch: str | None, name: str | None,
                      filename: str | None) -> ModelRecord:
    """Pre-flight ``staged`` in the sandbox and keep it for ``owner``; a refused file raises
    (its problem) and leaves nothing behind."""
    from core import sandbox  # pre-flight runs in a child process; torch stays out of the API

    # database calls go to a thread: on the event loop a busy database would stall every
    # other request while this one waits
    await asyncio.to_thread(require_model_room, session, owner, settings, staged.size_bytes)
    limits = sandbox.Limits(settings.preflight_cpu_seconds, settings.preflight_memory_mb,
                            settings.preflight_timeout_s)
    report = await asyncio.to_thread(sandbox.inspect_untrusted, staged.path, arch, limits)
    model_id = new_id()
    final: Path = files.accept_upload(staged, files.model_dir(settings.uploads_dir, model_id))
    record = ModelRecord(
        id=model_id, owner_id=owner.id, name=files.model_name(name, filename, model_id),
        filename=final.name, format=report.format, arch=arch,
        input_shape=list(report.input_shape), preflight=report.model_dump(mode="json"),
        size_bytes=staged.size_bytes, sha256=staged.sha256)
    try:
        session.add(record)
        await asyncio.to_thread(session.commit)
    except BaseException:
        files.remove_tree(final.parent)
        raise
    return record
