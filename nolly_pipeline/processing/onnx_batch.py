"""Give an ONNX graph's inputs and outputs a free batch dimension, without the ``onnx`` package.

DeepFilterNet3's export declares batch 1 on every input and output, and onnxruntime refuses
any other size, although nothing inside the graphs depends on it. Running several chunks as
one batch costs far less than one after the other (the GRUs step through time either way, a
batch of 4 in one step instead of 4 steps), and gives the same samples. ``onnx`` itself
could rewrite the declaration, but importing it takes about a second, in every run worker;
the edit is two bytes deep in protobuf's wire format, so it is done here on the bytes.

Wire format (https://protobuf.dev/programming-guides/encoding/): a message is a sequence of
fields, each a varint tag (field number << 3 | wire type) and a value: a varint (type 0), 8
bytes (1), a length-delimited run of bytes (2: strings and nested messages) or 4 bytes (5).
"""

from __future__ import annotations

from collections.abc import Callable

# Field numbers on the path from ModelProto to a dimension (onnx/onnx.proto).
_GRAPH = 7  # ModelProto.graph
_INPUT, _OUTPUT = 11, 12  # GraphProto.input / output: ValueInfoProto
_TYPE = 2  # ValueInfoProto.type: TypeProto
_TENSOR_TYPE = 1  # TypeProto.tensor_type
_SHAPE = 2  # TypeProto.Tensor.shape: TensorShapeProto
_DIM = 1  # TensorShapeProto.dim: Dimension
_DIM_PARAM = 2  # Dimension.dim_param: a symbolic size
_LEN = 2  # wire type of length-delimited values


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _fields(message: bytes) -> list[tuple[int, int, bytes]]:
    """``(field number, wire type, encoded field)`` for each field, in order."""
    fields, pos = [], 0
    while pos < len(message):
        start = pos
        tag, pos = _varint(message, pos)
        wire = tag & 7
        if wire == 0:
            _, pos = _varint(message, pos)
        elif wire == 1:
            pos += 8
        elif wire == _LEN:
            size, pos = _varint(message, pos)
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.append((tag >> 3, wire, message[start:pos]))
    return fields


def _payload(field: bytes) -> bytes:
    """The bytes of a length-delimited field's value."""
    _, pos = _varint(field, 0)
    size, pos = _varint(field, pos)
    return field[pos : pos + size]


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | _LEN) + _encode_varint(len(payload)) + payload


def _edit(message: bytes, numbers: tuple[int, ...], edit: Callable[[bytes], bytes]) -> bytes:
    """``message`` with ``edit`` applied to every nested message that ``numbers`` lead to."""
    out = bytearray()
    for number, wire, field in _fields(message):
        if number == numbers[0] and wire == _LEN:
            inner = _payload(field)
            inner = edit(inner) if len(numbers) == 1 else _edit(inner, numbers[1:], edit)
            field = _length_delimited(number, inner)
        out += field
    return bytes(out)


def _first_dim_symbolic(name: str) -> Callable[[bytes], bytes]:
    def edit(shape: bytes) -> bytes:
        fields = _fields(shape)
        first = next(i for i, (number, _, _) in enumerate(fields) if number == _DIM)
        fields[first] = (_DIM, _LEN, _length_delimited(_DIM, _length_delimited(_DIM_PARAM, name.encode())))
        return b"".join(field for _, _, field in fields)

    return edit


def with_free_batch(model: bytes, name: str = "batch") -> bytes:
    """The serialized model with the first dimension of every graph input and output made
    symbolic (``name``), so that onnxruntime accepts any batch size."""
    edit = _first_dim_symbolic(name)
    for numbers in ((_GRAPH, _INPUT, _TYPE, _TENSOR_TYPE, _SHAPE), (_GRAPH, _OUTPUT, _TYPE, _TENSOR_TYPE, _SHAPE)):
        model = _edit(model, numbers, edit)
    return model
