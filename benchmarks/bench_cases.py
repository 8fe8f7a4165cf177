"""asv suites: each case of the grid of ``scaling-bench run``, as asv tracks it over commits.

Cases come from the ``SCALING_BENCH_*`` variables (docs/frontends.md), the model from a per-process
cache, everything else from ``scaling_bench.frontends.suites``. asv takes lower as better: steps
are timed in
seconds per sample (not samples/s), and the tracks carry the record's metric names so that
``scaling-bench compare`` joins them with the other front-ends. Every figure here is lower-better
but MFU: leave ``track_train_mfu`` out of a regression gate. A figure this machine does not record
(a GPU peak on a CPU) is skipped, and so is a workload the grid leaves out.
"""

from scaling_bench.frontends import suites


class _Case:
    params = suites.asv_params()
    param_names = ("case",)
    timeout = 600.0  # one benchmark process: import, build and measure the largest full-grid case


class Forward(_Case):
    timer = suites.SampleClock()

    def setup(self, case_id: str) -> None:
        self.step = suites.asv_step(case_id, "forward", self.timer)

    def time_forward_sample(self, case_id: str) -> None:
        self.step()


class Train(_Case):
    timer = suites.SampleClock()

    def setup(self, case_id: str) -> None:
        self.step = suites.asv_step(case_id, "train", self.timer)

    def time_train_sample(self, case_id: str) -> None:
        self.step()


class Memory(_Case):
    unit = "bytes"

    def track_train_peak_gpu_allocated_bytes(self, case_id: str) -> float:
        return suites.asv_metric(case_id, "train", "train_peak_gpu_allocated_bytes")

    def track_train_peak_cpu_rss_above_baseline_bytes(self, case_id: str) -> float:
        return suites.asv_metric(case_id, "train", "train_peak_cpu_rss_above_baseline_bytes")


class Checkpoint(_Case):
    unit = "bytes"

    def track_checkpoint_bytes(self, case_id: str) -> float:
        return suites.asv_metric(case_id, "checkpoint", "checkpoint_bytes")

    def track_checkpoint_bytes_with_optimizer(self, case_id: str) -> float:
        return suites.asv_metric(case_id, "checkpoint", "checkpoint_bytes_with_optimizer")


class Utilization(_Case):
    unit = "fraction"

    def track_train_mfu(self, case_id: str) -> float:
        return suites.asv_metric(case_id, "train", "train_mfu")


class Convergence(_Case):
    unit = "loss"

    def track_final_loss_mean(self, case_id: str) -> float:
        return suites.asv_metric(case_id, "convergence", "final_loss_mean")
