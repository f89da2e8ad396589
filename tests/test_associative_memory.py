"""AssociativeMemory against a brute-force numpy oracle, its capacity and forgetting policies, and its state.

The stateful tests drive random add / remove / update / touch / forget / search sequences through
``hypothesis.stateful`` for each index type and compare every answer with a dictionary-and-numpy
model of the documented semantics. Flat (and IVF probing every cell) must match the oracle exactly:
the k returned distances equal the oracle's k smallest (ties may come back in either order) and each
returned id's distance is its true distance. Approximate indexes (IVF probing fewer cells, HNSW)
must return live, distinct ids with true, ascending distances, and their recall@k against flat is
measured on fixed datasets.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from harness_zoo.associative_memory import (
    MISSING_ID,
    AssociativeMemory,
    DuplicateIdError,
    MemoryConfig,
    MemoryFullError,
    UnknownIdError,
)

DIM = 4
ATOL, RTOL = 1e-4, 1e-4  # float32 faiss distances against float64 numpy
INDEX_TYPES = ("flat", "ivf", "hnsw")


def _profile_examples(share: float, minimum: int) -> int:
    """A share of the loaded Hypothesis profile's max_examples: ci stays fast, nightly goes deep."""
    return max(minimum, int(settings.default.max_examples * share))


STATEFUL_SETTINGS = settings(
    max_examples=_profile_examples(0.5, 4),
    stateful_step_count=min(50, _profile_examples(2.0, 25)),
    deadline=None,
)

# Coordinates on a half-integer grid make exact ties (and exact arithmetic) common; floats cover the rest.
coordinates = st.one_of(
    st.integers(-4, 4).map(lambda v: v / 2),
    st.floats(-2.0, 2.0, allow_nan=False, allow_infinity=False, width=32),
)


def vectors(count: int) -> st.SearchStrategy[np.ndarray]:
    return st.lists(st.lists(coordinates, min_size=DIM, max_size=DIM), min_size=count, max_size=count).map(
        lambda rows: np.asarray(rows, dtype=np.float32).reshape(count, DIM)
    )


def true_distances(query: np.ndarray, stored: np.ndarray) -> np.ndarray:
    return ((stored.astype(np.float64) - query.astype(np.float64)) ** 2).sum(-1)


