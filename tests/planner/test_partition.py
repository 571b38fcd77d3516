"""Partition invariants on synthetic histograms: coverage, no overlap, exact row bound, whole ranges per file."""

from __future__ import annotations

import bisect

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sparsesync.planner.histogram import INT64_MAX, INT64_MIN, UINT64_MAX, Bucket, Histogram
from sparsesync.planner.partition import group_files, outlier_buckets, partition_ranges, sparse_regions


def hist_from_keys(keys: list[int], cuts: list[int], exact: bool = True) -> Histogram:
    """Buckets of consecutive keys (cut after the given positions), each with its real min/max."""
    keys = sorted(set(keys))
    bounds = sorted({c % len(keys) for c in cuts} | {len(keys)})
    buckets, start = [], 0
    for end in bounds:
        if end <= start:
            continue
        part = keys[start:end]
        buckets.append(Bucket(part[0], part[-1] + 1, len(part), part[0], part[-1], exact))
        start = end
    return Histogram("exact", buckets, keys[0], keys[-1], len(keys), exact=exact)


def check_cover(ranges, domain_min: int) -> None:
    assert ranges[0].lo == domain_min
    assert ranges[-1].hi is None and ranges[-1].label == "tail"
    for a, b in zip(ranges, ranges[1:]):
        assert a.hi == b.lo, "ranges must be contiguous, no gap and no overlap"
        assert a.lo < a.hi
    assert [r.index for r in ranges] == list(range(len(ranges)))


def rows_per_range(ranges, keys: list[int]) -> list[int]:
    starts = [r.lo for r in ranges]
    counts = [0] * len(ranges)
    for k in keys:
        i = bisect.bisect_right(starts, k) - 1
        assert ranges[i].contains(k)
        counts[i] += 1
    return counts


