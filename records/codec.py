"""JSON form of records: ``{"type": ..., "version": ..., "data": {<fields>}}``.

The fields sit under ``data`` so a record's own ``type``/``version`` fields (a transaction's type,
a DEX trade's protocol version) never collide with the envelope.

Codecs are compiled once per record class from its type hints, so encoding a record is a
flat loop over its fields, not a walk over ``typing`` objects per value.

Rules that make the JSON exact for any consumer language:
- integers annotated ``U256`` (token amounts, wei values, difficulty) are always decimal strings,
  whatever their size, because JSON numbers lose precision past 2^53 in most parsers and a field's
  JSON type must not depend on its value;
- ``Decimal`` is always a fixed-point string (``"1.50"`` keeps its digits: ``Decimal("1.50")``
  round-trips; never exponent notation, so a value reads back from Postgres as the same text);
- other ints (block numbers, indexes, timestamps, gas) are JSON numbers;
- tuples become arrays, nested records become objects without ``type``/``version``.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any, ClassVar, TypeVar, get_args, get_origin, get_type_hints

import orjson

try:
    from records._codec import Encoder as _NativeEncoder
    from records._codec import encode_messages as _encode_messages
except ImportError:  # pragma: no cover - make install builds it; to_json then goes through a dict
    _NativeEncoder = None
    _encode_messages = None


class _U256Marker:
    """Marks an int field that can exceed 2^53 (amounts, wei)."""

    def __repr__(self) -> str:
        return "U256"


U256 = Annotated[int, _U256Marker()]

Encoder = Callable[[Any], Any]
Decoder = Callable[[Any], Any]


class RecordDecodeError(ValueError):
    """A JSON document that is not a valid record of the type it claims."""


@dataclasses.dataclass(frozen=True, slots=True)
class Record:
    """Base of every record. Subclasses set ``TYPE`` (the JSON ``type``) and ``VERSION``."""

    TYPE: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1


R = TypeVar("R", bound=Record)

_REGISTRY: dict[str, type[Record]] = {}
_CODECS: dict[type, tuple[list[tuple[str, Encoder]], list[tuple[str, Decoder]]]] = {}


def register(cls: type[R]) -> type[R]:
    """Class decorator: make ``cls`` decodable from JSON by its ``TYPE``."""
    if not cls.TYPE:
        raise TypeError(f"{cls.__name__} has no TYPE")
    if cls.TYPE in _REGISTRY and _REGISTRY[cls.TYPE] is not cls:
        raise TypeError(f"record type {cls.TYPE!r} registered twice")
    _REGISTRY[cls.TYPE] = cls
    return cls


def record_types() -> dict[str, type[Record]]:
    return dict(_REGISTRY)


def _identity(value: Any) -> Any:
    return value


def _big_to_json(value: int) -> str:
    return str(value)


def _big_from_json(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RecordDecodeError(f"expected a decimal string for a big integer, got {value!r}")
    return int(value)


def _int_from_json(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordDecodeError(f"expected an integer, got {value!r}")
    return value


def _str_from_json(value: Any) -> str:
    if not isinstance(value, str):
        raise RecordDecodeError(f"expected a string, got {value!r}")
    return value


def _bool_from_json(value: Any) -> bool:
    if not isinstance(value, bool):
        raise RecordDecodeError(f"expected a boolean, got {value!r}")
    return value


def _decimal_to_json(value: Decimal) -> str:
    # fixed-point, never exponent notation: the same value read back from Postgres NUMERIC (which
    # keeps the scale) prints the same, so head and confirmed Kafka messages match byte for byte
    return format(value, "f")


def _decimal_from_json(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise RecordDecodeError(f"expected a decimal string, got {value!r}")
    try:
        return Decimal(value)
    except ArithmeticError as exc:
        raise RecordDecodeError(f"not a decimal: {value!r}") from exc


def _compile(hint: Any) -> tuple[Encoder, Decoder]:
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        if base is int and any(isinstance(e, _U256Marker) for e in extras):
            return _big_to_json, _big_from_json
        return _compile(base)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported union {hint!r}")
        enc, dec = _compile(args[0])

        def enc_opt(value: Any, enc: Encoder = enc) -> Any:
            return None if value is None else enc(value)

        def dec_opt(value: Any, dec: Decoder = dec) -> Any:
            return None if value is None else dec(value)

        return enc_opt, dec_opt
    if origin is tuple:
        targs = get_args(hint)
        if len(targs) == 2 and targs[1] is Ellipsis:
            item_enc, item_dec = _compile(targs[0])

            def enc_seq(value: Any, enc: Encoder = item_enc) -> Any:
                return [enc(v) for v in value]

            def dec_seq(value: Any, dec: Decoder = item_dec) -> Any:
                if not isinstance(value, list):
                    raise RecordDecodeError(f"expected an array, got {value!r}")
                return tuple(dec(v) for v in value)

            return enc_seq, dec_seq
        codecs = [_compile(a) for a in targs]

        def enc_fixed(value: Any, codecs: list[tuple[Encoder, Decoder]] = codecs) -> Any:
            return [c[0](v) for c, v in zip(codecs, value, strict=True)]

        def dec_fixed(value: Any, codecs: list[tuple[Encoder, Decoder]] = codecs) -> Any:
            if not isinstance(value, list) or len(value) != len(codecs):
                raise RecordDecodeError(f"expected an array of {len(codecs)}, got {value!r}")
            return tuple(c[1](v) for c, v in zip(codecs, value, strict=True))

        return enc_fixed, dec_fixed
    if isinstance(hint, type) and issubclass(hint, Record):
        return (lambda value: _fields_to_dict(value)), (lambda value, cls=hint: _fields_from_dict(cls, value))
    if hint is int:
        return _identity, _int_from_json
    if hint is str:
        return _identity, _str_from_json
    if hint is bool:
        return _identity, _bool_from_json
    if hint is Decimal:
        return _decimal_to_json, _decimal_from_json
    raise TypeError(f"unsupported field type {hint!r}")


def _codec(cls: type) -> tuple[list[tuple[str, Encoder]], list[tuple[str, Decoder]]]:
    codec = _CODECS.get(cls)
    if codec is None:
        hints = get_type_hints(cls, include_extras=True)
        encoders: list[tuple[str, Encoder]] = []
        decoders: list[tuple[str, Decoder]] = []
        for field in dataclasses.fields(cls):
            enc, dec = _compile(hints[field.name])
            encoders.append((field.name, enc))
            decoders.append((field.name, dec))
        codec = (encoders, decoders)
        _CODECS[cls] = codec
    return codec


def _fields_to_dict(record: Any) -> dict[str, Any]:
    encoders, _ = _codec(type(record))
    return {name: enc(getattr(record, name)) for name, enc in encoders}


def _fields_from_dict(cls: type[R], doc: Any) -> R:
    if not isinstance(doc, dict):
        raise RecordDecodeError(f"{cls.__name__}: expected an object, got {doc!r}")
    _, decoders = _codec(cls)
    kwargs: dict[str, Any] = {}
    for name, dec in decoders:
        if name not in doc:
            raise RecordDecodeError(f"{cls.__name__}: missing field {name!r}")
        try:
            kwargs[name] = dec(doc[name])
        except RecordDecodeError as exc:
            raise RecordDecodeError(f"{cls.__name__}.{name}: {exc}") from None
    return cls(**kwargs)


_FAST: dict[type, Callable[[Any], dict[str, Any]]] = {}


def _shape(hint: Any) -> tuple[Any, bool, bool]:
    """(the type under ``| None``, optional or not, a ``U256`` or not)."""
    base, optional = hint, False
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        base, optional = (args[0], True) if len(args) == 1 else (hint, False)
    is_big = get_origin(base) is Annotated and any(isinstance(e, _U256Marker) for e in get_args(base)[1:])
    return base, optional, is_big


def _inline(name: str, hint: Any, env: dict[str, Any]) -> str:
    """A Python expression encoding field ``name`` of ``r``: plain values inline, the rest by call."""
    base, optional, is_big = _shape(hint)
    if base in (int, str, bool):
        return f"r.{name}"
    if is_big or base is Decimal:

        def conv(x: str) -> str:
            return f"str({x})" if is_big else f"format({x}, 'f')"

        return f"(None if (v := r.{name}) is None else {conv('v')})" if optional else conv(f"r.{name}")
    env[f"_e_{name}"] = _compile(hint)[0]
    return f"_e_{name}(r.{name})"


def _fast_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    """``to_dict`` for one class, generated once: a single dict display with each field's encoding
    inlined (2-3x faster than a loop over per-field encoders; records are encoded for every Kafka
    message). The generic codec stays the reference: the unit tests compare the two."""
    fast = _FAST.get(cls)
    if fast is None:
        hints = get_type_hints(cls, include_extras=True)
        env: dict[str, Any] = {}
        items = ", ".join(
            f"{f.name!r}: {_inline(f.name, hints[f.name], env)}" for f in dataclasses.fields(cls)
        )
        envelope = f"'type': {cls.TYPE!r}, 'version': {cls.VERSION!r}"  # type: ignore[attr-defined]
        source = f"def encode(r):\n    return {{{envelope}, 'data': {{{items}}}}}\n"
        exec(source, env)  # generated from the class's own field names and types only
        fast = _FAST[cls] = env["encode"]
    return fast


def to_dict(record: Record) -> dict[str, Any]:
    """The record's JSON object (with ``type`` and ``version``) as plain Python values."""
    return _fast_encoder(type(record))(record)