class MemoryMachine(RuleBasedStateMachine):
    """Random operation sequences against an oracle of the documented semantics."""

    config: MemoryConfig
    exact_after_training = True  # False where the trained index searches only some cells / a graph

    def __init__(self) -> None:
        super().__init__()
        self.memory = AssociativeMemory(self.config)
        self.vectors: dict[int, np.ndarray] = {}  # id -> stored vector (float32)
        self.order: list[int] = []  # row order: insertion order, removals compact
        self.added: dict[int, int] = {}  # id -> tick of its add
        self.used: dict[int, int] = {}  # id -> tick of its last use
        self.tick = 0
        self.next_id = 0

    # --------------------------------------------------------------------------------- oracle

    def _victims(self, count: int) -> list[int]:
        stamp = self.added if self.config.eviction == "fifo" else self.used
        return sorted(self.vectors, key=lambda item: (stamp[item], item))[:count]

    def _drop(self, ids: list[int]) -> None:
        for item in ids:
            del self.vectors[item], self.added[item], self.used[item]
            self.order.remove(item)

    @property
    def exact(self) -> bool:
        return self.config.index_type == "flat" or (self.exact_after_training or not self.memory.is_trained)

    # ---------------------------------------------------------------------------------- rules

    @rule(data=st.data(), count=st.integers(1, 6), explicit_ids=st.booleans())
    def add(self, data: st.DataObject, count: int, explicit_ids: bool) -> None:
        batch = data.draw(vectors(count), label="vectors")
        if explicit_ids:
            free = st.integers(0, 80).filter(lambda item: item not in self.vectors)
            ids = data.draw(st.lists(free, min_size=count, max_size=count, unique=True), label="ids")
        else:
            ids = list(range(self.next_id, self.next_id + count))
        returned = self.memory.add(batch, ids=ids if explicit_ids else None)
        assert returned.tolist() == ids
        overflow = len(self.vectors) + count - self.config.capacity
        if overflow > 0:
            self._drop(self._victims(overflow))
        self.tick += 1
        for item, vector in zip(ids, batch, strict=True):
            self.vectors[item], self.added[item], self.used[item] = vector, self.tick, self.tick
            self.order.append(item)
        self.next_id = max(self.next_id, max(ids) + 1)

    @precondition(lambda self: self.vectors)
    @rule(data=st.data())
    def remove(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.vectors)), min_size=1, max_size=3, unique=True))
        self.memory.remove(ids)
        self._drop(ids)

    @precondition(lambda self: self.vectors)
    @rule(data=st.data())
    def update(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.vectors)), min_size=1, max_size=3, unique=True))
        batch = data.draw(vectors(len(ids)), label="vectors")
        self.memory.update(ids, batch)
        self.tick += 1
        for item, vector in zip(ids, batch, strict=True):
            self.vectors[item], self.used[item] = vector, self.tick

    @precondition(lambda self: self.vectors)
    @rule(data=st.data())
    def touch(self, data: st.DataObject) -> None:
        ids = data.draw(st.lists(st.sampled_from(sorted(self.vectors)), min_size=1, max_size=3, unique=True))
        self.memory.touch(ids)
        self.tick += 1
        for item in ids:
            self.used[item] = self.tick

    @rule()
    def forget(self) -> None:
        expected = self._victims(math.ceil(round(self.config.forget_rate * len(self.vectors), 9)))
        assert sorted(self.memory.forget().tolist()) == sorted(expected)
        self._drop(expected)

    @rule(data=st.data())
    def bad_calls_change_nothing(self, data: st.DataObject) -> None:
        unknown = data.draw(st.integers(0, 200).filter(lambda item: item not in self.vectors))
        with pytest.raises(UnknownIdError, match=f"id {unknown}"):
            self.memory.remove([*sorted(self.vectors)[:1], unknown])
        with pytest.raises(UnknownIdError, match=f"id {unknown}"):
            self.memory.update([unknown], np.zeros((1, DIM), np.float32))
        with pytest.raises(ValueError, match=r"vectors must have shape \(n, 4\)"):
            self.memory.add(np.zeros((2, DIM + 1), np.float32))
        if self.vectors:
            stored = sorted(self.vectors)[0]
            with pytest.raises(DuplicateIdError, match=f"id {stored}"):
                self.memory.add(np.zeros((1, DIM), np.float32), ids=[stored])

    @rule(data=st.data(), count=st.integers(1, 24), k=st.integers(1, 8), touch=st.booleans())
    def search(self, data: st.DataObject, count: int, k: int, touch: bool) -> None:
        queries = data.draw(vectors(count), label="queries")
        ids, distances, valid = self.memory.search(queries, k, touch=touch)
        assert ids.shape == distances.shape == valid.shape == (count, k)
        assert torch.equal(valid, ids != MISSING_ID)
        assert torch.isinf(distances[~valid]).all()
        live = set(self.vectors)
        for row in range(count):
            found = ids[row][valid[row]].tolist()
            assert valid[row].tolist() == [True] * len(found) + [False] * (k - len(found)), "valid is not a prefix"
            assert set(found) <= live and len(set(found)) == len(found), f"dead or repeated ids {found}"
            reported = distances[row][valid[row]].double().numpy()
            if found:
                actual = true_distances(queries[row], np.stack([self.vectors[item] for item in found]))
                np.testing.assert_allclose(reported, actual, rtol=RTOL, atol=ATOL)
                assert (np.diff(reported) >= -ATOL).all(), f"distances not ascending: {reported}"
            if self.exact:
                assert len(found) == min(k, len(live))
                if live:
                    everything = np.sort(true_distances(queries[row], np.stack([self.vectors[i] for i in live])))
                    np.testing.assert_allclose(reported, everything[: len(found)], rtol=RTOL, atol=ATOL)
            else:
                assert len(found) <= min(k, len(live))
        if touch and valid.any():
            self.tick += 1
            for item in torch.unique(ids[valid]).tolist():
                self.used[item] = self.tick

    # ----------------------------------------------------------------------------- invariants

    @invariant()
    def every_stored_vector_finds_itself(self) -> None:
        """After every step: searching the stored vectors reports true distances (a stale index would not)."""
        if not self.order:
            return
        stored = np.stack([self.vectors[item] for item in self.order])
        ids, distances, valid = self.memory.search(stored, 1)
        for row, item in enumerate(ids[:, 0].tolist()):
            if self.exact:
                assert valid[row, 0] and distances[row, 0] <= ATOL, f"stored id {self.order[row]} not found"
            if valid[row, 0]:
                actual = true_distances(stored[row], self.vectors[item][None])[0]
                np.testing.assert_allclose(float(distances[row, 0]), actual, rtol=RTOL, atol=ATOL)

    @invariant()
    def contents_match(self) -> None:
        assert len(self.memory) == len(self.vectors)
        assert self.memory.ids().tolist() == self.order
        if self.order:
            stored = self.memory.reconstruct(self.order).numpy()
            np.testing.assert_array_equal(stored, np.stack([self.vectors[item] for item in self.order]))


