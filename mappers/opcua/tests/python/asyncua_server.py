"""An independent OPC-UA server for mapper-opcua's tests: Python asyncua.

Variables under Objects/Plant in namespace `urn:edge-dmi:test:plant`, with
string NodeIds named like the variables (`ns=<index>;s=Int16`): one of every
built-in type the mapper supports, arrays, writable set-points and a counter.

    asyncua_server.py --port P [--security none|sign|encrypt] [--policy POLICY]
                      [--user NAME:PASSWORD] [--certs DIR]

`--security sign|encrypt` serves one endpoint, `--policy` (default
Basic256Sha256; also Basic128Rsa15, Basic256, Aes128Sha256RsaOaep,
Aes256Sha256RsaPss) with Sign or SignAndEncrypt only (with a self-signed
certificate made in DIR: server_cert.der, server_key.pem); `--user` accepts
only that user (no anonymous access).
Prints `READY <namespace index>` when serving; stops when stdin closes.
"""

import argparse
import asyncio
import datetime
import sys
import uuid
from pathlib import Path

from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.user_managers import UserManager

URI = "urn:edge-dmi:test:plant"


class OneUser(UserManager):
    def __init__(self, name, password):
        self.name, self.password = name, password

    def get_user(self, iserver, username=None, password=None, certificate=None):
        if username == self.name and password == self.password:
            return User(role=UserRole.User)
        return None


VALUES = [
    ("Bool", True, ua.VariantType.Boolean),
    ("SByte", -5, ua.VariantType.SByte),
    ("Byte", 200, ua.VariantType.Byte),
    ("Int16", -300, ua.VariantType.Int16),
    ("UInt16", 60000, ua.VariantType.UInt16),
    ("Int32", -70000, ua.VariantType.Int32),
    ("UInt32", 4000000000, ua.VariantType.UInt32),
    ("Int64", -9000000000, ua.VariantType.Int64),
    ("UInt64", 42, ua.VariantType.UInt64),
    ("Float", 0.1, ua.VariantType.Float),
    ("Double", 2.5, ua.VariantType.Double),
    ("String", "hello", ua.VariantType.String),
    ("DateTime", datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc), ua.VariantType.DateTime),
    ("ByteString", b"\x01\xab", ua.VariantType.ByteString),
    ("LocalizedText", ua.LocalizedText("Pump", "en"), ua.VariantType.LocalizedText),
    ("Guid", uuid.UUID("72962b91-fa75-4ae6-8d28-b404dc7daf63"), ua.VariantType.Guid),
    ("Int32Array", [1, -2, 3], ua.VariantType.Int32),
    ("DoubleArray", [1.5, -2.0], ua.VariantType.Double),
]

WRITABLE = [
    ("SetInt16", 0, ua.VariantType.Int16),
    ("SetByte", 0, ua.VariantType.Byte),
    ("SetUInt32", 0, ua.VariantType.UInt32),
    ("SetFloat", 0.0, ua.VariantType.Float),
    ("SetDouble", 0.0, ua.VariantType.Double),
    ("SetBool", False, ua.VariantType.Boolean),
    ("SetString", "", ua.VariantType.String),
    ("SetDateTime", datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), ua.VariantType.DateTime),
    ("SetGuid", uuid.UUID(int=0), ua.VariantType.Guid),
    ("SetLocalizedText", ua.LocalizedText("", ""), ua.VariantType.LocalizedText),
    ("SetInt32Array", [0, 0], ua.VariantType.Int32),
]


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--security", choices=["none", "sign", "encrypt"], default="none")
    ap.add_argument(
        "--policy",
        choices=["Basic128Rsa15", "Basic256", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss"],
        default="Basic256Sha256",
    )
    ap.add_argument("--user")
    ap.add_argument("--certs")
    a = ap.parse_args()

    manager = None
    if a.user:
        name, password = a.user.split(":", 1)
        manager = OneUser(name, password)
    server = Server(user_manager=manager)
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{a.port}/test")
    server.set_server_name("edge-dmi test plant")
    if a.security != "none":
        from asyncua.crypto.cert_gen import setup_self_signed_certificate
        from cryptography.x509.oid import ExtendedKeyUsageOID

        certs = Path(a.certs)
        certs.mkdir(parents=True, exist_ok=True)
        key, cert = certs / "server_key.pem", certs / "server_cert.der"
        await server.set_application_uri("urn:edge-dmi:test:server")
        await setup_self_signed_certificate(
            key, cert, "urn:edge-dmi:test:server", "127.0.0.1",
            [ExtendedKeyUsageOID.SERVER_AUTH], {"commonName": "edge-dmi test plant"},
        )
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
        mode = "SignAndEncrypt" if a.security == "encrypt" else "Sign"
        server.set_security_policy([ua.SecurityPolicyType[f"{a.policy}_{mode}"]])
    if a.user:
        server.set_identity_tokens([ua.UserNameIdentityToken])

    idx = await server.register_namespace(URI)
    plant = await server.nodes.objects.add_object(ua.NodeId("Plant", idx), ua.QualifiedName("Plant", idx))
    for name, value, vt in VALUES:
        await plant.add_variable(ua.NodeId(name, idx), ua.QualifiedName(name, idx), ua.Variant(value, vt))
    for name, value, vt in WRITABLE:
        v = await plant.add_variable(ua.NodeId(name, idx), ua.QualifiedName(name, idx), ua.Variant(value, vt))
        await v.set_writable()
    counter = await plant.add_variable(
        ua.NodeId("Counter", idx), ua.QualifiedName("Counter", idx), ua.Variant(0, ua.VariantType.Int32)
    )

    async with server:
        print(f"READY {idx}", flush=True)
        loop = asyncio.get_running_loop()
        stdin_closed = loop.run_in_executor(None, sys.stdin.read)
        n = 0
        while not stdin_closed.done():
            await asyncio.sleep(0.1)
            n += 1
            await counter.write_value(ua.Variant(n, ua.VariantType.Int32))


if __name__ == "__main__":
    asyncio.run(main())