def to_dict_reference(record: Record) -> dict[str, Any]:
    """``to_dict`` through the generic per-field codec (what the generated encoders must equal)."""
    return {"type": record.TYPE, "version": record.VERSION, "data": _fields_to_dict(record)}


def to_json(record: Record) -> bytes:
    encode = _JSON.get(type(record))
    if encode is None:
        encode = _JSON[type(record)] = _json_encoder(type(record))
    return encode(record)


def native_messages(cls: type) -> Callable[..., None] | None:
    """``records/_codec.c``'s ``encode_messages`` bound to ``cls``'s C encoder: a Kafka kind's messages
    (key, JSON value, block header) in one C call per kind (``sinks.kafka_keys.encode_batch``); None
    where the C encoder is not built."""
    if _encode_messages is None:
        return None
    encode = _JSON.get(cls)
    if encode is None:
        encode = _JSON[cls] = _json_encoder(cls)
    if _NativeEncoder is None or not isinstance(encode, _NativeEncoder):
        return None
    messages: Callable[..., None] = functools.partial(_encode_messages, encode)
    return messages


def to_json_python(record: Record) -> bytes:
    """``to_json`` without the C encoder: the dict, then orjson (what the C encoder must equal)."""
    return orjson.dumps(to_dict(record))


_JSON: dict[type, Callable[[Any], bytes]] = {}
_PLAIN, _BIG, _DECIMAL, _SEQUENCE, _OTHER = range(5)  # records/_codec.c's field kinds


