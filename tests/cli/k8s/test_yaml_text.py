"""The manifest YAML writer: what it writes, PyYAML reads back as the same data."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from qrs_cli.k8s.yaml_text import scalar, to_yaml

TRICKY = [
    "yes", "No", "on", "OFF", "y", "null", "~", "true", "1", "-1", "1.5", ".5", "-.5", "1e3",
    "0x1F", "0o17", "12:30", "2026-12-01", ".inf", "-.inf", ".nan", "", " lead", "trail ",
    "a: b", "a:", "#x", "x #y", "@x", "*x", "&x", "!x", "%x", "`x", "|x", ">x", "'x", '"x',
    "[x]", "{x}", "a,b", "-", "--", "- x", "?", "? x", "tab\there", "line\nbreak", "ünï",
    "--host", "-tp", "--max_model_len=8", "nvidia.com/gpu", "qr-sampler-vllm:latest",
    "http://x:8000/health", "$(LWS_GROUP_SIZE)", "a=b", "a+b", "_x", "/x/y",
]  # fmt: skip


@pytest.mark.parametrize("value", TRICKY)
def test_strings_round_trip(value: str) -> None:
    assert yaml.safe_load(to_yaml({"k": value, value or "empty": [value]})) == {
        "k": value, value or "empty": [value]}  # fmt: skip


def test_nested_shapes_round_trip() -> None:
    data: dict[str, Any] = {
        "a": {"b": [1, True, False, {"c": []}, {}, [], [[1, "2"], {"d": {"e": "f"}}]]},
        "empty_map": {},
        "empty_list": [],
        "items": [{"name": "x", "ports": [{"containerPort": 8000}]}, {"name": "y"}],
    }
    assert yaml.safe_load(to_yaml(data)) == data


def test_plain_where_unambiguous_quoted_otherwise() -> None:
    assert scalar("--tensor-parallel-size") == "--tensor-parallel-size"
    assert scalar("nvidia.com/gpu") == "nvidia.com/gpu"
    assert scalar("2") == '"2"' and scalar("yes") == '"yes"' and scalar(2) == "2"
    with pytest.raises(TypeError):
        scalar(1.5)
