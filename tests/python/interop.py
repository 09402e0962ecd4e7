#!/usr/bin/env python3
"""A DMI v1beta1 peer written with grpcio, to check the wire format from outside Rust.

Stubs are generated from the project's api.proto at run time. Every channel sets
`grpc.default_authority` to the percent-encoded socket path, which is what grpc-go
(stock KubeEdge mappers and EdgeCore) sends as the HTTP/2 :authority.

  go-mapper: plays a stock Go mapper against edgecore-dmi
  edgecore:  plays stock EdgeCore against a Rust mapper
  refusing-mapper: a Go mapper that refuses devices named refuse-* (gRPC Unknown,
             as grpc-go sends a plain Go error) and prints every call it gets
"""
import argparse
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent import futures


def stubs(proto, workdir):
    os.makedirs(workdir, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", os.path.dirname(proto),
         "--python_out", workdir, "--grpc_python_out", workdir, os.path.basename(proto)],
        check=True,
    )
    sys.path.insert(0, workdir)
    import api_pb2  # noqa: E402
    import api_pb2_grpc  # noqa: E402
    return api_pb2, api_pb2_grpc


def channel(grpc, path):
    # What grpc-go sends: the dialled path, percent-encoded.
    authority = urllib.parse.quote(path, safe="")
    return grpc.insecure_channel("unix://" + path, options=[("grpc.default_authority", authority)])


def check(cond, msg):
    if not cond:
        raise SystemExit("FAIL: " + msg)


def unpack(any_value):
    from google.protobuf import wrappers_pb2
    name = any_value.type_url.rsplit("/", 1)[-1]
    cls = {
        "google.protobuf.StringValue": wrappers_pb2.StringValue,
        "google.protobuf.BoolValue": wrappers_pb2.BoolValue,
        "google.protobuf.FloatValue": wrappers_pb2.FloatValue,
        "google.protobuf.DoubleValue": wrappers_pb2.DoubleValue,
        "google.protobuf.Int32Value": wrappers_pb2.Int32Value,
        "google.protobuf.Int64Value": wrappers_pb2.Int64Value,
    }[name]
    msg = cls()
    any_value.Unpack(msg)
    return name.split(".")[-1], msg.value


def pack(msg):
    from google.protobuf import any_pb2
    a = any_pb2.Any()
    a.Pack(msg)
    return a


