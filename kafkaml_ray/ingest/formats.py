"""Message formats of Kafka-ML's wire contract: RAW, AVRO and JSON.

Each format encodes one sample to a Kafka ``(value, key)`` pair (the label travels in the
key) and decodes a *batch* of messages into numpy arrays at once. Malformed messages raise
one error type, :class:`DecodeError`, naming the format, the field and what was wrong; with
``on_error="skip"`` they are left out and reported instead.

Kept whole: the three formats are one wire contract and share its decoding (`Batch`, the
dtype and reshape parsing, `MessageFormat._finish`); side by side, a reader sees that RAW,
AVRO and JSON refuse bad input the same way.

>>> import numpy as np
>>> fmt = get_format("RAW", {"data_type": "float32", "data_reshape": "2 2", "label_type": "int64"})
>>> value, key = fmt.encode(np.arange(4, dtype="float32"), 7)
>>> batch = fmt.decode_batch([value, value], [key, key])
>>> batch.data.shape, batch.labels.tolist()
((2, 2, 2), [7, 7])
>>> try:
...     fmt.decode_batch([b"abc"], [key])
... except DecodeError as e:
...     print(e)
RAW data: message 0 has 3 bytes; data_type float32 with data_reshape '2 2' needs 16
"""

from __future__ import annotations

import functools
import io
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from kafkaml_ray.errors import InvalidInput

__all__ = [
    "DecodeError",
    "Batch",
    "MessageFormat",
    "RawFormat",
    "AvroFormat",
    "JsonFormat",
    "get_format",
    "InputFormat",
    "OnError",
    "DTYPES",
    "parse_reshape",
    "label_shape",
]

InputFormat = Literal["RAW", "AVRO", "JSON"]
OnError = Literal["raise", "skip"]

#: Kafka-ML's type names and the numpy types they decode to.
DTYPES: dict[str, Any] = {
    "half": np.float16,
    "float16": np.float16,
    "float32": np.float32,
    "float64": np.float64,
    "double": np.float64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "bool": np.bool_,
    "string": np.str_,
}


class DecodeError(InvalidInput):
    """A message that does not decode: ``format``, ``field`` ("data"/"label"), ``reason``."""

    def __init__(self, format: str, field: str, reason: str, index: int | None = None):
        super().__init__(f"{format} {field}: {reason}")
        self.format, self.field, self.reason, self.index = format, field, reason, index


@dataclass
class Batch:
    """Decoded messages: ``data`` and ``labels`` (None without labels) of the good ones,
    ``index`` their positions in the input, ``errors`` the skipped ones."""

    data: np.ndarray
    labels: np.ndarray | None
    index: np.ndarray
    errors: list[DecodeError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.data)


#: The most elements one sample may have (256 MB of float32): a reshape above it is refused
#: before anything is allocated for it.
MAX_SAMPLE_ELEMENTS = 2**26


def parse_reshape(text: str | Sequence[int] | None, name: str) -> tuple[int, ...] | None:
    """Kafka-ML's reshape text ("8 8", dims separated by spaces) to a shape; empty = None.

    >>> try:
    ...     parse_reshape("100000 100000", "data_reshape")
    ... except InvalidInput as e:
    ...     print(e)
    data_reshape '100000 100000' has 10000000000 elements a sample; at most 67108864
    """
    if text is None:
        return None
    if isinstance(text, str):
        tokens = text.replace(",", " ").replace("(", " ").replace(")", " ").split()
    elif isinstance(text, Sequence):
        tokens = list(text)
    else:
        raise InvalidInput(f"{name} must be text such as '8 8', not {type(text).__name__}")
    try:
        shape = tuple(int(t) for t in tokens)
    except (ValueError, TypeError):
        raise InvalidInput(
            f"{name} {str(text)[:80]!r} is not a list of sizes such as '8 8'"
        ) from None
    if any(d <= 0 for d in shape):
        raise InvalidInput(f"{name} {str(text)[:80]!r} has a size that is not positive")
    if len(shape) > 32 or math.prod(shape) > MAX_SAMPLE_ELEMENTS:
        raise InvalidInput(
            f"{name} {str(text)[:80]!r} has {math.prod(shape)} elements a sample; "
            f"at most {MAX_SAMPLE_ELEMENTS}"
        )
    return shape or None


