"""The service's public paths: router prefixes, Location headers and a failed job's instance."""

from __future__ import annotations

API_PREFIX = "/v1"
JOBS_PREFIX = "/jobs"


def job_url(job_id: str) -> str:
    """The job's URL, as the Location header and its problem's ``instance`` give it."""
    return f"{API_PREFIX}{JOBS_PREFIX}/{job_id}"
