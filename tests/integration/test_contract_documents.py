"""The shipped contract documents pass real validators: each JSON Schema against the 2020-12
metaschema (check-jsonschema), and the AsyncAPI document against the AsyncAPI 3.0.0 schema
published in the npm package @asyncapi/specs (fetched with npm)."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from streamrec.contracts.json_schemas import ASYNCAPI, SCHEMAS
from streamrec.kernel.settings import TopicSettings
from tests.ops_helpers import check_jsonschema_argv, load_yaml

pytestmark = pytest.mark.integration

CONTRACTS = Path(__file__).resolve().parents[2] / "streamrec" / "contracts"
ASYNCAPI_SPECS = "@asyncapi/specs@6.11.1"


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300,
                          check=False)


def test_json_schemas_pass_the_2020_12_metaschema() -> None:
    files = [str(CONTRACTS / "schemas" / name) for name in SCHEMAS]
    done = _run([*check_jsonschema_argv(), "--check-metaschema", *files])
    assert done.returncode == 0, done.stdout + done.stderr


def test_asyncapi_document_passes_the_asyncapi_3_schema(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to fetch the AsyncAPI schema (Debian: apt-get install npm)")
    done = _run([npm, "pack", ASYNCAPI_SPECS, "--silent"], cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with tarfile.open(next(tmp_path.glob("*.tgz"))) as tar:
        tar.extractall(tmp_path, filter="data")
    spec = tmp_path / "package" / "schemas" / "3.0.0-without-$id.json"
    document = CONTRACTS / ASYNCAPI
    done = _run([*check_jsonschema_argv(), "--schemafile", str(spec), str(document)])
    assert done.returncode == 0, done.stdout + done.stderr
    # and the validator is not vacuous: an AsyncAPI 2 verb fails it
    broken = tmp_path / "broken.yaml"
    broken.write_text(document.read_text().replace("action: send", "action: publish"))
    assert _run([*check_jsonschema_argv(), "--schemafile", str(spec),
                 str(broken)]).returncode != 0


def test_asyncapi_names_every_topic_and_refers_to_shipped_schemas() -> None:
    document = load_yaml(CONTRACTS / ASYNCAPI)
    addresses = {c["address"] for c in document["channels"].values()}
    assert addresses == set(TopicSettings().model_dump().values())  # every topic, no other
    refs = {m["payload"]["schema"]["$ref"] for m in document["components"]["messages"].values()
            if "schema" in m["payload"]}
    assert refs == {f"schemas/{name}" for name in SCHEMAS}
    for channel in document["channels"].values():  # every topic has a writer and a reader
        ops = [o for o in document["operations"].values()
               if o["channel"]["$ref"].split("/")[-1] in document["channels"]
               and document["channels"][o["channel"]["$ref"].split("/")[-1]] is channel]
        assert {o["action"] for o in ops} == {"send", "receive"} or \
            channel["address"] == "events.dlq", channel["address"]
