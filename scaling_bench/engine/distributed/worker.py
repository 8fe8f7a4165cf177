"""One rank of a distributed case; torchrun's launcher starts it from ``distributed.run_case``.

Protocol: ``python -m scaling_bench.engine.distributed.worker JOB``. ``JOB`` is a job file
(``protocol.Job``) naming the rank function, the case, the agent's pid and a folder ``DIR``. The
rank joins the process group torchrun's environment describes, calls the function on the case (with
the group initialised, so it can run collectives) and, where it returns record fields, local rank 0
writes them to ``DIR/result.json``: every rank returns the same gathered fields, and every node
gets a result. A rank whose function raised writes ``DIR/rank{R}.json`` (``status`` ``oom`` or
``crashed``, ``error``, ``time``) and exits 1 at once, without leaving the group: its peers may be
blocked in a collective, and the launcher stops them when it sees a rank fail.

torchrun starts each rank in a session of its own, out of reach of the runner's process-group kill,
so a rank asks the kernel for SIGKILL when the agent (its parent) dies: a timeout that kills the
agent ends every rank of the node.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from scaling_bench.engine.distributed.launch import RESULT_FILE, backend_for
from scaling_bench.engine.protocol import Job, read_job, write_json
from scaling_bench.engine.worker import clip, run_case, start


def _init_process_group(case_device: str) -> None:
    """NCCL on GPUs, gloo on the CPU; a GPU is bound first, so that NCCL starts on the right one."""
    import torch
    import torch.distributed as dist

    from scaling_bench.engine.distributed.rank import rank_device

    device = torch.device(rank_device(case_device))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    bound = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend_for(case_device), **bound)


def _rank_fields(job: Job) -> dict[str, Any]:
    """The function's record fields, or ``oom`` / ``crashed`` when it (or joining) raised."""
    try:
        if job.settings.threads:
            import torch

            torch.set_num_threads(job.settings.threads)
        _init_process_group(job.case["device"])
    except Exception as exc:
        return {"status": "crashed", "error": clip("".join(traceback.format_exception(exc)))}
    return run_case(job.execute, job.case, job.settings, job.known_path)


def main(argv: list[str]) -> None:
    (job_path,) = argv
    job = read_job(Path(job_path))
    start(job)
    folder = Path(job.folder)
    rank = int(os.environ["RANK"])
    fields = _rank_fields(job)
    if fields["status"] in ("oom", "crashed"):
        report = {"status": fields["status"], "error": fields["error"], "time": time.time()}
        write_json(folder / f"rank{rank}.json", report)
        print(f"rank {rank}: {fields['error']}", file=sys.stderr, flush=True)
        os._exit(1)
    if int(os.environ["LOCAL_RANK"]) == 0:
        try:
            write_json(folder / RESULT_FILE, fields)
        except (TypeError, ValueError) as exc:
            crash = {"status": "crashed", "error": f"{job.execute} returned non-JSON fields: {exc}"}
            write_json(folder / RESULT_FILE, crash)
    import torch.distributed as dist

    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
