"""Tensors on the wire (docs/wire-format.md sections 4 and 8).

A wire tensor is one sample: a dtype name, a shape and little-endian, row-major bytes.
:class:`Tensor` holds exactly that; :func:`as_tensor` turns numpy arrays (or raw bytes)
into one, :meth:`Tensor.numpy` turns one back, and :func:`inputs_digest` is the BLAKE3
digest that names a job's inputs (``inputs_ref.digest`` and the result cache key).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Tuple

import numpy as np
from blake3 import blake3

from .errors import InvalidJob

#: Wire dtype name -> numpy dtype (little-endian), per the table of section 4. ``bf16``
#: has no numpy type: it is read as ``<u2`` shifted into the upper half of a float32.
DTYPES = {
    "f32": "<f4", "f16": "<f2", "f64": "<f8",
    "i64": "<i8", "i32": "<i4", "i16": "<i2", "i8": "i1",
    "u8": "u1", "bool": "?",
}
#: Element size in bytes of every wire dtype, bf16 included.
ITEM_SIZES = {**{name: np.dtype(d).itemsize for name, d in DTYPES.items()}, "bf16": 2}
_FROM_NUMPY = {np.dtype(d): name for name, d in DTYPES.items()}

#: Most dimensions of one tensor; most elements of one input tensor (section 5).
MAX_DIMS = 8
MAX_ELEMENTS = 1 << 26


@dataclass(frozen=True)
class Tensor:
    """One sample as the wire carries it: ``dtype`` (a key of :data:`ITEM_SIZES`),
    ``shape`` (no batch dimension) and ``data`` (little-endian, C order)."""

    dtype: str
    shape: Tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in ITEM_SIZES:
            raise InvalidJob(f"dtype {self.dtype!r} is not one of {sorted(ITEM_SIZES)}")
        shape = tuple(int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "data", bytes(self.data))
        if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
            raise InvalidJob(f"shape {list(shape)}: at most {MAX_DIMS} dimensions, each >= 0")
        want = int(np.prod(shape, dtype=np.int64)) * ITEM_SIZES[self.dtype]
        if len(self.data) != want:
            raise InvalidJob(f"{self.dtype} {list(shape)} needs {want} bytes of data, got {len(self.data)}")

    @property
    def elements(self) -> int:
        return len(self.data) // ITEM_SIZES[self.dtype]

    def numpy(self) -> np.ndarray:
        """The tensor as a read-only numpy array of its shape (bf16 widens to float32)."""
        if self.dtype == "bf16":
            bits = np.frombuffer(self.data, "<u2").astype("<u4") << 16
            return bits.view("<f4").reshape(self.shape)
        return np.frombuffer(self.data, DTYPES[self.dtype]).reshape(self.shape)

    def to_wire(self) -> dict:
        return {"dtype": self.dtype, "shape": list(self.shape), "data": self.data}

    @classmethod
    def from_wire(cls, t: Any) -> "Tensor":
        if not isinstance(t, dict) or not {"dtype", "shape", "data"} <= t.keys():
            raise ValueError(f"not a wire tensor: {t!r:.80}")
        return cls(t["dtype"], tuple(t["shape"]), t["data"])

    @classmethod
    def from_numpy(cls, array: Any) -> "Tensor":
        """One sample from anything ``np.asarray`` takes; any byte order, any memory layout."""
        a = np.asarray(array)
        name = _FROM_NUMPY.get(a.dtype.newbyteorder("<"))  # the type, whatever its byte order
        if name is None:
            raise InvalidJob(f"numpy dtype {a.dtype} has no jetinfer wire type (one of {sorted(DTYPES)})")
        data = np.ascontiguousarray(a, dtype=DTYPES[name]).tobytes()
        return cls(name, a.shape, data)


def as_tensor(value: Any) -> Tensor:
    """A :class:`Tensor` from a Tensor, raw ``bytes`` (a ``u8`` vector, e.g. an encoded
    image) or anything numpy reads as an array."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        return Tensor("u8", (len(data),), data)
    return Tensor.from_numpy(value)


def inputs_digest(tensors: Sequence[Tensor]) -> str:
    """Lowercase hex BLAKE3 of the tensors, fed as section 8 says (all integers little-endian)."""
    h = blake3(struct.pack("<Q", len(tensors)))
    for t in tensors:
        h.update(t.dtype.encode())
        h.update(struct.pack(f"<Q{len(t.shape)}q", len(t.shape), *t.shape))
        h.update(struct.pack("<Q", len(t.data)))
        h.update(t.data)
    return h.hexdigest()


def to_numpy_list(tensors: Iterable[Tensor]) -> list:
    return [t.numpy() for t in tensors]
