#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/.

The seeds are committed; rerun this only to change them:
    python3 fuzz/make_seeds.py
Protobuf messages are encoded by hand (the wire format is small), so this needs
nothing beyond Python 3. The layouts of modbus_decode and authority_shim inputs
are documented at the top of their targets.
"""

import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


# --- protobuf wire format ------------------------------------------------------


def varint(n):
    n &= (1 << 64) - 1  # negative int32/int64 are ten-byte two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def f_varint(field, n):
    return key(field, 0) + varint(n)


def f_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return key(field, 2) + varint(len(b)) + b


def f_fixed32(field, raw):
    return key(field, 5) + raw


def f_fixed64(field, raw):
    return key(field, 1) + raw


# --- config_data: CustomizedValue { map<string, google.protobuf.Any> data = 1; }

TYPE = "type.googleapis.com/google.protobuf."


def any_(name, payload):
    return f_bytes(1, TYPE + name) + f_bytes(2, payload)


def string(s):
    return any_("StringValue", f_bytes(1, s))


def boolean(b):
    return any_("BoolValue", f_varint(1, int(b)))


def float32(x):  # what stock EdgeCore sends for every number
    return any_("FloatValue", f_fixed32(1, struct.pack("<f", x)))


def double(x):
    return any_("DoubleValue", f_fixed64(1, struct.pack("<d", x)))


def int64(n):
    return any_("Int64Value", f_varint(1, n))


def int32(n):
    return any_("Int32Value", f_varint(1, n))


def uint64(n):
    return any_("UInt64Value", f_varint(1, n))


def uint32(n):
    return any_("UInt32Value", f_varint(1, n))


def bytes_(b):
    return any_("BytesValue", f_bytes(1, b))


def customized(entries):
    return b"".join(f_bytes(1, f_bytes(1, k) + f_bytes(2, v)) for k, v in entries)


def config_data_seeds():
    # examples/devices/boiler.yaml: the protocol and the visitors, stock encoding.
    write("config_data", "boiler-protocol", customized([
        ("ip", string("127.0.0.1")), ("port", float32(15020)),
        ("slaveID", float32(1)), ("timeout", float32(500)),
    ]))
    write("config_data", "boiler-temperature-visitor", customized([
        ("register", string("HoldingRegister")), ("offset", float32(0)),
        ("limit", float32(1)), ("dataType", string("int16")), ("scale", float32(0.1)),
    ]))
    write("config_data", "boiler-pump-visitor", customized([
        ("register", string("CoilRegister")), ("offset", float32(0)),
    ]))
    # examples/devices/thermostat.yaml: mapper-virtual's visitor.
    write("config_data", "thermostat-visitor", customized([
        ("pattern", string("sine")), ("value", float32(21)), ("amplitude", float32(1.5)),
        ("periodMs", float32(30000)), ("connectDelayMs", float32(50)),
    ]))
    # The lossless encoding between Rust peers, and every other wrapper type.
    write("config_data", "lossless-and-every-wrapper", customized([
        ("port", int64(15020)), ("big", uint64(2**64 - 1)), ("neg", int32(-5)),
        ("u32", uint32(4000000000)), ("scale", double(0.01)), ("tls", boolean(True)),
        ("cert", bytes_(b"-----BEGIN CERTIFICATE-----")), ("huge", double(1e300)),
    ]))


# --- report_validation: ReportDeviceStatusRequest ---------------------------------


def twin_property(value, metadata=()):
    return f_bytes(1, value) + b"".join(
        f_bytes(2, f_bytes(1, k) + f_bytes(2, v)) for k, v in metadata)


def twin(name, reported=None, desired=None):
    out = f_bytes(1, name)
    if desired is not None:
        out += f_bytes(2, desired)
    if reported is not None:
        out += f_bytes(3, reported)
    return out


def report(name, namespace, twins, report_to_cloud=True, cycle=2000):
    status = b"".join(f_bytes(1, t) for t in twins)
    status += f_varint(2, int(report_to_cloud)) + f_varint(3, cycle)
    return f_bytes(1, name) + f_bytes(2, status) + f_bytes(3, namespace)


def report_seeds():
    meta = [("type", "FLOAT"), ("timestamp", "1767225600000")]
    # What mapper-virtual reports for examples/devices/thermostat.yaml.
    write("report_validation", "thermostat-valid", report("thermostat-1", "default", [
        twin("temperature", twin_property("21.5", meta), twin_property("", [("type", "FLOAT")])),
        twin("setpoint", twin_property("22", [("type", "INT")]), twin_property("22", [("type", "INT")])),
        twin("heating", twin_property("true", [("type", "BOOLEAN")]), twin_property("on")),
    ]))
    # Refused: a name outside the charset, no reported value, a value with a space.
    write("report_validation", "refused-name", report("boiler-1", "", [
        twin("temp erature", twin_property("1"), twin_property("")),
    ]))
    write("report_validation", "refused-no-reported", report("boiler-1", "default", [
        twin("pump", None, twin_property("true")),
    ]))
    write("report_validation", "refused-value", report("boiler-1", "default", [
        twin("pressure", twin_property("1.8 bar"), twin_property("")),
    ]))


# --- modbus_decode: the layout documented in fuzz_targets/modbus_decode.rs -------

TABLE = {"HoldingRegister": 0, "InputRegister": 1, "CoilRegister": 2, "DiscreteInputRegister": 3}
DATA_TYPE = {None: 0, "bool": 1, "int16": 3, "uint16": 4, "int32": 5, "uint32": 6, "int64": 7,
             "uint64": 8, "float32": 9, "float64": 11, "string": 13, "bit": 14}
MODEL = {None: 0, "INT": 1, "FLOAT": 2, "DOUBLE": 3, "STRING": 4, "BOOLEAN": 5, "BYTES": 6}
NUMBER = {None: 0, 1.0: 1, 0.1: 2, 0.01: 3, 10.0: 5, -40.0: 8}  # selector = index in NUMBERS + 1


def modbus(table, offset, limit=None, data_type=None, model=None, swap=False, word_swap=False,
           bit=None, encoding=None, scale=None, value_offset=None, words=(), value=b""):
    flags = int(swap) | int(word_swap) << 1 | (4 if bit is not None else 0)
    if encoding is not None:
        flags |= 8 | (16 if encoding == "utf8" else 0)
    flags |= MODEL[model] << 5
    raw = b""
    sels = []
    for n in (scale, value_offset):
        if n in NUMBER:
            sels.append(NUMBER[n])
        else:
            sels.append(255)
            raw += struct.pack(">d", n)
    head = bytes([TABLE[table]]) + struct.pack(">H", offset)
    head += bytes([limit or 0, DATA_TYPE[data_type], flags, sels[0], sels[1], bit or 0])
    return head + raw + b"".join(struct.pack(">H", w) for w in words) + value


def v_int(n):
    return bytes([1]) + struct.pack(">q", n)


def v_float(x):
    return bytes([2]) + struct.pack(">d", x)


V_TRUE = bytes([0x85])  # selector 133: 133 % 7 == 0 (a bool), bit 7 set (true)


def v_string(s):
    return bytes([4]) + s.encode()


def modbus_seeds():
    # examples/devices/boiler.yaml, with what examples/modbus/plant-sim.yaml serves.
    write("modbus_decode", "boiler-temperature", modbus(
        "HoldingRegister", 0, 1, "int16", "FLOAT", scale=0.1, words=[650], value=v_float(65.5)))
    write("modbus_decode", "boiler-pressure", modbus(
        "InputRegister", 0, 2, None, "FLOAT", words=[0x3FE6, 0x6666], value=v_float(1.8)))
    write("modbus_decode", "boiler-setpoint", modbus(
        "HoldingRegister", 10, 1, None, "INT", words=[55], value=v_int(60)))
    write("modbus_decode", "boiler-pump", modbus(
        "CoilRegister", 0, None, None, "BOOLEAN", words=[1], value=V_TRUE))
    # The extensions: text, one bit, swapped 64-bit values, scale with an offset.
    write("modbus_decode", "string-utf8", modbus(
        "HoldingRegister", 100, 4, "string", "STRING", encoding="utf8",
        words=[0x4142, 0x4344, 0x2000, 0x0000], value=v_string("hi")))
    write("modbus_decode", "bit-3", modbus(
        "HoldingRegister", 5, None, "bit", "BOOLEAN", bit=3, words=[0x0008], value=V_TRUE))
    write("modbus_decode", "float64-swapped", modbus(
        "InputRegister", 200, 4, "float64", "DOUBLE", swap=True, word_swap=True,
        words=[0x0000, 0x0000, 0x0000, 0x4059], value=v_float(-2.25)))
    write("modbus_decode", "int32-scale-offset", modbus(
        "HoldingRegister", 65534, 2, "int32", "FLOAT", scale=0.01, value_offset=-40.0,
        words=[0xFFFF, 0xFF00], value=v_float(22.5)))
    write("modbus_decode", "uint64-raw-scale", modbus(
        "HoldingRegister", 300, 4, "uint64", "INT", scale=0.5,
        value_offset=1e-3, words=[0xFFFF] * 4, value=v_int(-1)))


# --- yaml_source: the example devices, and two hostile documents ----------------------


def yaml_seeds():
    for f in sorted((ROOT / "examples" / "devices").glob("*.yaml")):
        write("yaml_source", f.name, f.read_bytes())
    write("yaml_source", "deep-nesting.yaml", b"a: " + b"[" * 300 + b"]" * 300 + b"\n")
    laughs = b"a: &a [x, x, x, x, x, x, x, x, x]\n"
    for prev, cur in zip("abcdefgh", "bcdefghi"):
        laughs += f"{cur}: &{cur} [".encode() + b", ".join([f"*{prev}".encode()] * 9) + b"]\n"
    write("yaml_source", "alias-expansion.yaml", b"apiVersion: v1\nkind: Device\n" + laughs)


# --- authority_shim: the layout documented in fuzz_targets/authority_shim.rs ----------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def grpc_go_block(first):
    """A header block as grpc-go writes it over a Unix socket (see authority.rs tests)."""
    authority = b"%2Fetc%2Fkubeedge%2Fdmi.sock"
    path = b"/v1beta1.DeviceManagerService/MapperRegister"
    b = bytes([0x83, 0x86, 0x04, len(path)]) + path  # POST, http, :path literal
    if first:
        b += bytes([0x41, len(authority)]) + authority  # :authority, incremental indexing
    else:
        b += bytes([0xBE])  # dynamic index 62: that authority
    b += bytes([0x5F, 16]) + b"application/grpc"  # content-type, incremental indexing
    return b


def records(parts):
    out = b""
    for op, data in parts:
        for i in range(0, len(data), 255):
            chunk = data[i:i + 255]
            out += bytes([op, len(chunk)]) + chunk
    return out


def hpack_int(n, prefix, first_bits):
    """An HPACK integer (RFC 7541 5.1) with an n-bit prefix."""
    top = (1 << prefix) - 1
    if n < top:
        return bytes([first_bits | n])
    out = bytearray([first_bits | top])
    n -= top
    while n >= 128:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def shim_seeds():
    settings = frame(0x4, 0, 0, b"")
    h1 = frame(0x1, 0x4, 1, grpc_go_block(True))
    data = frame(0x0, 0x1, 1, b"\0\0\0\0\x02\x08\x01")
    h3 = frame(0x1, 0x4 | 0x1, 3, grpc_go_block(False))
    client = PREFACE + settings + h1 + data + h3
    write("authority_shim", "grpc-go-two-requests", b"\x00" + client)
    # The same, interleaved with the server's side: SETTINGS, its ACK, responses.
    response = frame(0x1, 0x4, 1, bytes([0x88])) + frame(0x0, 0x1, 1, b"\0\0\0\0\0")
    write("authority_shim", "grpc-go-with-server-writes", b"\x02" + records([
        (0, PREFACE + settings), (1, settings + frame(0x4, 0x1, 0, b"")),
        (0, h1[:7]), (0, h1[7:] + data), (1, response), (0, h3),
        (1, frame(0x3, 0, 3, b"\0\0\0\x08")),
    ]))
    # A valid authority, padding, priority and CONTINUATION; small limits.
    block = bytes([0x83, 0x86, 0x41, 9]) + b"localhost" + bytes([0x40, 5]) + b"x-big" + hpack_int(300, 7, 0x00) + b"a" * 300
    first = bytes([3]) + b"\0\0\0\0\x10" + block[:40] + b"\0\0\0"
    cont = frame(0x1, 0x8 | 0x20, 5, first) + frame(0x9, 0, 5, block[40:200]) + frame(0x9, 0x4, 5, block[200:])
    write("authority_shim", "continuation-padding-priority", b"\x00" + PREFACE + cont)
    write("authority_shim", "continuation-small-limits", b"\x05" + cont)
    # A dynamic table size update, then an oversized header block.
    write("authority_shim", "table-size-update", b"\x04" + frame(0x1, 0x5, 1, hpack_int(4096, 5, 0x20) + grpc_go_block(True)))
    write("authority_shim", "oversized-block", b"\x05" + frame(0x1, 0x0, 1, b"\x00" * 600))


if __name__ == "__main__":
    config_data_seeds()
    report_seeds()
    modbus_seeds()
    yaml_seeds()
    shim_seeds()
    for d in sorted(CORPUS.iterdir()):
        files = list(d.iterdir())
        print(f"{d.relative_to(ROOT)}: {len(files)} seeds, {sum(f.stat().st_size for f in files)} bytes")
