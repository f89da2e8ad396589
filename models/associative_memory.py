"""An external associative memory on faiss: stable integer ids, a capacity policy, forgetting, masked search.

The authoritative contents live in registered buffers, so they are part of the owning model's
``state_dict`` (a safetensors or ``torch.save`` round trip carries them) and a purity check sees any
change. The faiss index is *derived*: it is rebuilt from the buffers whenever it is missing or
stale (after a removal, an update, a load or a copy), so the index is always a deterministic
function of the buffers and two memories with equal buffers answer every search identically.

Buffers (``N`` stored items):

- ``keys`` (N, dim) float32: the indexed vectors.
- ``values`` (N, value_dim) float32: the payload stored beside each key (``value_dim`` may be 0).
- ``item_ids`` (N,) int64: the stable id of each row. Ids are never renumbered; automatic ids come
  from ``next_id``, which only grows, so an id is never silently reused.
- ``added_at`` (N,) int64: the clock tick at which the item was added (its age).
- ``used_at`` (N,) int64: the tick at which it was last used: added, updated, or touched (by
  :meth:`touch` or a ``search(..., touch=True)``); a plain search does not count as use.
- ``clock`` () int64: one tick per mutating call. ``next_id`` () int64: the next automatic id.
- ``centroids`` (nlist or 0, dim) float32: the IVF coarse quantizer once trained (empty before).

Rows are kept in insertion order; removing items compacts the rows and keeps the others' order.

Search: squared L2 distances, best first. Where fewer than ``k`` neighbours are found (fewer than
``k`` stored, or an approximate index that found fewer), faiss pads with label -1; here those slots
hold the sentinel :data:`MISSING_ID` (-1) and distance ``+inf``, and the returned ``valid`` mask is
False there. :meth:`gather` turns ids into keys and values, filling missing slots with ``fill``;
callers must use the mask, never the filled rows.

Capacity: at most ``capacity`` items. An ``add`` that would exceed it follows ``eviction``:
``"lru"`` evicts the least recently used items first, ``"fifo"`` the oldest (by ``added_at``),
both breaking ties by the smaller id; ``"reject"`` raises :class:`MemoryFullError` and changes
nothing. One ``add`` of more than ``capacity`` vectors is an error under every policy.

Forgetting: each :meth:`forget` call removes ``ceil(forget_rate * len(self))`` items, in the order
the eviction policy would evict them (least recently used for ``"lru"`` and ``"reject"``, oldest
for ``"fifo"``). So rate 0.1 removes 1 of 3 items, and any rate > 0 removes at least one item from
a non-empty memory.

Index types: ``"flat"`` is exact. ``"ivf"`` (IndexIVFFlat) searches ``nprobe`` of ``nlist`` k-means
cells; it trains itself on the stored keys the first time ``train_size`` are stored (or on vectors
given to :meth:`train_index`, e.g. a model's hidden states on real text) and searches exactly until
then. ``"hnsw"`` (IndexHNSWFlat) is a graph index; vectors are inserted one at a time so the graph,
and hence every search, is independent of faiss's thread count.

Errors that come from the caller's arguments name the argument and the offending value:
:class:`UnknownIdError` (a KeyError), :class:`DuplicateIdError` (a ValueError), ValueError for
shapes and values, :class:`MemoryFullError` for the ``"reject"`` policy.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from torch import nn

IndexType = Literal["flat", "ivf", "hnsw"]
Eviction = Literal["lru", "fifo", "reject"]
INDEX_TYPES: tuple[str, ...] = ("flat", "ivf", "hnsw")
EVICTIONS: tuple[str, ...] = ("lru", "fifo", "reject")

MISSING_ID = -1  # id in search results where no neighbour was found (faiss's -1 padding)
MISSING_DISTANCE = math.inf  # distance reported for a missing neighbour


class UnknownIdError(KeyError):
    """An id that is not stored in the memory."""

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0]) if self.args else ""


class DuplicateIdError(ValueError):
    """An id given twice, or one that is already stored."""


class MemoryFullError(RuntimeError):
    """An add that would exceed the capacity of a memory whose eviction policy is ``"reject"``."""


@dataclass(frozen=True)
class MemoryConfig:
    """Configuration of an :class:`AssociativeMemory`; every field is validated on construction."""

    dim: int  # width of the key vectors that are indexed and searched
    value_dim: int = 0  # width of the value stored beside each key (0: keys only)
    index_type: IndexType = "flat"  # "flat" exact L2, "ivf" inverted lists over k-means cells, "hnsw" graph
    nlist: int = 16  # ivf: number of k-means cells
    nprobe: int = 8  # ivf: cells visited per query (at most nlist)
    train_size: int = 256  # ivf: train on the stored keys once this many are stored (>= nlist)
    hnsw_m: int = 16  # hnsw: links per node
    ef_construction: int = 40  # hnsw: candidate list size while inserting
    ef_search: int = 64  # hnsw: candidate list size while searching (faiss raises it to k if smaller)
    capacity: int = 1024  # most items stored at once
    eviction: Eviction = "lru"  # what an add does when full: "lru" / "fifo" evict, "reject" raises
    forget_rate: float = 0.0  # forget() removes ceil(forget_rate * len) items, in eviction order
    k: int = 8  # neighbours per query when search() is not given k
    seed: int = 1234  # seed of the ivf k-means (training is deterministic)
    faiss_threads: int = 1  # OpenMP threads of faiss calls; 1 avoids fighting torch's pool over small searches

    def __post_init__(self) -> None:
        positive = (
            "dim",
            "nlist",
            "nprobe",
            "train_size",
            "hnsw_m",
            "ef_construction",
            "ef_search",
            "capacity",
            "k",
            "faiss_threads",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MemoryConfig.{name} must be an integer >= 1, got {name}={value!r}")
        if isinstance(self.value_dim, bool) or not isinstance(self.value_dim, int) or self.value_dim < 0:
            raise ValueError(f"MemoryConfig.value_dim must be an integer >= 0, got value_dim={self.value_dim!r}")
        if self.index_type not in INDEX_TYPES:
            raise ValueError(
                f"MemoryConfig.index_type must be one of {', '.join(INDEX_TYPES)}; got {self.index_type!r}"
            )
        if self.eviction not in EVICTIONS:
            raise ValueError(f"MemoryConfig.eviction must be one of {', '.join(EVICTIONS)}; got {self.eviction!r}")
        if self.nprobe > self.nlist:
            raise ValueError(f"MemoryConfig.nprobe must be <= nlist={self.nlist}, got nprobe={self.nprobe}")
        if self.train_size < self.nlist:
            raise ValueError(f"MemoryConfig.train_size must be >= nlist={self.nlist}, got train_size={self.train_size}")
        if not (isinstance(self.forget_rate, (int, float)) and 0.0 <= self.forget_rate <= 1.0):
            raise ValueError(f"MemoryConfig.forget_rate must be in [0, 1], got forget_rate={self.forget_rate!r}")


class SearchResult(NamedTuple):
    """What :meth:`AssociativeMemory.search` returns; unpacks as ``ids, distances, valid``."""

    ids: torch.Tensor  # (n, k) int64, MISSING_ID where no neighbour was found
    distances: torch.Tensor  # (n, k) float32 squared L2, ascending, +inf where missing
    valid: torch.Tensor  # (n, k) bool, False exactly where ids == MISSING_ID


_BUFFERS = ("keys", "values", "item_ids", "added_at", "used_at", "clock", "next_id", "centroids")


class AssociativeMemory(nn.Module):
    """A key/value store with stable ids, searched by nearest neighbour through a faiss index."""

    def __init__(self, config: MemoryConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("keys", torch.zeros(0, config.dim))
        self.register_buffer("values", torch.zeros(0, config.value_dim))
        self.register_buffer("item_ids", torch.zeros(0, dtype=torch.long))
        self.register_buffer("added_at", torch.zeros(0, dtype=torch.long))
        self.register_buffer("used_at", torch.zeros(0, dtype=torch.long))
        self.register_buffer("clock", torch.zeros((), dtype=torch.long))
        self.register_buffer("next_id", torch.zeros((), dtype=torch.long))
        self.register_buffer("centroids", torch.zeros(0, config.dim))
        self._reset_derived()

    # ----------------------------------------------------------------- derived state (never saved)

    def _reset_derived(self) -> None:
        """Drop the faiss index; it is rebuilt from the buffers on the next search."""
        self._index: Any = None

    @contextlib.contextmanager
    def _faiss_threads(self) -> Iterator[None]:
        """Run faiss with ``config.faiss_threads`` OpenMP threads (a per-thread setting), then restore."""
        import faiss

        previous = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.config.faiss_threads)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(previous)

    def _faiss_index(self) -> Any:
        """The index over the current keys, rebuilt from the buffers if missing or stale."""
        if self._index is None:
            self._index = self._new_index()
            self._index_add(self._index, self._keys_numpy())
        return self._index

    def _new_index(self) -> Any:
        import faiss

        config = self.config
        if config.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(config.dim, config.hnsw_m)
            index.hnsw.efConstruction = config.ef_construction
            index.hnsw.efSearch = config.ef_search
            return index
        if config.index_type == "ivf" and len(self.centroids):
            quantizer = faiss.IndexFlatL2(config.dim)
            quantizer.add(np.ascontiguousarray(self.centroids.detach().cpu().float().numpy()))
            index = faiss.IndexIVFFlat(quantizer, config.dim, len(self.centroids))  # keeps a reference to quantizer
            index.is_trained = True
            index.nprobe = min(config.nprobe, len(self.centroids))
            return index
        return faiss.IndexFlatL2(config.dim)  # flat, and ivf before it is trained (exact search)

    def _index_add(self, index: Any, vectors: np.ndarray) -> None:
        if not len(vectors):
            return
        if self.config.index_type == "hnsw":
            for row in range(len(vectors)):  # one at a time: the graph does not depend on thread count
                index.add(vectors[row : row + 1])
        else:
            index.add(vectors)

    def _keys_numpy(self) -> np.ndarray:
        return np.ascontiguousarray(self.keys.detach().cpu().float().numpy())

    # ------------------------------------------------------------------------------- validation

    def _matrix(self, array: Any, name: str, width: int) -> torch.Tensor:
        """``array`` as a finite float32 CPU tensor of shape (n, width), or a ValueError naming it."""
        tensor = torch.as_tensor(np.asarray(array) if not isinstance(array, torch.Tensor) else array)
        tensor = tensor.detach().cpu()
        if tensor.dim() != 2 or tensor.shape[1] != width:
            raise ValueError(f"{name} must have shape (n, {width}), got {name} of shape {tuple(tensor.shape)}")
        if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
            raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
        tensor = tensor.to(torch.float32).contiguous()
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).any(dim=1).nonzero()[0])
            raise ValueError(f"{name} must be finite, got a NaN or Inf in row {bad} of {name}")
        return tensor

    def _id_vector(self, ids: Any, name: str = "ids") -> torch.Tensor:
        """``ids`` as a 1-D int64 CPU tensor of non-negative, pairwise distinct integers."""
        tensor = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids).detach().cpu()
        if tensor.dim() == 0:
            tensor = tensor.reshape(1)
        if tensor.dim() != 1:
            raise ValueError(f"{name} must be a 1-D sequence of integers, got {name} of shape {tuple(tensor.shape)}")
        if tensor.numel() and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool):
            raise ValueError(f"{name} must be integers, got dtype {tensor.dtype} ({name}={tensor.tolist()[:5]})")
        tensor = tensor.to(torch.long)
        negative = tensor[tensor < 0]
        if negative.numel():
            raise ValueError(
                f"{name} must be >= 0 (-1 is the missing-neighbour sentinel), got {name}={int(negative[0])}"
            )
        unique, counts = torch.unique(tensor, return_counts=True)
        if (counts > 1).any():
            raise DuplicateIdError(f"{name} holds id {int(unique[counts > 1][0])} more than once")
        return tensor

    def _rows(self, ids: torch.Tensor, name: str = "ids") -> torch.Tensor:
        """Rows of stored ``ids`` (searchsorted over the sorted ids); UnknownIdError names the first unknown id."""
        if not ids.numel():
            return torch.zeros(0, dtype=torch.long)
        stored = self.item_ids.cpu()
        found = torch.zeros(ids.shape, dtype=torch.bool)
        rows = torch.zeros(ids.shape, dtype=torch.long)
        if len(stored):
            order = torch.argsort(stored)
            sorted_ids = stored[order]
            position = torch.searchsorted(sorted_ids, ids.contiguous()).clamp(max=len(stored) - 1)
            found = sorted_ids[position] == ids
            rows = order[position]
        if not found.all():
            missing = int(ids[~found][0])
            raise UnknownIdError(f"{name} holds id {missing}, which is not in the memory ({len(self)} items stored)")
        return rows

    # ----------------------------------------------------------------------------------- queries

    def __len__(self) -> int:
        return int(self.item_ids.shape[0])

    def __contains__(self, item: object) -> bool:
        return isinstance(item, (int, np.integer)) and bool((self.item_ids == int(item)).any())

    def ids(self) -> torch.Tensor:
        """The stored ids, in row (insertion) order, as an int64 tensor."""
        return self.item_ids.clone()

    @property
    def is_trained(self) -> bool:
        """False only for an ivf memory without centroids yet, which searches exactly until trained."""
        return self.config.index_type != "ivf" or len(self.centroids) > 0

    def reconstruct(self, ids: Any) -> torch.Tensor:
        """The stored key vectors of ``ids``, shape (len(ids), dim)."""
        return self.keys[self._rows(self._id_vector(ids))].clone()

    def search(self, queries: Any, k: int | None = None, *, touch: bool = False) -> SearchResult:
        """The ``k`` nearest stored keys of each query (squared L2, best first), padded and masked.

        Never returns an unmasked missing id: slots without a neighbour hold :data:`MISSING_ID`,
        distance ``+inf`` and ``valid=False``. ``touch=True`` counts the found items as used (LRU).
        """
        k = self.config.k if k is None else k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got k={k!r}")
        k = int(k)
        matrix = self._matrix(queries, "queries", self.config.dim)  # (n, dim)
        count = matrix.shape[0]
        if len(self) == 0 or count == 0:
            rows = np.full((count, k), -1, dtype=np.int64)
            distances = np.full((count, k), np.inf, dtype=np.float32)
        else:
            with self._faiss_threads():
                distances, rows = self._faiss_index().search(matrix.numpy(), k)  # (n, k), (n, k)
        rows_t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        valid = (rows_t >= 0) & (rows_t < len(self))  # (n, k)
        safe_rows = rows_t.clamp(0, max(len(self) - 1, 0))
        ids = torch.where(valid, self.item_ids[safe_rows] if len(self) else rows_t, MISSING_ID)
        dist = torch.from_numpy(np.asarray(distances, dtype=np.float32)).clamp(min=0.0)
        dist = torch.where(valid, dist, torch.full_like(dist, MISSING_DISTANCE))
        if touch and valid.any():
            self.touch(torch.unique(ids[valid]))
        return SearchResult(ids, dist, valid)

    def gather(self, ids: Any, valid: Any = None, *, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of an id array of any shape (e.g. ``search(...).ids``), where ``valid``.

        Returns ``(keys (*shape, dim), values (*shape, value_dim))``. Slots where ``valid`` is
        False (default: where ``ids == MISSING_ID``) are filled with ``fill``; their content is
        meaningless, use the mask. A valid slot whose id is not stored raises UnknownIdError.
        """
        ids_t = torch.as_tensor(ids).detach().cpu().to(torch.long)
        valid_t = ids_t != MISSING_ID if valid is None else torch.as_tensor(valid).detach().cpu().bool()
        if valid_t.shape != ids_t.shape:
            raise ValueError(f"valid must have the shape of ids {tuple(ids_t.shape)}, got {tuple(valid_t.shape)}")
        flat_ids, flat_valid = ids_t.reshape(-1), valid_t.reshape(-1)
        rows = torch.zeros_like(flat_ids)
        if flat_valid.any():
            rows[flat_valid] = self._rows(flat_ids[flat_valid])
        keys = self.keys[rows] if len(self) else torch.zeros(rows.shape[0], self.config.dim)
        values = self.values[rows] if len(self) else torch.zeros(rows.shape[0], self.config.value_dim)
        keys = keys.masked_fill(~flat_valid[:, None], fill)
        values = values.masked_fill(~flat_valid[:, None], fill)
        shape = tuple(ids_t.shape)
        return keys.reshape(*shape, self.config.dim), values.reshape(*shape, self.config.value_dim)

    # --------------------------------------------------------------------------------- mutations

    def _tick(self) -> int:
        self.clock = self.clock + 1
        return int(self.clock)

    def _eviction_order(self) -> torch.Tensor:
        """Rows sorted by eviction priority: first to go first (ties: smaller id first)."""
        stamp = self.added_at if self.config.eviction == "fifo" else self.used_at
        by_id = torch.argsort(self.item_ids, stable=True)
        return by_id[torch.argsort(stamp[by_id], stable=True)]

    def add(self, vectors: Any, values: Any = None, ids: Any = None) -> torch.Tensor:
        """Store ``vectors`` (n, dim) with ``values`` (n, value_dim) under ``ids`` (new ones if None).

        Returns the ids (int64). Evicts per ``eviction`` when full; on any error nothing changes.
        """
        keys = self._matrix(vectors, "vectors", self.config.dim)  # (n, dim)
        count = keys.shape[0]
        if values is None:
            if self.config.value_dim:
                raise ValueError(f"values are required: this memory stores value_dim={self.config.value_dim}")
            payload = torch.zeros(count, 0)
        else:
            payload = self._matrix(values, "values", self.config.value_dim)
            if payload.shape[0] != count:
                raise ValueError(f"values must have one row per vector ({count}), got {payload.shape[0]} rows")
        if ids is None:
            new_ids = torch.arange(int(self.next_id), int(self.next_id) + count, dtype=torch.long)
        else:
            new_ids = self._id_vector(ids)
            if new_ids.numel() != count:
                raise ValueError(f"ids must have one id per vector ({count}), got {new_ids.numel()} ids")
            stored = torch.isin(new_ids, self.item_ids.cpu())
            if stored.any():
                raise DuplicateIdError(
                    f"ids holds id {int(new_ids[stored][0])}, which is already in the memory (use update)"
                )
        if count > self.config.capacity:
            raise ValueError(f"vectors holds {count} rows, more than the capacity {self.config.capacity}")
        if count == 0:
            return new_ids
        overflow = len(self) + count - self.config.capacity
        if overflow > 0:
            if self.config.eviction == "reject":
                raise MemoryFullError(
                    f"adding {count} vectors to {len(self)} stored would exceed capacity {self.config.capacity} "
                    f"(eviction='reject'); remove or forget items first"
                )
            self._remove_rows(self._eviction_order()[:overflow])
        tick = self._tick()
        device = self.keys.device
        stamp = torch.full((count,), tick, dtype=torch.long, device=device)
        self.keys = torch.cat([self.keys, keys.to(device=device, dtype=self.keys.dtype)])
        self.values = torch.cat([self.values, payload.to(device=device, dtype=self.values.dtype)])
        self.item_ids = torch.cat([self.item_ids, new_ids.to(device)])
        self.added_at = torch.cat([self.added_at, stamp])
        self.used_at = torch.cat([self.used_at, stamp.clone()])
        self.next_id = torch.maximum(self.next_id, new_ids.max().to(device) + 1)
        if self.config.index_type == "ivf" and not len(self.centroids) and len(self) >= self.config.train_size:
            self.train_index(self.keys)  # trains, then the index is rebuilt on the next search
        elif self._index is not None:
            with self._faiss_threads():
                self._index_add(self._index, keys.numpy())  # appending keeps index == rebuild(buffers)
        return new_ids

    def remove(self, ids: Any) -> None:
        """Remove stored ``ids``; UnknownIdError (nothing removed) if any is not stored."""
        rows = self._rows(self._id_vector(ids))
        if rows.numel():
            self._tick()
            self._remove_rows(rows)

    def _remove_rows(self, rows: torch.Tensor) -> None:
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[rows] = False
        keep = keep.to(self.keys.device)
        for name in ("keys", "values", "item_ids", "added_at", "used_at"):
            setattr(self, name, getattr(self, name)[keep].contiguous())
        self._reset_derived()

    def update(self, ids: Any, vectors: Any, values: Any = None) -> None:
        """Replace the keys (and values, if given) of stored ``ids``; ids and ages are kept, use is refreshed."""
        id_vector = self._id_vector(ids)
        keys = self._matrix(vectors, "vectors", self.config.dim)
        if keys.shape[0] != id_vector.numel():
            raise ValueError(f"vectors must have one row per id ({id_vector.numel()}), got {keys.shape[0]} rows")
        payload = None
        if values is not None:
            payload = self._matrix(values, "values", self.config.value_dim)
            if payload.shape[0] != id_vector.numel():
                raise ValueError(f"values must have one row per id ({id_vector.numel()}), got {payload.shape[0]} rows")
        rows = self._rows(id_vector).to(self.keys.device)
        if not rows.numel():
            return
        tick = self._tick()
        updated = self.keys.clone()
        updated[rows] = keys.to(device=updated.device, dtype=updated.dtype)
        self.keys = updated
        if payload is not None:
            new_values = self.values.clone()
            new_values[rows] = payload.to(device=new_values.device, dtype=new_values.dtype)
            self.values = new_values
        used = self.used_at.clone()
        used[rows] = tick
        self.used_at = used
        self._index = None  # keys changed in place: rebuild on the next search

    def touch(self, ids: Any) -> None:
        """Count stored ``ids`` as used now (the LRU policy and forgetting keep them longest)."""
        rows = self._rows(self._id_vector(ids)).to(self.used_at.device)
        if rows.numel():
            used = self.used_at.clone()
            used[rows] = self._tick()
            self.used_at = used

    def forget(self) -> torch.Tensor:
        """Remove ``ceil(forget_rate * len)`` items in eviction order; returns their ids."""
        count = min(len(self), math.ceil(round(self.config.forget_rate * len(self), 9)))
        if count == 0:
            return torch.zeros(0, dtype=torch.long)
        rows = self._eviction_order()[:count]
        removed = self.item_ids[rows].clone()
        self._tick()
        self._remove_rows(rows)
        return removed

    def clear(self) -> None:
        """Remove every item (ids are still never reused; IVF centroids are kept)."""
        if len(self):
            self._tick()
            self._remove_rows(torch.arange(len(self)))

    def train_index(self, vectors: Any) -> None:
        """Train the IVF coarse quantizer (k-means, ``nlist`` cells) on ``vectors`` (n >= nlist, dim).

        For other index types this is a no-op. Retraining replaces the centroids.
        """
        if self.config.index_type != "ivf":
            return
        import faiss

        data = self._matrix(vectors, "vectors", self.config.dim)
        if data.shape[0] < self.config.nlist:
            raise ValueError(f"vectors must hold at least nlist={self.config.nlist} rows to train, got {data.shape[0]}")
        kmeans = faiss.Kmeans(self.config.dim, self.config.nlist, niter=20, seed=self.config.seed, verbose=False)
        kmeans.cp.min_points_per_centroid = 1  # small memories: no "too few points" warning
        with self._faiss_threads():
            kmeans.train(data.numpy())
        self.centroids = torch.from_numpy(np.array(kmeans.centroids, dtype=np.float32)).to(self.keys.device)
        self._index = None

    # -------------------------------------------------------------- state dict, copy and pickle

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        """Resize the memory buffers to the incoming number of rows, load, validate, drop the index."""
        for name in _BUFFERS:
            incoming = state_dict.get(prefix + name)
            current = self._buffers.get(name)
            if not isinstance(incoming, torch.Tensor) or current is None or incoming.shape == current.shape:
                continue
            if incoming.dim() == current.dim() and incoming.shape[1:] == current.shape[1:]:
                self._buffers[name] = torch.empty(incoming.shape, dtype=current.dtype, device=current.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._reset_derived()
        problem = self._inconsistency()
        if problem:
            error_msgs.append(f"{prefix or 'memory'}: inconsistent memory state: {problem}")

    def _inconsistency(self) -> str | None:
        """Why the buffers do not describe a valid memory, or None."""
        rows = len(self)
        for name in ("keys", "values", "added_at", "used_at"):
            if getattr(self, name).shape[0] != rows:
                return f"{name} has {getattr(self, name).shape[0]} rows but item_ids has {rows}"
        if rows > self.config.capacity:
            return f"{rows} items stored, more than capacity {self.config.capacity}"
        if rows and (self.item_ids < 0).any():
            return "item_ids holds a negative id"
        if rows and torch.unique(self.item_ids).numel() != rows:
            return "item_ids holds duplicate ids"
        if rows and int(self.item_ids.max()) >= int(self.next_id):
            return f"next_id {int(self.next_id)} is not above the largest stored id {int(self.item_ids.max())}"
        if self.config.index_type == "ivf" and len(self.centroids) not in (0, self.config.nlist):
            return f"centroids has {len(self.centroids)} rows, expected 0 or nlist={self.config.nlist}"
        if not torch.isfinite(self.keys).all():
            return "keys holds NaN or Inf"
        return None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle / deepcopy without the faiss index (a SWIG object); it is rebuilt from the buffers."""
        state = self.__dict__.copy()
        state["_index"] = None
        return state

    def extra_repr(self) -> str:
        config = self.config
        return f"{len(self)}/{config.capacity} items, dim={config.dim}, value_dim={config.value_dim}, index={config.index_type}, eviction={config.eviction}"