def _machine(name: str, exact_after_training: bool = True, **fields: object) -> type[MemoryMachine]:
    config = MemoryConfig(dim=DIM, capacity=24, forget_rate=0.2, k=4, **fields)
    return type(name, (MemoryMachine,), {"config": config, "exact_after_training": exact_after_training})


FlatMachine = _machine("FlatMachine", index_type="flat", eviction="lru")
# nprobe == nlist: every cell is searched, so a trained IVF must still be exact (checks its id mapping).
IVFExhaustiveMachine = _machine(
    "IVFExhaustiveMachine", index_type="ivf", nlist=4, nprobe=4, train_size=8, eviction="fifo"
)
IVFMachine = _machine("IVFMachine", False, index_type="ivf", nlist=4, nprobe=1, train_size=8)
HNSWMachine = _machine("HNSWMachine", False, index_type="hnsw", hnsw_m=4, ef_search=8, eviction="fifo")

TestFlatAgainstOracle = FlatMachine.TestCase
TestIVFExhaustiveAgainstOracle = IVFExhaustiveMachine.TestCase
TestIVFAgainstOracle = IVFMachine.TestCase
TestHNSWAgainstOracle = HNSWMachine.TestCase
TestFlatAgainstOracle.settings = STATEFUL_SETTINGS
TestIVFExhaustiveAgainstOracle.settings = STATEFUL_SETTINGS
TestIVFAgainstOracle.settings = STATEFUL_SETTINGS
TestHNSWAgainstOracle.settings = STATEFUL_SETTINGS


# ------------------------------------------------------------------------------------- recall


def _recall(dataset: np.ndarray, queries: np.ndarray, index_type: str, k: int = 8) -> float:
    """Mean recall@k of ``index_type`` at the default settings against the flat index."""
    dim = dataset.shape[1]
    exact = AssociativeMemory(MemoryConfig(dim=dim, capacity=len(dataset)))
    approximate = AssociativeMemory(MemoryConfig(dim=dim, capacity=len(dataset), index_type=index_type))
    exact.add(dataset)
    approximate.add(dataset)
    assert approximate.is_trained  # ivf trained itself on the stored vectors
    truth = exact.search(queries, k).ids.tolist()
    found = approximate.search(queries, k).ids.tolist()
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(truth, found, strict=True)]))


