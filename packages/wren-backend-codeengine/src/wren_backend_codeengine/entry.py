"""The command of wren's Code Engine job instances: ``python -m wren_backend_codeengine.entry``.

Code Engine starts one container per array index of a job run, with ``JOB_INDEX`` (and
``JOB_ARRAY_SIZE``, ``CE_JOB``, ``CE_JOBRUN``) in its environment. This entry point

1. reads the run secrets from ``WREN_CE_SECRETS`` (a Code Engine secret reference: the signing
   keys, the storage settings, the workers' config);
2. reads the payload object named by ``WREN_CE_BUCKET``/``WREN_CE_PAYLOAD`` and checks its
   signature (see :mod:`wren_backend_codeengine.payload`);
3. runs its share of the calls, ``calls[JOB_INDEX * per_instance: ...]``, through wren-core's
   one worker runtime (the supervised warm pool every container backend uses), which writes
   each call's status and result to storage;
4. exits 0, or non-zero when it could not get its calls (Code Engine then marks the index
   failed, and the client fails those calls with Code Engine's reason).

``--metadata`` instead writes the runtime's metadata (Python, wren, modules) to storage, signed
with a one-time key from the run secrets: ``wren runtime deploy`` reads it.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from typing import Any

from wren_backend_codeengine import payload as pl

logger = logging.getLogger("wren.code_engine.entry")


def _secrets() -> dict[str, Any]:
    raw = os.environ.get(pl.ENV_SECRETS)
    if not raw:
        raise pl.PayloadError(f"{pl.ENV_SECRETS} is not set: this job run was not made by wren's code_engine backend")
    return json.loads(raw)


def _storage(spec: dict[str, Any]) -> Any:
    import wren

    return wren.Storage(config={"wren": {"storage": spec["name"]}, spec["name"]: spec["config"]}, backend=spec["name"])


def run_index(index: int) -> int:
    """Run the calls of array index ``index``; returns how many ran."""
    from wren.worker.supervisor import run_calls  # wren-core's runtime: the one every backend uses

    secrets = _secrets()
    bucket, key = os.environ[pl.ENV_BUCKET], os.environ[pl.ENV_PAYLOAD]
    storage = _storage(secrets["storage"])
    data = pl.unpack(storage.get_object(bucket, key), secrets["secret"], key)
    calls = pl.calls_of(data, index)
    if not calls:
        return 0
    job = dict(data["job"], **{k: v for k, v in secrets.items() if k in pl.SECRET_FIELDS})
    run_calls(job, calls)
    return len(calls)


def write_metadata() -> None:
    """Write the runtime's metadata (or why it could not be read) to storage, signed."""
    from wren import runtimes

    secrets = _secrets()
    key = secrets["metadata_key"]
    storage = _storage(secrets["storage"])
    cmd = runtimes.metadata_command()
    if cmd and cmd[0].startswith("python"):
        cmd[0] = sys.executable  # this runtime's interpreter
    try:
        out = subprocess.run(cmd, capture_output=True, check=True)
        meta = runtimes.parse_metadata_output(out.stdout)
    except Exception as exc:  # noqa: BLE001 - the client shows it
        err = getattr(exc, "stderr", b"") or b""
        meta = {"error": f"{type(exc).__name__}: {exc} {err.decode(errors='replace')[-1000:]}".strip()}
    storage.put_object(secrets["bucket"], key, pl.sign_metadata(bytes.fromhex(secrets["metadata_secret"]), key, meta))
    if "error" in meta:
        raise RuntimeError(meta["error"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wren_backend_codeengine.entry",
                                 description="run the wren calls of one Code Engine array index")
    ap.add_argument("--metadata", action="store_true", help="write the runtime's metadata to storage instead")
    ap.add_argument("--log-level", default=os.environ.get("WREN_LOG_LEVEL", "WARNING"))
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    try:
        if args.metadata:
            write_metadata()
            return 0
        index = int(os.environ.get("JOB_INDEX", "0"))
        n = run_index(index)
        logger.info("array index %d of job run %s: %d call(s) ran", index, os.environ.get("CE_JOBRUN"), n)
        return 0
    except Exception as exc:  # noqa: BLE001 - the exit code and the message are what Code Engine keeps
        print(f"wren: array index {os.environ.get('JOB_INDEX')}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.stdout.flush()
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the warm pool's processes must not keep the instance alive
