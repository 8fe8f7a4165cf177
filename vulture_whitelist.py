"""Names vulture cannot see used, each with who uses it: ``vulture scaling_bench benchmarks
vulture_whitelist.py`` then reports only what nothing uses. Never imported; vulture only parses it.

vulture matches by name: an entry hides every definition of its name, so a new dead function
that shares one goes unreported; keep to names with one meaning in the package.
"""

from types import SimpleNamespace

__all__ = [  # the groups, each a list of names used where vulture cannot look
    "CALLED_BY_A_FRAMEWORK",
    "CALLED_BY_PYTHON",
    "DEAD_LEFT_TO_THE_FILES_OWNER",
    "FIELDS_OF_A_SCHEMA",
    "NAMED_IN_A_STRING",
    "READ_BY_A_TEMPLATE",
    "USED_ONLY_BY_TESTS",
]
_ = SimpleNamespace()

CALLED_BY_PYTHON = [
    _.exc_type,  # __exit__(exc_type, exc, tb): meters/, store/lock.py
    _.exc_info,  # __exit__(*exc_info): engine/runner.py, frontends/cli.py
    _.signum,  # a signal handler's (signum, frame): frontends/cli.py
    _.frame,
    _.__module__,  # set on the generated Case (config/case.py): pickle and help() read them
    _.__doc__,
    _.tempdir,  # tempfile.tempdir, reset in a forked worker (engine/server.py)
    _.engine,  # torch.backends.quantized.engine, set to quantize (core/int8_weight.py)
    _.capture_scalar_outputs,  # torch._dynamo.config's, set to compile (workloads/compiled.py)
    _.__call__,  # the TokenRate protocol's and its overloads (frontier/throughput.py)
    _.__getattr__,  # a module's lazy attribute, PEP 562 (models/vit.py, models/resnet.py)
]

CALLED_BY_A_FRAMEWORK = [
    _.pytest_addoption,  # pytest hooks and fixtures: frontends/pytest_plugin.py
    _.pytest_generate_tests,
    _.pytest_collection_modifyitems,
    _.pytest_benchmark_update_machine_info,  # pytest-benchmark's hook; fills machine_info in place
    _.machine_info,
    _.sb_setup,
    _._split_lines,  # argparse.HelpFormatter's, overridden: frontends/run_flags.py
    _.bn1,  # read by torchvision's ResNet.forward and _make_layer (models/resnet.py)
    _.fc,
    _.inplanes,
]

NAMED_IN_A_STRING = [
    _.measure_rank,  # torchrun's entry, "module:function" (engine/distributed/launch.py)
    _.step_median_s,  # the code each fresh process of the drift runs (hardware/drift.py)
]

READ_BY_A_TEMPLATE = [  # report/templates/*.j2, through the view objects of report/
    _.counting,
    _.budget_header,
    _.plots,
    _.law_rows,
    _.budget_rows,
    _.optimal_rows,
    _.time_rows,
    _.run_rows,
    _.machine_summary,
    _.fit_rows,
    _.figure_table,
    _.unsettled_note,
    _.flag_rows,
    _.case_rows,
    _.machine_tables,
]

FIELDS_OF_A_SCHEMA = [  # TypedDict keys pydantic validates: store/schema.py, store/foreign.py
    _.schema_version,
    _.iqr,
    _.extra_info,  # pytest-benchmark JSON
    _.brand_raw,
    _.node,
    _.gpu_name,
    _.benchmarks,
    _.commit_info,
    _.stats_q_25,
    _.stats_q_75,
    _.stats_repeat,
    _.result_columns,  # asv results
    _.python,
    _.commit_hash,
    _.env_name,
]

USED_ONLY_BY_TESTS = [  # oracles the tests hold the package to; studies/ too where said
    _.all_specs,  # core/metrics.py: the registry's public read (tests/test_metric_specs.py)
    _.expected_checkpoint_bytes,  # predict/checkpoint.py (tests/test_checkpoint.py)
    _.saved_activation_bytes,  # predict/plan.py (tests/test_recipes.py)
    _.live_bytes_of,  # predict/memory.py (tests/test_memory_prediction.py)
    _.bytes_at,  # predict/memory.py (tests/test_memory_prediction.py, studies/memory_prediction.py)
    _.predicted_bytes,  # predict/batch.py BatchFit (tests/test_recipes.py)
    _.load_imbalance,  # models/moe.py (tests/test_model_moe.py)
]

DEAD_LEFT_TO_THE_FILES_OWNER = [  # delete the definition, then the line
    _.parse_case_id,  # config/case.py: nothing reads a case id back through it
    _.GROUPS,  # config/axes.py: frontends/run_flags.py's SECTIONS lists the groups
    _.PER_FAMILY,  # config/axes.py
]
