"""One rank of a distributed case; torchrun's launcher starts it from ``distributed.run_case``.

Protocol: ``python -m scaling_bench.engine.distributed.worker JOB``. ``JOB`` is a JSON file
``{"execute": "module:function", "case": {...}, "agent_pid": N, "folder": DIR}``. The rank joins
the process group torchrun's environment describes, calls the function on the case (with the
group initialised, so it can run collectives) and, where it returns record fields, local rank 0
writes them to ``DIR/result.json``: every rank returns the same gathered fields, and every node
gets a result. A rank whose function raised writes ``DIR/rank{R}.json`` (``status`` ``oom`` or
``crashed``, ``error``, ``time``) and exits 1 at once, without leaving the group: its peers may be
blocked in a collective, and the launcher stops them when it sees a rank fail.

torchrun starts each rank in a session of its own, out of reach of the runner's process-group
kill, so a rank asks the kernel for SIGKILL when the agent (its parent) dies: a timeout that
kills the agent ends every rank of the node.
"""

from __future__ import annotations

import faulthandler
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from scaling_bench.engine.worker import _die_with_runner, clip, run_case

RESULT_FILE = "result.json"


def rank_device(case_device: str) -> str:
    """``cuda:LOCAL_RANK`` for a CUDA case (a GPU per rank, the case's index ignored), else cpu."""
    if case_device.startswith("cuda"):
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return "cpu"


def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def _init_process_group(case_device: str) -> None:
    """NCCL on GPUs, gloo on the CPU; a GPU is bound first, so that NCCL starts on the right one."""
    import torch
    import torch.distributed as dist

    device = torch.device(rank_device(case_device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    bound = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend_for(case_device), **bound)


def _rank_fields(job: dict[str, Any]) -> dict[str, Any]:
    """The function's record fields, or ``oom`` / ``crashed`` when it (or joining) raised."""
    try:
        _init_process_group(job["case"]["device"])
    except Exception as exc:
        return {"status": "crashed", "error": clip("".join(traceback.format_exception(exc)))}
    return run_case(job["execute"], job["case"])


def main(argv: list[str]) -> None:
    (job_path,) = argv
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    _die_with_runner(job["agent_pid"])
    faulthandler.enable()  # a segfault or an abort leaves a traceback in the crash record
    folder = Path(job["folder"])
    rank = int(os.environ["RANK"])
    fields = _rank_fields(job)
    try:
        text = json.dumps(fields)
    except (TypeError, ValueError) as exc:
        fields = {"status": "crashed", "error": f"{job['execute']} returned non-JSON fields: {exc}"}
    if fields["status"] in ("oom", "crashed"):
        report = {"status": fields["status"], "error": fields["error"], "time": time.time()}
        Path(folder, f"rank{rank}.json").write_text(json.dumps(report), encoding="utf-8")
        print(f"rank {rank}: {fields['error']}", file=sys.stderr, flush=True)
        os._exit(1)
    if int(os.environ["LOCAL_RANK"]) == 0:
        tmp_path = Path(folder, RESULT_FILE + ".tmp")
        tmp_path.write_text(text, encoding="utf-8")
        os.replace(tmp_path, folder / RESULT_FILE)
    import torch.distributed as dist

    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