@pytest.fixture(scope="module")
def datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Fixed datasets: 1024 stored vectors and 256 queries each."""
    from harness_zoo.gpt2_tiny import build_model, build_tokenizer, reference_text

    rng = np.random.default_rng(20240601)
    centres = rng.standard_normal((32, 32)) * 3
    mixture = (centres[rng.integers(0, 32, 1280)] + rng.standard_normal((1280, 32))).astype(np.float32)
    gaussian = rng.standard_normal((1280, 32)).astype(np.float32)
    # Real: gpt2-tiny's (seeded, untrained) final hidden states on CPython's reference text.
    tokens = build_tokenizer()(reference_text()[:40_000], verbose=False)["input_ids"][: 20 * 64]
    torch.manual_seed(0)
    gpt2 = build_model().eval()
    with torch.no_grad():
        hidden = gpt2.transformer(input_ids=torch.tensor(tokens).reshape(20, 64)).last_hidden_state
    real = hidden.reshape(-1, 64).numpy()
    real = real[rng.permutation(len(real))]
    return {
        name: (data[:1024], data[1024:1280])
        for name, data in (("real", real), ("mixture", mixture), ("gaussian", gaussian))
    }


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_recall_at_default_settings(datasets, index_type: str, record_property) -> None:
    recalls = {name: _recall(data, queries, index_type) for name, (data, queries) in datasets.items()}
    record_property(f"recall_at_8_{index_type}", recalls)
    print(f"\n{index_type} recall@8 vs flat at defaults: {recalls}")
    assert recalls["real"] >= 0.9, recalls
    assert recalls["mixture"] >= 0.9, recalls
    # Isotropic Gaussian data has no cluster structure for IVF to use: a weaker floor for ivf.
    assert recalls["gaussian"] >= (0.75 if index_type == "ivf" else 0.9), recalls


# ------------------------------------------------------------------------- capacity, forgetting


def _memory(**fields: object) -> AssociativeMemory:
    return AssociativeMemory(MemoryConfig(dim=DIM, **fields))


def _points(count: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(count * DIM, dtype=np.float32).reshape(count, DIM) + start) / 10


def test_lru_evicts_least_recently_used() -> None:
    memory = _memory(capacity=3, eviction="lru")
    a, b, c = memory.add(_points(3)).tolist()
    memory.search(_points(1), 3)  # a plain search is not a use
    memory.touch([a])
    (d,) = memory.add(_points(1, 5.0)).tolist()
    assert memory.ids().tolist() == [a, c, d]  # b was the least recently used
    memory.search(memory.reconstruct([c]), 1, touch=True)  # a touching search is a use: c is now newest
    memory.update([d], _points(1, 9.0))  # an update is a use too
    memory.add(_points(1, 7.0))
    assert memory.ids().tolist() == [c, d, d + 1]  # a went


def test_fifo_evicts_oldest_regardless_of_use() -> None:
    memory = _memory(capacity=3, eviction="fifo")
    a, b, c = memory.add(_points(3)).tolist()
    memory.touch([a])
    memory.update([a], _points(1, 3.0))
    memory.add(_points(2, 5.0))
    assert memory.ids().tolist() == [c, c + 1, c + 2]


def test_reject_raises_and_changes_nothing() -> None:
    memory = _memory(capacity=3, eviction="reject")
    memory.add(_points(2))
    before = {name: value.clone() for name, value in memory.state_dict().items()}
    with pytest.raises(MemoryFullError, match="capacity 3"):
        memory.add(_points(2, 5.0))
    assert all(torch.equal(before[name], value) for name, value in memory.state_dict().items())
    memory.add(_points(1, 5.0))  # exactly full is fine
    assert len(memory) == 3


@pytest.mark.parametrize("eviction", ["lru", "fifo", "reject"])
def test_one_add_larger_than_capacity_is_an_error(eviction: str) -> None:
    memory = _memory(capacity=2, eviction=eviction)
    with pytest.raises(ValueError, match="more than the capacity 2"):
        memory.add(_points(3))
    assert len(memory) == 0


@pytest.mark.parametrize(
    ("rate", "size", "removed"),
    [(0.1, 3, 1), (0.1, 1, 1), (0.1, 0, 0), (0.0, 5, 0), (0.5, 3, 2), (1.0, 4, 4), (0.1, 30, 3), (0.25, 7, 2)],
)
def test_forget_removes_ceil_rate_times_size(rate: float, size: int, removed: int) -> None:
    memory = _memory(forget_rate=rate, capacity=64)
    if size:
        memory.add(_points(size))
    assert len(memory.forget()) == removed
    assert len(memory) == size - removed


def test_forget_removes_least_recently_used_first() -> None:
    memory = _memory(forget_rate=0.1)
    a, b, c = memory.add(_points(3)).tolist()
    memory.touch([a])
    assert memory.forget().tolist() == [b]
    assert memory.forget().tolist() == [c]
    assert memory.ids().tolist() == [a]


# ------------------------------------------------------------------------ masking and errors


@pytest.mark.parametrize("index_type", INDEX_TYPES)
@settings(max_examples=_profile_examples(1.0, 6), deadline=None)
@given(stored=st.integers(0, 10), k=st.integers(1, 12), data=st.data())
def test_search_never_returns_an_unmasked_missing_id(index_type: str, stored: int, k: int, data) -> None:
    memory = _memory(index_type=index_type, nlist=2, nprobe=1, train_size=4, capacity=16)
    if stored:
        memory.add(data.draw(vectors(stored), label="stored"))
    queries = data.draw(vectors(3), label="queries")
    ids, distances, valid = memory.search(queries, k)
    assert (valid.sum(-1) <= min(k, stored)).all()
    assert (ids[~valid] == MISSING_ID).all() and torch.isinf(distances[~valid]).all()
    assert set(ids[valid].tolist()) <= set(memory.ids().tolist())
    keys, _ = memory.gather(ids, valid, fill=float("nan"))
    assert torch.isnan(keys[~valid]).all() and torch.isfinite(keys[valid]).all()
    if index_type == "flat":
        assert (valid.sum(-1) == min(k, stored)).all()


def test_fewer_than_k_stored_pads_with_the_sentinel() -> None:
    memory = _memory()
    memory.add(_points(2), ids=[7, 3])
    ids, distances, valid = memory.search(_points(1), 4)
    assert ids.tolist() == [[7, 3, MISSING_ID, MISSING_ID]]
    assert valid.tolist() == [[True, True, False, False]]
    assert distances[0, 0] == 0.0 and math.isinf(distances[0, 3])
    keys, values = memory.gather(ids)
    assert torch.equal(keys[0, :2], memory.reconstruct([7, 3])) and not keys[0, 2:].any()
    assert values.shape == (1, 4, 0)


def test_errors_name_the_argument_and_value() -> None:
    memory = _memory(value_dim=2)
    with pytest.raises(ValueError, match=r"vectors must have shape \(n, 4\), got vectors of shape \(3,\)"):
        memory.add(np.zeros(3, np.float32), values=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="values are required"):
        memory.add(_points(1))
    with pytest.raises(ValueError, match=r"values must have shape \(n, 2\)"):
        memory.add(_points(1), values=np.zeros((1, 3)))
    with pytest.raises(DuplicateIdError, match="ids holds id 5 more than once"):
        memory.add(_points(2), values=np.zeros((2, 2)), ids=[5, 5])
    with pytest.raises(ValueError, match="ids must be >= 0"):
        memory.add(_points(1), values=np.zeros((1, 2)), ids=[-1])
    with pytest.raises(ValueError, match="must be finite"):
        memory.add(np.full((1, DIM), np.nan), values=np.zeros((1, 2)))
    memory.add(_points(1), values=np.zeros((1, 2)), ids=[5])
    with pytest.raises(UnknownIdError, match="ids holds id 6, which is not in the memory"):
        memory.reconstruct([6])
    with pytest.raises(ValueError, match="k must be an integer >= 1, got k=0"):
        memory.search(_points(1), 0)
    with pytest.raises(ValueError, match=r"queries must have shape \(n, 4\)"):
        memory.search(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="MemoryConfig.index_type must be one of flat, ivf, hnsw; got 'lsh'"):
        MemoryConfig(dim=4, index_type="lsh")
    with pytest.raises(ValueError, match="MemoryConfig.nprobe must be <= nlist=4, got nprobe=8"):
        MemoryConfig(dim=4, nlist=4, nprobe=8)
    with pytest.raises(ValueError, match="forget_rate=1.5"):
        MemoryConfig(dim=4, forget_rate=1.5)


def test_automatic_ids_are_never_reused() -> None:
    memory = _memory()
    first = memory.add(_points(3)).tolist()
    memory.remove(first)
    assert memory.add(_points(1)).tolist() == [3]
    memory.add(_points(1), ids=[10])
    assert memory.add(_points(1)).tolist() == [11]
    memory.add(_points(1), ids=[0])  # an explicit id may reuse a removed one
    assert 0 in memory and 1 not in memory


# ----------------------------------------------------------------------- state dict and copies


@pytest.mark.parametrize("index_type", INDEX_TYPES)
def test_state_dict_round_trip_resizes_and_searches_identically(index_type: str) -> None:
    rng = np.random.default_rng(7)
    config = MemoryConfig(dim=8, value_dim=3, index_type=index_type, nlist=4, nprobe=2, train_size=32, capacity=128)
    source = AssociativeMemory(config)
    source.add(rng.standard_normal((60, 8)), values=rng.standard_normal((60, 3)))
    source.remove(source.ids()[::5])
    source.update(source.ids()[:4], rng.standard_normal((4, 8)))
    queries = rng.standard_normal((20, 8)).astype(np.float32)
    expected = source.search(queries, 6)
    for target_size in (0, 90):  # fewer and more rows than the source holds
        target = AssociativeMemory(config)
        if target_size:
            target.add(rng.standard_normal((target_size, 8)), values=rng.standard_normal((target_size, 3)))
        target.search(queries, 6)  # builds the target's index: loading must discard it
        target.load_state_dict(source.state_dict())
        for name, value in source.state_dict().items():
            assert torch.equal(target.state_dict()[name], value), name
        got = target.search(queries, 6)
        assert torch.equal(got.ids, expected.ids) and torch.equal(got.distances, expected.distances)
    clone = copy.deepcopy(source)
    assert torch.equal(clone.search(queries, 6).ids, expected.ids)
    clone.add(rng.standard_normal((1, 8)), values=rng.standard_normal((1, 3)))
    assert len(clone) == len(source) + 1  # independent of the original
    unpickled = pickle.loads(pickle.dumps(source))
    assert torch.equal(unpickled.search(queries, 6).ids, expected.ids)


def test_loading_an_inconsistent_state_fails_clearly() -> None:
    source = _memory()
    source.add(_points(3))
    state = source.state_dict()
    state["item_ids"] = torch.tensor([0, 0, 1])
    with pytest.raises(RuntimeError, match="duplicate ids"):
        _memory().load_state_dict(state)
    state = source.state_dict()
    state["keys"] = torch.zeros(3, DIM + 1)
    with pytest.raises(RuntimeError, match="size mismatch for keys"):
        _memory().load_state_dict(state)


def test_ivf_trains_on_given_vectors_and_keeps_its_centroids() -> None:
    rng = np.random.default_rng(3)
    memory = _memory(index_type="ivf", nlist=4, nprobe=4, train_size=1000)
    memory.add(rng.standard_normal((10, DIM)))
    assert not memory.is_trained  # fewer than train_size: exact search
    memory.train_index(rng.standard_normal((64, DIM)))
    assert memory.is_trained and memory.centroids.shape == (4, DIM)
    centroids = memory.centroids.clone()
    memory.add(rng.standard_normal((5, DIM)))
    assert torch.equal(memory.centroids, centroids)
    with pytest.raises(ValueError, match="at least nlist=4 rows"):
        memory.train_index(rng.standard_normal((3, DIM)))