def label_shape(text: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """``label_reshape`` as a shape, where a label of exactly one element is a scalar.

    Kafka-ML's sinks infer the shape from the first sample, so a numpy scalar label is
    announced as "1"; its trainers, and ours, take it as a scalar.

    >>> label_shape("1"), label_shape("1 1"), label_shape(""), label_shape("3")
    ((), (), None, (3,))
    """
    shape = parse_reshape(text, "label_reshape")
    return () if shape is not None and math.prod(shape) == 1 else shape


def _dtype(name: str | None, field_name: str) -> Any:
    if name is None:
        return None
    try:
        return DTYPES[name]
    except KeyError:
        raise InvalidInput(
            f"unknown {field_name} {name!r}; use one of {', '.join(DTYPES)}"
        ) from None


class MessageFormat:
    """A message format: ``encode`` one sample, ``decode_batch`` many."""

    name: str = ""
    has_labels: bool = False
    data_dtype: Any = None
    label_dtype: Any = None
    data_shape: tuple[int, ...] | None = None
    label_shape: tuple[int, ...] | None = None

    def encode(self, data: Any, label: Any = None) -> tuple[bytes, bytes | None]:
        raise NotImplementedError

    def decode_batch(
        self,
        values: Sequence[bytes | None],
        keys: Sequence[bytes | None] | None = None,
        on_error: OnError = "raise",
    ) -> Batch:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """This format's ``input_config`` for a control message."""
        raise NotImplementedError

    def _finish(
        self,
        n: int,
        data: list | np.ndarray,
        labels: list | np.ndarray | None,
        errors: dict[int, DecodeError],
        on_error: OnError,
        cast: bool = True,
    ) -> Batch:
        """Drop (or raise for) the bad rows and stack the good ones in the format's shapes,
        cast to its dtypes (``cast=False``: the rows have them already)."""
        if errors and on_error == "raise":
            raise errors[min(errors)]
        good = np.array([i for i in range(n) if i not in errors], dtype=np.int64)
        data_dtype, label_dtype = (self.data_dtype, self.label_dtype) if cast else (None, None)
        return Batch(
            data=_stack([data[i] for i in good], data_dtype, self.data_shape),
            labels=None
            if labels is None
            else _stack([labels[i] for i in good], label_dtype, self.label_shape),
            index=good,
            errors=[errors[i] for i in sorted(errors)],
        )


def _stack(rows: list, dtype: Any, shape: tuple[int, ...] | None) -> np.ndarray:
    if not rows:
        return np.empty((0, *(shape or ())), dtype=dtype or np.float32)
    return np.stack([np.asarray(r, dtype=dtype) for r in rows])


class _TypedFormat(MessageFormat):
    """A format whose samples are arrays of ``data_type`` shaped by ``data_reshape``, with
    labels of ``label_type`` shaped by ``label_reshape`` (RAW and JSON)."""

    def __init__(
        self,
        data_type: str = "float32",
        label_type: str | None = None,
        data_reshape: str | Sequence[int] | None = None,
        label_reshape: str | Sequence[int] | None = None,
    ):
        self.data_type, self.label_type = data_type, label_type or None
        self.data_dtype = _dtype(data_type, "data_type")
        self.label_dtype = _dtype(self.label_type, "label_type")
        self.data_shape = parse_reshape(data_reshape, "data_reshape")
        self.label_shape = label_shape(label_reshape)
        self.has_labels = self.label_type is not None

    def config(self) -> dict[str, Any]:
        return {
            "data_type": self.data_type,
            "label_type": self.label_type,
            "data_reshape": " ".join(map(str, self.data_shape or ())),
            "label_reshape": " ".join(map(str, self.label_shape or ())),
        }


# -- RAW ----------------------------------------------------------------------------------
class RawFormat(_TypedFormat):
    """Numpy bytes (C order) of ``data_type`` reshaped by ``data_reshape``; the label in the
    key as bytes of ``label_type`` reshaped by ``label_reshape``. ``string`` is UTF-8 text."""

    name = "RAW"

    @functools.cached_property
    def _data_bytes(self) -> int | None:
        """Bytes of one sample when its shape is known (the common case, decoded fastest)."""
        if self.data_shape is None or self.data_dtype is np.str_:
            return None
        return np.dtype(self.data_dtype).itemsize * math.prod(self.data_shape)

    def encode(self, data: Any, label: Any = None) -> tuple[bytes, bytes | None]:
        value = _raw_bytes(data, self.data_dtype)
        if label is None or not self.has_labels:
            return value, None
        return value, _raw_bytes(label, self.label_dtype)

    def decode_batch(self, values, keys=None, on_error: OnError = "raise") -> Batch:
        n, need = len(values), self._data_bytes
        # Samples without labels, all of the right size, checked in plain Python first: for a
        # chunk of one message (light load) numpy's calls cost more than the check.
        if need and not self.has_labels and all(v is not None and len(v) == need for v in values):
            data = np.frombuffer(b"".join(values), dtype=self.data_dtype)
            return Batch(data.reshape(n, *self.data_shape), None, np.arange(n))
        errors: dict[int, DecodeError] = {}
        data = self._column(values, "data", self.data_dtype, self.data_shape, errors)
        labels = None
        if self.has_labels:
            keys = keys if keys is not None else [None] * n
            labels = self._column(keys, "label", self.label_dtype, self.label_shape, errors)
        if not errors:  # fast path: already stacked
            return Batch(data, labels, np.arange(n, dtype=np.int64))
        return self._finish(n, data, labels, errors, on_error, cast=False)

    def _column(self, items, fld: str, dtype, shape, errors: dict[int, DecodeError]):
        """All items decoded at once; rows of bad items are filled and noted in errors."""
        n = len(items)
        if dtype is np.str_:
            out = []
            for i, b in enumerate(items):
                try:
                    out.append(b.decode("utf-8") if b is not None else _missing(fld))
                except (UnicodeDecodeError, ValueError) as e:
                    errors.setdefault(i, DecodeError("RAW", fld, f"message {i}: {e}", i))
                    out.append("")
            return np.asarray(out, dtype=np.str_)
        itemsize = np.dtype(dtype).itemsize
        lengths = np.fromiter((-1 if b is None else len(b) for b in items), np.int64, n)
        if shape is not None:
            need = itemsize * math.prod(shape)
        else:  # flat: every message as long as most of them
            valid = lengths[(lengths >= 0) & (lengths % itemsize == 0)]
            need = Counter(valid.tolist()).most_common(1)[0][0] if len(valid) else itemsize
        bad = np.flatnonzero(lengths != need)
        if len(bad):  # (the error texts only when needed: this runs per consumed chunk)
            what = f"{fld}_type {np.dtype(dtype).name}"
            how = (
                f"{what} with {fld}_reshape '{' '.join(map(str, shape))}' needs {need}"
                if shape is not None
                else f"{what} needs a multiple of {itemsize} and the others have {need}"
            )
            for i in bad.tolist():
                reason = (
                    f"message {i} has no key (the label)"
                    if lengths[i] < 0
                    else f"message {i} has {lengths[i]} bytes; {how}"
                )
                errors.setdefault(i, DecodeError("RAW", fld, reason, i))
            filler = b"\0" * need
            items = [filler if i in errors else b for i, b in enumerate(items)]
        flat = np.frombuffer(b"".join(items), dtype=dtype)
        per = shape if shape is not None else (need // itemsize,)
        if fld == "label" and shape is None and per == (1,):
            per = ()  # scalar labels
        return flat.reshape(n, *per)


def _missing(fld: str):
    raise ValueError(f"no {'key' if fld == 'label' else 'value'}")


def _raw_bytes(x: Any, dtype: Any) -> bytes:
    if dtype is np.str_:
        return str(x).encode("utf-8")
    return np.ascontiguousarray(np.asarray(x, dtype=dtype)).tobytes()


# -- AVRO ---------------------------------------------------------------------------------
_AVRO_DTYPES = {
    "int": np.int32,
    "long": np.int64,
    "float": np.float32,
    "double": np.float64,
    "boolean": np.bool_,
    "string": np.str_,
}


class AvroFormat(MessageFormat):
    """Schemaless Avro binary: the value is a record of ``data_scheme``, the key a record of
    ``label_scheme``. Field values are taken in schema order and flattened."""

    name = "AVRO"

    def __init__(
        self,
        data_scheme: str | Mapping,
        label_scheme: str | Mapping | None = None,
        data_reshape: str | Sequence[int] | None = None,
        label_reshape: str | Sequence[int] | None = None,
    ):
        self.data_schema, self._data_parsed = _avro_schema(data_scheme, "data_scheme")
        self.label_schema, self._label_parsed = (
            _avro_schema(label_scheme, "label_scheme") if label_scheme else (None, None)
        )
        self.data_shape = parse_reshape(data_reshape, "data_reshape")
        self.label_shape = label_shape(label_reshape)
        self.data_dtype = _avro_dtype(self.data_schema)
        self.label_dtype = _avro_dtype(self.label_schema) if self.label_schema else None
        self.has_labels = self.label_schema is not None

    def config(self) -> dict[str, Any]:
        return {
            "data_scheme": json.dumps(self.data_schema),
            "label_scheme": json.dumps(self.label_schema) if self.label_schema else None,
            "data_reshape": " ".join(map(str, self.data_shape or ())),
            "label_reshape": " ".join(map(str, self.label_shape or ())),
        }

    def encode(self, data: Any, label: Any = None) -> tuple[bytes, bytes | None]:
        value = _avro_write(self._data_parsed, _as_record(self.data_schema, data, "data"))
        if label is None or not self.has_labels:
            return value, None
        key = _avro_write(self._label_parsed, _as_record(self.label_schema, label, "label"))
        return value, key

    def decode_batch(self, values, keys=None, on_error: OnError = "raise") -> Batch:
        n = len(values)
        errors: dict[int, DecodeError] = {}
        data = self._rows(
            values, "data", self._data_parsed, self.data_schema, self.data_shape, errors
        )
        labels = None
        if self.has_labels:
            keys = keys if keys is not None else [None] * n
            labels = self._rows(
                keys, "label", self._label_parsed, self.label_schema, self.label_shape, errors
            )
        return self._finish(n, data, labels, errors, on_error)

    def _rows(self, items, fld, parsed, schema, shape, errors) -> list:
        from fastavro import schemaless_reader

        rows: list[Any] = []
        size = None
        for i, b in enumerate(items):
            if b is None:
                errors.setdefault(
                    i,
                    DecodeError(
                        "AVRO", fld, f"message {i} has no {'key' if fld == 'label' else 'value'}", i
                    ),
                )
                rows.append(None)
                continue
            buf = io.BytesIO(b)
            try:
                record = schemaless_reader(buf, parsed, None)
                if buf.tell() != len(b):
                    raise ValueError(f"{len(b) - buf.tell()} bytes left after the record")
                flat = np.concatenate(
                    [np.ravel(np.asarray(record[f["name"]])) for f in schema["fields"]]
                )
                if shape is not None:
                    flat = flat.reshape(shape)
                elif fld == "label" and flat.size == 1:
                    flat = flat[0]
            except Exception as e:  # noqa: BLE001 - fastavro raises many kinds
                reason = str(e) or type(e).__name__
                errors.setdefault(i, DecodeError("AVRO", fld, f"message {i}: {reason}", i))
                rows.append(None)
                continue
            this = np.shape(flat)
            if size is None:
                size = this
            elif this != size:
                errors.setdefault(
                    i,
                    DecodeError("AVRO", fld, f"message {i} has shape {this}, the others {size}", i),
                )
            rows.append(flat)
        return rows


def _avro_schema(scheme: str | Mapping, name: str) -> tuple[dict, Any]:
    from fastavro import parse_schema

    try:
        schema = json.loads(scheme) if isinstance(scheme, str) else dict(scheme)
        if schema.get("type") != "record" or not schema.get("fields"):
            raise ValueError("it must be a record with fields")
        return schema, parse_schema(schema)
    except Exception as e:  # noqa: BLE001
        raise InvalidInput(f"invalid Avro {name}: {e}") from None


def _avro_dtype(schema: dict) -> Any:
    kinds = set()
    for f in schema["fields"]:
        t = f["type"]
        if isinstance(t, dict) and t.get("type") == "array":
            t = t["items"]
        if isinstance(t, list):  # a union such as ["null", "float"]
            t = next((x for x in t if x != "null"), "double")
        kinds.add(t if isinstance(t, str) else "double")
    dtypes = {_AVRO_DTYPES.get(k, np.float64) for k in kinds}
    return dtypes.pop() if len(dtypes) == 1 else np.float64


def _as_record(schema: dict, x: Any, what: str) -> dict:
    if isinstance(x, Mapping):
        return dict(x)
    fields = schema["fields"]
    arr = np.asarray(x)
    if len(fields) == 1:  # an array field takes the values flat; data_reshape restores them
        return {fields[0]["name"]: arr.ravel().tolist() if arr.ndim else arr.item()}
    flat = arr.ravel().tolist()
    if len(flat) != len(fields):
        raise InvalidInput(f"AVRO {what}: {len(flat)} values for a schema of {len(fields)} fields")
    return {f["name"]: v for f, v in zip(fields, flat, strict=True)}


def _avro_write(parsed: Any, record: dict) -> bytes:
    from fastavro import schemaless_writer

    buf = io.BytesIO()
    try:
        schemaless_writer(buf, parsed, record)
    except Exception as e:  # noqa: BLE001
        raise InvalidInput(f"AVRO: the record does not fit the schema: {e}") from None
    return buf.getvalue()


# -- JSON ---------------------------------------------------------------------------------
class JsonFormat(_TypedFormat):
    """UTF-8 JSON: the value is an array (the label, if any, JSON in the key), or an object
    with ``data`` and ``label``. ``data_type``/``data_reshape`` cast and shape the arrays."""

    name = "JSON"

    def encode(self, data: Any, label: Any = None) -> tuple[bytes, bytes | None]:
        value = json.dumps(np.asarray(data).tolist(), separators=(",", ":")).encode()
        if label is None or not self.has_labels:
            return value, None
        return value, json.dumps(np.asarray(label).tolist(), separators=(",", ":")).encode()

    def decode_batch(self, values, keys=None, on_error: OnError = "raise") -> Batch:
        n = len(values)
        errors: dict[int, DecodeError] = {}
        parsed = _json_all(values, "data", errors)
        data: list[Any] = []
        labels: list[Any] | None = [] if self.has_labels else None
        key_parsed = None
        for i, v in enumerate(parsed):
            if isinstance(v, dict):
                if "data" not in v:
                    errors.setdefault(
                        i,
                        DecodeError("JSON", "data", f"message {i} is an object without 'data'", i),
                    )
                data.append(v.get("data"))
                if labels is not None:
                    labels.append(v.get("label", _NO_LABEL))
            else:
                data.append(v)
                if labels is not None:
                    if key_parsed is None:
                        key_parsed = _json_all(
                            keys if keys is not None else [None] * n, "label", errors
                        )
                    labels.append(key_parsed[i])
        data = self._check(data, "data", self.data_dtype, self.data_shape, errors)
        if labels is not None:
            labels = self._check(labels, "label", self.label_dtype, self.label_shape, errors)
        return self._finish(n, data, labels, errors, on_error)

    def _check(self, rows: list, fld: str, dtype: Any, shape, errors) -> list:
        out: list[Any] = []
        size = None
        for i, r in enumerate(rows):
            if i in errors:
                out.append(None)
                continue
            if r is _NO_LABEL:
                errors[i] = DecodeError("JSON", fld, f"message {i} has no label", i)
                out.append(None)
                continue
            try:
                with np.errstate(over="raise"):  # (1e39 as float32 is refused, not inf)
                    a = np.asarray(r, dtype=dtype)
                if a.dtype == object:
                    raise ValueError("ragged or mixed values")
                if shape is not None:
                    a = a.reshape(shape)
                elif fld == "label" and a.size == 1:
                    a = a.reshape(())  # a one-element label is a scalar
            except FloatingPointError:
                what = f"message {i}: a value is out of range for {np.dtype(dtype).name}"
                errors[i] = DecodeError("JSON", fld, what, i)
                out.append(None)
                continue
            except (ValueError, TypeError, OverflowError, RecursionError) as e:
                errors[i] = DecodeError("JSON", fld, f"message {i}: {e}", i)
                out.append(None)
                continue
            if size is None:
                size = a.shape
            elif a.shape != size:
                errors[i] = DecodeError(
                    "JSON", fld, f"message {i} has shape {a.shape}, the others {size}", i
                )
            out.append(a)
        return out


_NO_LABEL = object()


def _json_all(items: Sequence[bytes | None], fld: str, errors: dict[int, DecodeError]) -> list:
    """Parse every item on its own. (Joining the batch into one array to parse it at once
    lets a message like ``1,2`` split into two and two broken ones merge into one.)"""
    out: list[Any] = []
    for i, b in enumerate(items):
        try:
            if b is None:
                raise ValueError(f"no {'key' if fld == 'label' else 'value'}")
            out.append(json.loads(b))
        except (ValueError, UnicodeDecodeError) as e:
            errors.setdefault(i, DecodeError("JSON", fld, f"message {i}: {e}", i))
            out.append(None)
        except RecursionError:
            errors.setdefault(i, DecodeError("JSON", fld, f"message {i} is nested too deeply", i))
            out.append(None)
    return out


def get_format(input_format: str, input_config: Mapping[str, Any] | None) -> MessageFormat:
    """The format named by a control message's ``input_format`` and ``input_config``."""
    if not isinstance(input_format, str):
        raise InvalidInput(f"input_format must be RAW, AVRO or JSON, not {input_format!r}")
    if not isinstance(input_config, Mapping | None):
        raise InvalidInput(f"input_config must be an object, not {type(input_config).__name__}")
    cfg = {k: v for k, v in dict(input_config or {}).items() if v is not None and v != ""}
    name = input_format.upper()
    try:
        if name == "RAW":
            return RawFormat(
                **_pick(cfg, ("data_type", "label_type", "data_reshape", "label_reshape"))
            )
        if name == "AVRO":
            if "data_scheme" not in cfg:
                raise InvalidInput("AVRO input_config needs data_scheme (an Avro record schema)")
            return AvroFormat(
                **_pick(cfg, ("data_scheme", "label_scheme", "data_reshape", "label_reshape"))
            )
        if name == "JSON":
            return JsonFormat(
                **_pick(cfg, ("data_type", "label_type", "data_reshape", "label_reshape"))
            )
    except TypeError as e:
        raise InvalidInput(f"invalid input_config for {name}: {e}") from None
    raise InvalidInput(f"unknown input_format {input_format!r}: use RAW, AVRO or JSON")


def _pick(cfg: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    return {k: cfg[k] for k in names if k in cfg}