def go_mapper(args, pb, pbg):
    import grpc

    class Mapper(pbg.DeviceMapperServiceServicer):
        def RegisterDevice(self, req, ctx):
            return pb.RegisterDeviceResponse(deviceName=req.device.name, deviceNamespace=req.device.namespace)

        def CreateDeviceModel(self, req, ctx):
            return pb.CreateDeviceModelResponse(deviceModelName=req.model.name, deviceModelNamespace=req.model.namespace)

        def UpdateDevice(self, req, ctx):
            return pb.UpdateDeviceResponse()

        def UpdateDeviceModel(self, req, ctx):
            return pb.UpdateDeviceModelResponse()

        def RemoveDevice(self, req, ctx):
            return pb.RemoveDeviceResponse()

        def RemoveDeviceModel(self, req, ctx):
            return pb.RemoveDeviceModelResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pbg.add_DeviceMapperServiceServicer_to_server(Mapper(), server)
    server.add_insecure_port("unix://" + args.socket)
    server.start()

    stub = pbg.DeviceManagerServiceStub(channel(grpc, args.edgecore))
    info = pb.MapperInfo(name="py-mapper", version="v1.23.0", api_version="v1.0.0", protocol="virtual",
                         address=args.socket.encode(), state="ok")
    resp = stub.MapperRegister(pb.MapperRegisterRequest(withData=True, mapper=info), timeout=10)
    names = [d.name for d in resp.deviceList]
    check(names == ["thermostat-1"], "deviceList %r" % names)
    check([m.name for m in resp.modelList] == ["thermostat-model"], "modelList %r" % [m.name for m in resp.modelList])
    dev = resp.deviceList[0]
    check(dev.namespace == "default" and dev.spec.deviceModelReference == "thermostat-model", "device header")
    proto_cfg = {k: unpack(v) for k, v in dev.spec.protocol.configData.data.items()}
    check(proto_cfg == {"connectDelayMs": ("FloatValue", 50.0)}, "protocol configData %r" % proto_cfg)
    # Stock EdgeCore always sets these sub-messages and Go mappers dereference them
    # without nil checks (a ReadOnly sensor has no desired value in the YAML).
    check(dev.HasField("spec") and dev.HasField("status") and dev.spec.HasField("protocol")
          and dev.spec.protocol.HasField("configData"), "device sub-messages present")
    for p in dev.spec.properties:
        check(p.HasField("desired") and p.HasField("visitors") and p.visitors.HasField("configData"),
              "property %s: desired, visitors and visitors.configData present" % p.name)
    props = {p.name: p for p in dev.spec.properties}
    check(props["temperature"].desired.value == "", "a property without desired gets desired.value ''")
    temp = {k: unpack(v) for k, v in props["temperature"].visitors.configData.data.items()}
    check(temp["pattern"] == ("StringValue", "sine"), "visitor string %r" % temp)
    check(temp["value"] == ("FloatValue", 21.0), "visitor number as FloatValue %r" % temp)
    check(props["setpoint"].desired.value == "22", "desired value")
    check(props["temperature"].collectCycle == 1000, "collectCycle")
    check(dev.status.reportToCloud and dev.status.reportCycle == 2000, "state report settings")

    twin = pb.Twin(propertyName="temperature",
                   reported=pb.TwinProperty(value="23.5", metadata={"type": "float", "timestamp": "1"}),
                   observedDesired=pb.TwinProperty(value=""))
    # As mapper-framework reports a ReadWrite property: observedDesired carries the
    # desired value, no status metadata.
    applied = pb.Twin(propertyName="setpoint",
                      reported=pb.TwinProperty(value="22", metadata={"type": "int", "timestamp": "1"}),
                      observedDesired=pb.TwinProperty(value="22", metadata={"type": "int", "timestamp": "1"}))
    stub.ReportDeviceStatus(pb.ReportDeviceStatusRequest(deviceName="thermostat-1", deviceNamespace="default",
                                                         reportedDevice=pb.DeviceStatus(twins=[twin, applied])),
                            timeout=5)
    stub.ReportDeviceStates(pb.ReportDeviceStatesRequest(deviceName="thermostat-1", deviceNamespace="default",
                                                         state="online"), timeout=5)
    bad = pb.Twin(propertyName="temperature", reported=pb.TwinProperty(value="23.5 C"),
                  observedDesired=pb.TwinProperty(value=""))
    try:
        stub.ReportDeviceStatus(pb.ReportDeviceStatusRequest(deviceName="thermostat-1", deviceNamespace="default",
                                                             reportedDevice=pb.DeviceStatus(twins=[bad])), timeout=5)
        check(False, "a twin value with a space was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT, "code %s" % e.code())
    server.stop(0)
    print("OK go-mapper")


def edgecore(args, pb, pbg):
    import grpc
    from google.protobuf import wrappers_pb2

    registered = queue.Queue()
    reports = queue.Queue()
    states = queue.Queue()

    class Manager(pbg.DeviceManagerServiceServicer):
        def MapperRegister(self, req, ctx):
            registered.put(req)
            return pb.MapperRegisterResponse()

        def ReportDeviceStatus(self, req, ctx):
            reports.put(req)
            return pb.ReportDeviceStatusResponse()

        def ReportDeviceStates(self, req, ctx):
            states.put(req)
            return pb.ReportDeviceStatesResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pbg.add_DeviceManagerServiceServicer_to_server(Manager(), server)
    server.add_insecure_port("unix://" + args.listen)
    server.start()

    reg = registered.get(timeout=30)
    check(reg.withData, "withData")
    check(reg.mapper.protocol == "virtual" and reg.mapper.name, "mapper info %r" % reg.mapper)
    check(reg.mapper.address == args.mapper.encode(), "address %r" % reg.mapper.address)

    # Wait for the mapper's own socket, then talk to it as grpc-go would.
    deadline = time.time() + 20
    while not os.path.exists(args.mapper) and time.time() < deadline:
        time.sleep(0.05)
    stub = pbg.DeviceMapperServiceStub(channel(grpc, args.mapper))

    def cv(**kw):
        return pb.CustomizedValue(data={k: pack(v) for k, v in kw.items()})

    def device(setpoint):
        return pb.Device(
            name="py-dev", namespace="default",
            spec=pb.DeviceSpec(
                deviceModelReference="py-model",
                protocol=pb.ProtocolConfig(protocolName="virtual",
                                           configData=cv(connectDelayMs=wrappers_pb2.FloatValue(value=0.0))),
                properties=[
                    pb.DeviceProperty(name="temp", collectCycle=200, reportToCloud=True,
                                      visitors=pb.VisitorConfig(protocolName="virtual", configData=cv(
                                          pattern=wrappers_pb2.StringValue(value="constant"),
                                          value=wrappers_pb2.FloatValue(value=21.5)))),
                    pb.DeviceProperty(name="setpoint", collectCycle=200, reportToCloud=True,
                                      desired=pb.TwinProperty(value=setpoint),
                                      visitors=pb.VisitorConfig(protocolName="virtual", configData=cv(
                                          pattern=wrappers_pb2.StringValue(value="setpoint"),
                                          value=wrappers_pb2.FloatValue(value=10.0)))),
                ]),
            status=pb.DeviceStatus(reportToCloud=True, reportCycle=500))

    model = pb.DeviceModel(name="py-model", namespace="default", spec=pb.DeviceModelSpec(properties=[
        pb.ModelProperty(name="temp", type="FLOAT", accessMode="ReadOnly"),
        pb.ModelProperty(name="setpoint", type="INT", accessMode="ReadWrite", minimum="0", maximum="100"),
    ]))
    # RegisterDevice before CreateDeviceModel, as EdgeCore may send them.
    r = stub.RegisterDevice(pb.RegisterDeviceRequest(device=device("40")), timeout=10)
    check(r.deviceName == "py-dev" and r.deviceNamespace == "default", "RegisterDevice response")
    stub.CreateDeviceModel(pb.CreateDeviceModelRequest(model=model), timeout=10)

    def wait_twins(want, timeout=20):
        deadline = time.time() + timeout
        seen = {}
        while time.time() < deadline:
            try:
                rep = reports.get(timeout=0.5)
            except queue.Empty:
                continue
            check(rep.deviceName == "py-dev" and rep.deviceNamespace == "default", "report device")
            for t in rep.reportedDevice.twins:
                check(t.HasField("reported") and t.HasField("observedDesired"), "both twin halves set")
                seen[t.propertyName] = (t.reported.value, t.observedDesired.value,
                                        dict(t.observedDesired.metadata))
            if all(seen.get(k, (None,))[0] == v for k, v in want.items()):
                return seen
        raise SystemExit("FAIL: twins %r never reached %r" % (seen, want))

    seen = wait_twins({"temp": "21.5", "setpoint": "40"})
    check(seen["setpoint"][1] == "40" and seen["setpoint"][2].get("status") == "applied", "observedDesired %r" % (seen,))

    # A new desired value travels in UpdateDevice.
    stub.UpdateDevice(pb.UpdateDeviceRequest(device=device("55")), timeout=10)
    wait_twins({"setpoint": "55"})
    # Out of range: rejected and reported as such, the device keeps its value.
    stub.UpdateDevice(pb.UpdateDeviceRequest(device=device("500")), timeout=10)
    deadline = time.time() + 20
    while True:
        seen = wait_twins({"setpoint": "55"})
        if seen["setpoint"][1] == "500":
            check(seen["setpoint"][2].get("status") == "rejected", "rejected status %r" % (seen,))
            check("above the maximum 100" in seen["setpoint"][2].get("reason", ""), "reason %r" % (seen,))
            break
        check(time.time() < deadline, "rejection never reported")

    st = states.get(timeout=10)
    check(st.state in ("online", "offline", "ok", "unknown", "unhealthy"), "state %r" % st.state)
    check(st.deviceName == "py-dev", "state device")

    got = stub.GetDevice(pb.GetDeviceRequest(deviceName="py-dev", deviceNamespace="default"), timeout=10)
    check({t.propertyName for t in got.device.status.twins} == {"temp", "setpoint"}, "GetDevice twins")

    # Nested/unknown Any types are refused with a message naming the key.
    broken = device("40")
    from google.protobuf import struct_pb2
    broken.spec.protocol.configData.data["conn"].CopyFrom(pack(struct_pb2.Struct()))
    try:
        stub.UpdateDevice(pb.UpdateDeviceRequest(device=broken), timeout=10)
        check(False, "an unsupported configData type was accepted")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.INVALID_ARGUMENT and "conn" in e.details(), "refusal %s %s" % (e.code(), e.details()))

    stub.RemoveDevice(pb.RemoveDeviceRequest(deviceName="py-dev", deviceNamespace="default"), timeout=10)
    try:
        stub.GetDevice(pb.GetDeviceRequest(deviceName="py-dev", deviceNamespace="default"), timeout=10)
        check(False, "device still there after RemoveDevice")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, "code after remove %s" % e.code())
    server.stop(0)
    print("OK edgecore")


