"""The seed's own tests and doc examples (zeph-llm 0.20.2 gonka::endpoints), ported.

Where the port deliberately differs (out-of-range mark_failed raises IndexError
instead of being a no-op), the test says so.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from conftest import nodes, url_to_idx
from gonka_pool import GonkaEndpoint

HOUR = timedelta(hours=1)


def test_round_robin_rotates_through_three_nodes_and_repeats(make_pool):
    pool = make_pool(3)
    calls = [url_to_idx(pool.next().base_url, 3) for _ in range(6)]
    assert sorted(calls[:3]) == [0, 1, 2]
    assert sorted(calls[3:]) == [0, 1, 2]
    assert calls[:3] == calls[3:]


def test_failed_node_is_skipped_during_its_cooldown(make_pool):
    pool = make_pool(3)
    pool.mark_failed(0, HOUR)
    for _ in range(9):
        assert url_to_idx(pool.next().base_url, 3) != 0


def test_zero_cooldown_restores_a_node_at_once(make_pool):
    pool = make_pool(2)
    pool.mark_failed(0, HOUR)
    pool.mark_failed(0, timedelta(0))
    seen = [url_to_idx(pool.next().base_url, 2) for _ in range(6)]
    assert 0 in seen


def test_all_nodes_failed_still_returns_a_valid_node(make_pool):
    pool = make_pool(3)
    for i in range(3):
        pool.mark_failed(i, HOUR)
    for _ in range(6):
        assert url_to_idx(pool.next().base_url, 3) < 3


def test_invalid_scheme_is_rejected(pool_impl):
    with pytest.raises(ValueError, match="http or https scheme"):
        pool_impl.EndpointPool([GonkaEndpoint("ftp://node.example", "addr")])


def test_unparseable_url_is_rejected(pool_impl):
    with pytest.raises(ValueError, match="invalid endpoint URL"):
        pool_impl.EndpointPool([GonkaEndpoint("not a url", "addr")])


def test_empty_node_list_is_rejected(pool_impl):
    with pytest.raises(ValueError, match=r"^EndpointPool requires at least one node$"):
        pool_impl.EndpointPool([])


def test_len_and_is_empty_reflect_the_pool_size(make_pool):
    pool = make_pool(4)
    assert len(pool) == 4
    assert pool.is_empty() is False
    assert bool(pool) is True


def test_out_of_range_mark_failed_raises_instead_of_the_seeds_silent_no_op(make_pool):
    pool = make_pool(2)
    with pytest.raises(IndexError):
        pool.mark_failed(99, 10)
    assert pool._state()[2] == [0, 0]


def test_clearing_a_failure_makes_the_node_selectable_again(make_pool):
    pool = make_pool(2)
    pool.mark_failed(0, HOUR)
    pool.mark_failed(0, 0)
    assert 0 in [url_to_idx(pool.next().base_url, 2) for _ in range(6)]


# -- doc examples ------------------------------------------------------------


def test_doc_example_module_selects_a_node(pool_impl):
    pool = pool_impl.EndpointPool(
        [
            GonkaEndpoint(base_url="https://node1.gonka.ai", address="addr1"),
            GonkaEndpoint(base_url="https://node2.gonka.ai", address="addr2"),
        ]
    )
    assert pool.next().base_url in {"https://node1.gonka.ai", "https://node2.gonka.ai"}


def test_doc_example_new_rejects_empty_and_accepts_one(pool_impl):
    with pytest.raises(ValueError):
        pool_impl.EndpointPool([])
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://n1.example", "a1")])
    assert len(pool) == 1


def test_doc_example_first_two_calls_return_different_nodes(pool_impl):
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://n1", "a1"), GonkaEndpoint("https://n2", "a2")])
    assert pool.next().base_url != pool.next().base_url


def test_doc_example_mark_failed_skips_the_node(pool_impl):
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://n1", "a1"), GonkaEndpoint("https://n2", "a2")])
    pool.mark_failed(0, timedelta(seconds=60))
    assert pool.next().base_url == "https://n2"


def test_doc_example_next_indexed_returns_a_usable_index(pool_impl):
    pool = pool_impl.EndpointPool([GonkaEndpoint("https://n1", "a1"), GonkaEndpoint("https://n2", "a2")])
    idx, ep = pool.next_indexed()
    assert 0 <= idx < len(pool)
    assert ep.base_url
    assert pool[idx] == ep


def test_all_failed_fallback_returns_the_earliest_deadline(make_pool):
    pool = make_pool(3)
    pool._set_clock(10**12)
    pool.mark_failed(0, 30)
    pool.mark_failed(1, 10)
    pool.mark_failed(2, math.inf)
    assert [pool.next_indexed()[0] for _ in range(4)] == [1, 1, 1, 1]


def test_nodes_list_in_seed_order(pool_impl):
    pool = pool_impl.EndpointPool(nodes(3))
    assert [ep.address for ep in pool] == ["addr0", "addr1", "addr2"]