def _kind(hint: Any) -> tuple[int, bool]:
    """(``records/_codec.c``'s kind of a field, optional or not)."""
    base, optional, is_big = _shape(hint)
    if base in (int, str, bool):
        return _PLAIN, optional
    if is_big or base is Decimal:
        return (_BIG if is_big else _DECIMAL), optional
    if get_origin(base) is tuple and get_args(base)[1:] == (Ellipsis,):
        return _SEQUENCE, optional
    return _OTHER, optional


def _json_encoder(cls: type) -> Callable[[Any], bytes]:
    """The C encoder of ``cls`` (``records/_codec.c``: each field written from its slot into one buffer,
    with orjson writing whatever it does not write itself), or dict + orjson where it is not built."""
    if _NativeEncoder is None:
        return to_json_python
    hints = get_type_hints(cls, include_extras=True)
    fields = []
    for i, f in enumerate(dataclasses.fields(cls)):
        kind, optional = _kind(hints[f.name])
        key = (b"," if i else b"") + orjson.dumps(f.name) + b":"
        fields.append((f.name, key, kind, optional, None if kind == _PLAIN else _compile(hints[f.name])[0]))
    envelope = {"type": cls.TYPE, "version": cls.VERSION, "data": {}}  # type: ignore[attr-defined]
    encoder: Callable[[Any], bytes] = _NativeEncoder(
        cls, orjson.dumps(envelope)[:-2], tuple(fields), orjson.dumps, Decimal
    )
    return encoder


def from_dict(doc: Any) -> Record:
    """Decode any registered record from its JSON object; the ``type`` field picks the class."""
    if not isinstance(doc, dict):
        raise RecordDecodeError(f"expected a JSON object, got {type(doc).__name__}")
    type_name = doc.get("type")
    cls = _REGISTRY.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise RecordDecodeError(f"unknown record type {type_name!r}")
    version = doc.get("version")
    if version != cls.VERSION:
        raise RecordDecodeError(
            f"{type_name}: unsupported version {version!r} (this build reads {cls.VERSION})"
        )
    return _fields_from_dict(cls, doc.get("data"))


def from_json(data: bytes | str) -> Record:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RecordDecodeError(f"not JSON: {exc}") from None
    return from_dict(doc)