def refusing_mapper(args, pb, pbg):
    import grpc

    def log(*parts):
        print(" ".join(parts), flush=True)

    class Mapper(pbg.DeviceMapperServiceServicer):
        def device_call(self, kind, req, ctx, resp):
            key = "%s/%s" % (req.device.namespace, req.device.name)
            if req.device.name.startswith("refuse-"):
                log("REFUSED", kind, key)
                ctx.abort(grpc.StatusCode.UNKNOWN, "add device %s failed: unsupported visitor" % key)
            log("CALL", kind, key)
            return resp

        def RegisterDevice(self, req, ctx):
            return self.device_call("RegisterDevice", req, ctx, pb.RegisterDeviceResponse(
                deviceName=req.device.name, deviceNamespace=req.device.namespace))

        def UpdateDevice(self, req, ctx):
            return self.device_call("UpdateDevice", req, ctx, pb.UpdateDeviceResponse())

        def CreateDeviceModel(self, req, ctx):
            log("CALL", "CreateDeviceModel", "%s/%s" % (req.model.namespace, req.model.name))
            return pb.CreateDeviceModelResponse(deviceModelName=req.model.name,
                                                deviceModelNamespace=req.model.namespace)

        def UpdateDeviceModel(self, req, ctx):
            return pb.UpdateDeviceModelResponse()

        def RemoveDevice(self, req, ctx):
            log("CALL", "RemoveDevice", "%s/%s" % (req.deviceNamespace, req.deviceName))
            return pb.RemoveDeviceResponse()

        def RemoveDeviceModel(self, req, ctx):
            return pb.RemoveDeviceModelResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pbg.add_DeviceMapperServiceServicer_to_server(Mapper(), server)
    server.add_insecure_port("unix://" + args.socket)
    server.start()
    stub = pbg.DeviceManagerServiceStub(channel(grpc, args.edgecore))
    info = pb.MapperInfo(name="py-mapper", version="v1.23.0", api_version="v1.0.0", protocol="virtual",
                         address=args.socket.encode(), state="ok")
    # withData=false: everything arrives through RegisterDevice, where refusals happen.
    stub.MapperRegister(pb.MapperRegisterRequest(withData=False, mapper=info), timeout=10)
    log("REGISTERED")
    server.wait_for_termination()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proto", required=True)
    ap.add_argument("--workdir", required=True)
    sub = ap.add_subparsers(dest="mode", required=True)
    g = sub.add_parser("go-mapper")
    g.add_argument("--edgecore", required=True)
    g.add_argument("--socket", required=True)
    e = sub.add_parser("edgecore")
    e.add_argument("--listen", required=True)
    e.add_argument("--mapper", required=True)
    r = sub.add_parser("refusing-mapper")
    r.add_argument("--edgecore", required=True)
    r.add_argument("--socket", required=True)
    args = ap.parse_args()
    pb, pbg = stubs(args.proto, args.workdir)
    {"go-mapper": go_mapper, "edgecore": edgecore, "refusing-mapper": refusing_mapper}[args.mode](args, pb, pbg)


if __name__ == "__main__":
    main()
