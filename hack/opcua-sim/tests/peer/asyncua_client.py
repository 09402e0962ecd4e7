"""An independent OPC-UA client (python asyncua) against opcua-sim serving
hack/opcua-sim/examples/plant.yaml. Prints one `name value` line per check;
tests/asyncua_peer.rs compares them. Usage: asyncua_client.py URL WORKDIR"""
import asyncio
import sys
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from cryptography.x509.oid import ExtendedKeyUsageOID


def say(name, value):
    print(f"{name} {value}", flush=True)


async def main(url, work):
    async with Client(url) as c:
        ns = await c.get_namespace_index("urn:edge-dmi:opcua-sim")
        say("namespace", ns)
        plant = await c.nodes.objects.get_child([f"{ns}:Plant"])
        boiler = await plant.get_child([f"{ns}:Boiler"])
        names = sorted([(await n.read_browse_name()).Name for n in await boiler.get_children()])
        say("boiler", ",".join(names))
        temp = c.get_node(f"ns={ns};s=Boiler.Temperature")
        say("temperature", await temp.read_value())
        setpoint = c.get_node(f"ns={ns};s=Boiler.Setpoint")
        await setpoint.write_value(ua.DataValue(ua.Variant(55.5, ua.VariantType.Double)))
        say("setpoint", await setpoint.read_value())
        try:
            await temp.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
            say("readonly", "written")
        except ua.UaStatusCodeError as e:
            say("readonly", type(e).__name__)
        zones = await c.get_node(f"ns={ns};s=Boiler.ZoneTemperatures").read_value()
        say("zones", len(zones))
        say("serial", await c.get_node(f"ns={ns};i=2003").read_value())
        model = await c.get_node(f"ns={ns};i=2004").read_value()
        say("model", f"{model.Locale}/{model.Text}")
        say("installed", (await c.get_node(f"ns={ns};i=2005").read_value()).isoformat())
        say("id", await c.get_node(f"ns={ns};i=2006").read_value())
        say("firmware", (await c.get_node(f"ns={ns};i=2007").read_value()).hex())
        say("mode", await c.get_node(f"ns={ns};i=2008").read_value())

    key, cert = Path(work, "client-key.pem"), Path(work, "client-cert.der")
    await setup_self_signed_certificate(
        key, cert, "urn:edge-dmi:opcua-sim:asyncua-peer", "localhost",
        [ExtendedKeyUsageOID.CLIENT_AUTH], {"commonName": "asyncua-peer"})
    c = Client(url)
    c.set_user("operator")
    c.set_password("operator-secret")
    await c.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key),
                         mode=ua.MessageSecurityMode.SignAndEncrypt)
    async with c:
        say("secure", await c.get_node("ns=2;s=Boiler.Setpoint").read_value())


asyncio.run(main(sys.argv[1], sys.argv[2]))
