"""The pytest equivalent of servetest's discovery+validation, for scripts/bench-discovery.

Parametrizes one test per YAML case at collection time, as TensorRT-LLM's disagg conftest does: walk
test_configs/{family}/{category}/*.yaml, yaml-load each file (PyYAML, `SafeLoader` like upstream's
`yaml.safe_load`, or `CSafeLoader` with BENCH_YAML_LOADER=c), build the test id and apply upstream's
four validator rules.
"""
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(os.environ["BENCH_CONFIG_DIR"])
LOADER = yaml.CSafeLoader if os.environ.get("BENCH_YAML_LOADER") == "c" else yaml.SafeLoader


def validate(cfg):
    gen, ctx, b = cfg["worker_config"]["gen"], cfg["worker_config"]["ctx"], cfg["benchmark"]
    seq = cfg.get("sequence") or {}
    spec = gen.get("speculative_config") or {}
    mtp = spec.get("num_nextn_predict_layers", 0)
    errors = []
    # Keys a case may leave out (engines other than TensorRT-LLM) are not checked, as servetest does.
    tokens, batch = gen.get("max_num_tokens"), gen.get("max_batch_size")
    if mtp > 0 and tokens is not None and batch is not None and tokens < batch * (mtp + 1):
        errors.append("gen_max_tokens")
    if not b["streaming"]:
        errors.append("streaming")
    # Older files keep the lengths in a top-level `sequence` section.
    isl = b.get("input_length", seq.get("input_length"))
    osl = b.get("output_length", seq.get("output_length"))
    if ctx.get("max_seq_len") is not None and ctx["max_seq_len"] <= isl:
        errors.append("max_seq_len")
    if gen.get("max_seq_len") is not None and gen["max_seq_len"] <= isl + osl:
        errors.append("max_seq_len")
    levels = [int(x) for x in str(b["concurrency_list"]).replace(",", " ").split()]
    cap = None if batch is None else batch * (gen.get("tensor_parallel_size", 1) if gen.get("enable_attention_dp") else 1)
    if not levels or (cap is not None and any(c > cap for c in levels)):
        errors.append("concurrency")
    return errors


def pytest_generate_tests(metafunc):
    if "case" not in metafunc.fixturenames:
        return
    ids, params = [], []
    for family in sorted(p for p in ROOT.iterdir() if p.is_dir()):
        for category in sorted(p for p in family.iterdir() if p.is_dir()):
            for f in sorted(category.glob("*.yaml")):
                with open(f) as fh:
                    cfg = yaml.load(fh, Loader=LOADER)
                params.append((f, validate(cfg)))
                ids.append(f"{family.name}_{category.name}_{f.stem}")
    metafunc.parametrize("case", params, ids=ids)


def test_case(case):
    assert not case[1]
