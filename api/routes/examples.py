"""The example models this server offers, and importing one as the caller's own model."""

from __future__ import annotations

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api import files, model_store
from api.auth import OwnerDep
from api.deps import SessionDep, SettingsDep
from api.problems import KEYED_ROUTE_PROBLEMS, ProblemError, problem_responses
from api.schemas import ListPublic, ModelPublic
from api.settings import Settings
from core.examples import EXAMPLES, Example, example_path, find_example

router = APIRouter(prefix="/examples", tags=["examples"])

IMPORT_PROBLEMS = problem_responses(KEYED_ROUTE_PROBLEMS, {
    404: "no example with this name (example-not-found)",
    409: "the server has not built this example (example-not-built), or the key's model "
         "or storage quota is reached (quota-models, quota-storage)",
})


class ExamplePublic(BaseModel):
    name: str
    title: str
    description: str
    format: str
    arch: str | None
    available: bool = Field(description="whether this server has built the file "
                                        "(`snnconv examples`)")


def _public(example: Example, settings: Settings) -> ExamplePublic:
    return ExamplePublic(name=example.name, title=example.title,
                         description=example.description, format=example.format,
                         arch=example.arch,
                         available=example_path(settings.examples_path, example).is_file())


@router.get("", response_model=ListPublic[ExamplePublic])
def list_examples(settings: SettingsDep) -> dict:
    """The example models, and whether each is ready to import."""
    entries = [_public(example, settings) for example in EXAMPLES]
    return {"data": entries, "count": len(entries)}


@router.post("/{name}/import", status_code=status.HTTP_201_CREATED, response_model=ModelPublic,
             responses=IMPORT_PROBLEMS)
async def import_example(name: str, session: SessionDep, settings: SettingsDep,
                         owner: OwnerDep):
    """A copy of the example as the caller's model: pre-flighted and counted against the
    quotas like an upload of the same file."""
    example = find_example(name)
    if example is None:
        known = ", ".join(e.name for e in EXAMPLES)
        raise ProblemError(404, "example-not-found", "Example not found",
                           f"no example is called {name!r}; the examples are {known}")
    source = example_path(settings.examples_path, example)
    if not source.is_file():
        raise ProblemError(409, "example-not-built", "Example not built",
                           f"this server has not built {example.name}; its operator runs "
                           "`snnconv examples` once")
    with files.private_folder(settings.uploads_dir) as folder, source.open("rb") as handle:
        staged = files.copy_named(handle, folder / example.filename, settings.max_upload_bytes)
        return await model_store.store_model(session, settings, owner, staged,
                                             arch=example.arch, name=example.title,
                                             filename=example.filename)
