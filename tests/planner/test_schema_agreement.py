"""The fast item check (``_check_items``) agrees with plans/schema.json on every item it replaces.

Large plans are validated by jsonschema on the first and last items of their long arrays only; the items
in between go through ``_check_items``. This drives arbitrary items into the MIDDLE of each long array
and requires the fast path to accept exactly what the full schema accepts, so the two cannot drift.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.errors import PlanError
from sparsesync.planner.plan import first_violation, plan_schema, validate_against_schema

EXAMPLE = json.loads((Path(__file__).resolve().parents[2] / "plans" / "example-prealert.json").read_text())
EXAMPLE["histogram"]["bins"] = EXAMPLE["histogram"]["bins"][:6]  # the full validation per example stays cheap

# Values near the schema's edges: counts (and floats that JSON Schema counts as integers), key strings
# (21 digits is one too many; a trailing newline is a classic `$` trap), booleans, nulls, wrong types.
scalars = st.one_of(
    st.integers(min_value=-3, max_value=10**20),
    st.sampled_from([0.0, 1.0, 2.5, -1.0, True, False, None, "", "0", "-5", "12\n", "1" * 20, "1" * 21, "-" + "9" * 20,
                     "x1", " 1", "dense", "sparse", "gap", "tail", "heavy", "nulls", "bogus",
                     "part-00001.parquet", "part-123.parquet", "part-1234567.parquet", [0, 1], [1], [0, 1, 2], {}]),
)
RANGE_KEYS = ("index", "lo", "hi", "est_rows", "label", "exact", "heavy_key", "nulls")
FILE_KEYS = ("index", "name", "ranges", "est_rows", "est_bytes")


def items(keys, *, valid: dict) -> st.SearchStrategy:
    """A dict over ``keys`` mixing the valid item's values, dropped keys and edge values."""
    def build(choices):
        out = {}
        for key, (mode, value) in zip(keys, choices):
            if mode == "valid" and key in valid:
                out[key] = valid[key]
            elif mode == "value":
                out[key] = value
        return out

    return st.lists(st.tuples(st.sampled_from(["valid", "valid", "value", "drop"]), scalars),
                    min_size=len(keys), max_size=len(keys)).map(build)


def region_items() -> st.SearchStrategy:
    return st.one_of(st.lists(scalars, min_size=0, max_size=4), scalars)


def _full_schema_ok(data: dict) -> bool:
    return first_violation(data, plan_schema()) is None


def _fast_ok(data: dict) -> bool:
    try:
        validate_against_schema(data)
    except PlanError:
        return False
    return True


def _with_middle(path: tuple[str, ...], item) -> dict:
    data = copy.deepcopy(EXAMPLE)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    arr = parent[path[-1]]
    while len(arr) < 5:  # the trimmed check keeps two items each end; the middle one is the fast path's
        arr.append(copy.deepcopy(arr[-1]))
    arr[2] = item
    return data


def test_the_example_is_valid_both_ways():
    assert _full_schema_ok(EXAMPLE) and _fast_ok(EXAMPLE)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=items(RANGE_KEYS, valid=EXAMPLE["ranges"][1])
       | items(RANGE_KEYS, valid={"index": 5, "lo": None, "hi": None, "est_rows": 3, "label": "nulls", "nulls": True})
       | scalars)
def test_range_items_agree(item):
    data = _with_middle(("ranges",), item)
    assert _fast_ok(data) == _full_schema_ok(data), item


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=items(FILE_KEYS, valid=EXAMPLE["files"][1]) | scalars)
def test_file_items_agree(item):
    data = _with_middle(("files",), item)
    assert _fast_ok(data) == _full_schema_ok(data), item


@pytest.mark.parametrize("name", ["gaps", "sparse_regions", "bins"])
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(item=region_items())
def test_histogram_regions_agree(name, item):
    data = _with_middle(("histogram", name), item)
    assert _fast_ok(data) == _full_schema_ok(data), item


@pytest.mark.parametrize("label", [["dense"], {"a": 1}, 3])
def test_an_unhashable_or_odd_label_is_a_plan_error_not_a_crash(label):
    data = _with_middle(("ranges",), {**EXAMPLE["ranges"][1], "label": label})
    assert not _fast_ok(data) and not _full_schema_ok(data)
