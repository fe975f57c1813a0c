"""Drives the API through a client generated from its served OpenAPI document.

Usage: generated_client.py <api base URL> <mlops key> <dataset id> <work folder>

Generates the client with openapi-python-client into the work folder, imports it, and
through it alone: submits a training job, waits for it, pages the team's jobs one at a
time following the cursor, and downloads the trained version's ONNX bundle, checking
its sha256 against the ETag and its files. Prints one JSON line of what it saw.
"""

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

base, key, dataset_id, work = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
tools = Path(sys.executable).parent
config = Path(__file__).with_name("openapi-python-client.yaml")
generated = subprocess.run(
    [str(tools / "openapi-python-client"), "generate", "--url", f"{base}/openapi.json", "--output-path", str(work / "client"), "--overwrite",
     "--config", str(config)],
    capture_output=True,
    text=True,
    # The generator formats its output with ruff, installed beside it.
    env={**os.environ, "PATH": f"{tools}:{os.environ.get('PATH', '')}"},
)
assert generated.returncode == 0, generated.stdout + generated.stderr
# Every operation generated: the generator skips (with a warning) what it cannot parse.
assert "Endpoint will not be generated" not in generated.stdout + generated.stderr, generated.stdout + generated.stderr
sys.path.insert(0, str(work / "client"))

from absa_service_api_client import AuthenticatedClient  # noqa: E402
from absa_service_api_client.api.jobs import get_job, list_jobs, submit_train  # noqa: E402
from absa_service_api_client.api.models import download_artifact  # noqa: E402
from absa_service_api_client.models import Job, JobPage, TrainRequest  # noqa: E402
from absa_service_api_client.types import File  # noqa: E402

client = AuthenticatedClient(base_url=base, token=key, raise_on_unexpected_status=True)

request = TrainRequest.from_dict(
    {"dataset_id": dataset_id, "base_model": "all-minilm-l6-v2", "hyperparameters": {"epochs": 1, "warmup_steps": 0, "seed": 7}}
)
job = submit_train.sync(client=client, body=request)
assert isinstance(job, Job) and job.state == "queued", job

deadline = time.time() + 600
while job.state not in ("succeeded", "failed", "cancelled"):
    assert time.time() < deadline, f"job {job.id} still {job.state}"
    time.sleep(1)
    job = get_job.sync(client=client, id=job.id)
    assert isinstance(job, Job), job
assert job.state == "succeeded", job.last_error

pages, seen, after = 0, [], None
while True:
    page = list_jobs.sync(client=client, limit=1, **({"after": after} if after else {}))
    assert isinstance(page, JobPage), page
    pages += 1
    seen += [str(j.id) for j in page.jobs]
    if not page.has_more:
        break
    after = page.next_after

answer = download_artifact.sync_detailed(client=client, id=job.model_version_id, artifact="onnx")
assert isinstance(answer.parsed, File), answer.parsed
body = answer.parsed.payload.read()
etag = answer.headers["etag"].strip('"')
files = sorted(m.name.removeprefix("./") for m in tarfile.open(fileobj=io.BytesIO(body)).getmembers() if m.isfile())

print(json.dumps({
    "job_id": str(job.id),
    "model_version_id": str(job.model_version_id),
    "pages": pages,
    "jobs_seen": seen,
    "bytes": len(body),
    "sha256": hashlib.sha256(body).hexdigest(),
    "etag": etag,
    "files": files,
}))