def _keysets(lo: int, hi: int):
    dense = st.integers(lo, hi - 5000).flatmap(lambda s: st.integers(1, 3000).map(lambda n: list(range(s, s + n))))
    sparse = st.lists(st.integers(lo, hi), min_size=1, max_size=400)
    bursty = st.lists(
        st.tuples(st.integers(lo, hi - 1000), st.integers(1, 400), st.integers(1, 7)), min_size=1, max_size=6
    ).map(lambda bs: [s + i * step for s, n, step in bs for i in range(n) if s + i * step <= hi])
    edges = st.lists(st.sampled_from([lo, lo + 1, hi - 1, hi, 0, -1, 1]).filter(lambda k: lo <= k <= hi), max_size=5)
    return st.tuples(st.one_of(dense, sparse, bursty), sparse.map(lambda x: x[:5]), edges).map(
        lambda t: sorted(set(t[0]) | set(t[1]) | set(t[2]))
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    keys=st.one_of(_keysets(INT64_MIN, INT64_MAX), _keysets(0, UINT64_MAX), _keysets(-10**6, 10**6)),
    cuts=st.lists(st.integers(0, 10**6), max_size=60),
    rpq=st.integers(1, 700),
)
def test_partition_covers_every_key_once_within_the_bound(keys, cuts, rpq):
    hist = hist_from_keys(keys, cuts)
    domain_min = 0 if keys[0] >= 0 and max(keys) > INT64_MAX else INT64_MIN
    ranges = partition_ranges(hist, rpq, domain_min=domain_min)
    check_cover(ranges, domain_min)
    actual = rows_per_range(ranges, keys)
    assert sum(actual) == len(keys)
    for r, n in zip(ranges, actual):
        assert r.est_rows == n, "exact buckets give exact range counts, also when a dense bucket is cut"
        if r.hi is not None and n > rpq:
            # only an indivisible (not fully dense) bucket larger than a range may exceed the bound
            inside = [b for b in hist.buckets if r.lo <= b.min_key < r.hi]
            assert len(inside) == 1 and not inside[0].full and inside[0].count == n
    for r in ranges[1:]:
        assert r.lo in set(keys) or r.hi is None, "boundaries sit on real keys"
    files = group_files(ranges, 10.0, 10 * max(rpq, 1) * 3)
    assert files[0].first_range == 0 and files[-1].last_range == len(ranges) - 1
    for f, g in zip(files, files[1:]):
        assert g.first_range == f.last_range + 1, "a range never splits across files"


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 20_000), start=st.integers(-10**12, 10**12), rpq=st.integers(1, 5000))
def test_fully_dense_bucket_is_cut_into_full_ranges(n, start, rpq):
    hist = Histogram("exact", [Bucket(start, start + n, n, start, start + n - 1)], start, start + n - 1, n)
    ranges = partition_ranges(hist, rpq, domain_min=INT64_MIN)
    check_cover(ranges, INT64_MIN)
    body = ranges[:-1]
    assert len(body) == -(-n // rpq), "fully dense keys need exactly ceil(N / rows_per_query) ranges"
    assert all(r.est_rows == rpq for r in body[:-1]) and all(r.exact for r in body)


def test_roadmap_case_one_range_and_one_file():
    keys = list(range(1, 40_001)) + [40_000 + 500 * i for i in range(1, 10_001)]
    hist = hist_from_keys(keys, list(range(0, 50_000, 977)))
    ranges = partition_ranges(hist, 100_000, domain_min=INT64_MIN)
    assert len(ranges) == 2 and ranges[0].est_rows == 50_000
    assert len(group_files(ranges, 50.0, 256 * 2**20)) == 1


def test_files_hold_whole_ranges_of_about_file_size():
    hist = hist_from_keys(list(range(100_000)), list(range(0, 100_000, 100)))
    ranges = partition_ranges(hist, 1000, domain_min=INT64_MIN)
    files = group_files(ranges, 100.0, 1_000_000)  # 10,000 rows per file
    assert len(files) == 10
    assert all(f.est_bytes <= 1_000_000 for f in files)
    assert files[-1].last_range == len(ranges) - 1, "the tail joins the last file"


def test_outliers_far_beyond_the_bulk():
    keys = list(range(1, 20_001)) + [4 * 10**18, 4 * 10**18 + 7, 4 * 10**18 + 100]
    hist = hist_from_keys(keys, list(range(0, 20_003, 50)) + [20_000, 20_001, 20_002])
    idx = outlier_buckets(hist.buckets)
    assert sorted({k for i in idx for k in (hist.buckets[i].min_key, hist.buckets[i].max_key)}) == keys[-3:]
    # keys below the bulk too, and nothing for a merely sparse tail
    low = hist_from_keys([-(2**63), -(2**63) + 5] + list(range(0, 5000)), list(range(0, 5002)))
    assert [low.buckets[i].min_key for i in outlier_buckets(low.buckets)] == [-(2**63), -(2**63) + 5]
    sparse_tail = hist_from_keys(list(range(40_000)) + [40_000 + 500 * i for i in range(10_000)], list(range(0, 50_000, 10)))
    assert outlier_buckets(sparse_tail.buckets) == []


def test_sparse_regions_follow_the_data():
    # dense [0, 40000), stride 500 to 5,040,000, dense again [6,000,000, 6,010,000)
    keys = list(range(40_000)) + [40_000 + 500 * i for i in range(10_000)] + list(range(6_000_000, 6_010_000))
    hist = hist_from_keys(keys, list(range(0, len(keys), 64)))
    regions = sparse_regions(hist, 0.10)
    assert len(regions) == 1
    r = regions[0]
    assert 40_000 <= r.lo <= 40_600 and 5_999_000 <= r.hi <= 6_000_064  # within one bucket of the truth
    # stride 5 is 0.2 rows per key: dense; stride 20 is 0.05: sparse
    five = hist_from_keys(list(range(0, 100_000, 5)), list(range(0, 20_000, 3)))
    assert sparse_regions(five, 0.10) == ()
    twenty = hist_from_keys(list(range(0, 100_000, 20)), list(range(0, 5_000, 3)))
    (only,) = sparse_regions(twenty, 0.10)
    assert only.lo == 0 and only.hi == 99_981 and only.rows == 5_000
