#!/usr/bin/env python3
"""Offline checks of the infra/azure Terraform module (no terraform binary needed).

Needs python-hcl2 8.x (`pip install python-hcl2`); Python >= 3.11 (tomllib).

    python3 infra/azure/check.py            # parse, structure, fixture, render every switch combination
    python3 infra/azure/check.py render     # alien-manager.toml sections for the example inputs
    python3 infra/azure/check.py render --enable-commands-store=false

The machinery is infra/aws/check.py's, loaded from that file: its HCL loader, the evaluator that
renders `output "config_values"` from testdata/plan-values.json (the same expression subset),
the fixture loader and the TOML writer know nothing of AWS. They read the module's interface
(required variables, switches, expected sections, fixture path) from module-level names, which
this file sets to infra/azure's. What is Azure's own is here: that interface, the names and
resource IDs Azure assigns (the fixture check), the three functions the global names are made
with (lower, sha256, substr: registry and storage account names carry a hash of the subscription
and resource group) and the value formats Azure imposes on what `config_values` holds.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "testdata" / "plan-values.json"

REQUIRED_VARIABLES = (
    "resource_group_name",
    "location",
    "name",
    "principal",
    "enable_artifact_registry",
    "enable_commands_store",
    "enable_impersonation",
)
SWITCHES = ("enable_artifact_registry", "enable_commands_store", "enable_impersonation")

# The exact shape config_values must have: section -> keys (nested dict = inline table).
EXPECTED_SECTIONS = {
    "enable_artifact_registry": {
        "artifact-registry.azure": {
            "service": "acr",
            "registryName": str,
            "resourceGroupName": str,
            "subscriptionId": str,
            "repositoryPrefix": str,
        }
    },
    "enable_commands_store": {
        "commands": {
            "kv": {
                "service": "tablestorage",
                "resourceGroupName": str,
                "subscriptionId": str,
                "accountName": str,
                "tableName": str,
            },
            "storage": {"service": "blob", "accountName": str, "containerName": str},
        }
    },
    "enable_impersonation": {
        "impersonation.azure": {
            "service": "azuremanagedidentity",
            "clientId": str,
            "resourceId": str,
            "principalId": str,
            "tenantId": str,
        }
    },
}

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
STORAGE_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
# Rendered values with a form of their own (dotted path in the TOML -> pattern).
VALUE_FORMATS = {
    "artifact-registry.azure.registryName": re.compile(r"^[a-z0-9]{5,50}$"),
    "artifact-registry.azure.resourceGroupName": RESOURCE_GROUP,
    # An OCI repository path component sequence: lowercase, separators ._- and /.
    "artifact-registry.azure.repositoryPrefix": re.compile(
        r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$"
    ),
    "commands.kv.resourceGroupName": RESOURCE_GROUP,
    "commands.kv.subscriptionId": GUID,
    "artifact-registry.azure.subscriptionId": GUID,
    "commands.kv.accountName": STORAGE_ACCOUNT,
    "commands.kv.tableName": re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$"),
    "commands.storage.accountName": STORAGE_ACCOUNT,
    "commands.storage.containerName": re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$"),
    "impersonation.azure.clientId": GUID,
    "impersonation.azure.principalId": GUID,
    "impersonation.azure.tenantId": GUID,
    "impersonation.azure.resourceId": re.compile(
        r"^/subscriptions/[0-9a-f-]{36}/resourceGroups/[^/]+/providers/"
        r"Microsoft\.ManagedIdentity/userAssignedIdentities/[^/]+$"
    ),
}


def load_library():
    """infra/aws/check.py as a private module instance, pointed at this module."""
    sys.dont_write_bytecode = True  # no __pycache__ next to infra/aws/check.py
    path = HERE.parent / "aws" / "check.py"
    spec = importlib.util.spec_from_file_location("infra_check_library", path)
    lib = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(lib)
    lib.HERE, lib.FIXTURE = HERE, FIXTURE
    lib.REQUIRED_VARIABLES, lib.SWITCHES = REQUIRED_VARIABLES, SWITCHES
    lib.EXPECTED_SECTIONS = EXPECTED_SECTIONS
    return lib


lib = load_library()
CheckError = lib.CheckError


# --------------------------------------------------------------------------------------------
# The functions the module's global names use, as Terraform defines them


def _string(name: str, v, where: str) -> str:
    if not isinstance(v, str):
        raise CheckError(f"{where}: {name}() expects a string, got {v!r}")
    return v


def _substr(s, offset, length, where: str) -> str:
    s = _string("substr", s, where)
    for v in (offset, length):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise CheckError(f"{where}: substr() takes non-negative whole numbers here, got {v!r}")
    return s[offset : offset + length]


FUNCTIONS = {
    "lower": (1, lambda s, where: _string("lower", s, where).lower()),
    "sha256": (1, lambda s, where: hashlib.sha256(_string("sha256", s, where).encode()).hexdigest()),
    "substr": (3, _substr),
}


class Evaluator(lib.Evaluator):
    """The library's evaluator, with the functions of FUNCTIONS."""

    def eval(self, node, where: str):
        if node.kind == "call" and node.args[0] in FUNCTIONS:
            name, args = node.args
            arity, fn = FUNCTIONS[name]
            if len(args) != arity:
                raise CheckError(f"{where}: {name}() takes {arity} arguments in {node.text!r}")
            return fn(*(self.eval(a, where) for a in args), where)
        return super().eval(node, where)


lib.Evaluator = Evaluator  # render() builds the library's Evaluator: this one


# --------------------------------------------------------------------------------------------
# Fixture: what Azure assigns, derived from what the module declares


def _arm_id(ctx: dict, d: dict, provider_type: str) -> str:
    return (
        f"/subscriptions/{ctx['subscription_id']}/resourceGroups/{d['resource_group_name']}"
        f"/providers/{provider_type}/{d['name']}"
    )


def _registry(d: dict, ctx: dict) -> dict:
    name = d["name"]
    return {
        "id": _arm_id(ctx, d, "Microsoft.ContainerRegistry/registries"),
        "login_server": f"{name}.azurecr.io",
    }


def _storage_account(d: dict, ctx: dict) -> dict:
    name = d["name"]
    return {
        "id": _arm_id(ctx, d, "Microsoft.Storage/storageAccounts"),
        "primary_blob_endpoint": f"https://{name}.blob.core.windows.net/",
        "primary_table_endpoint": f"https://{name}.table.core.windows.net/",
    }


def _container(d: dict, ctx: dict) -> dict:
    account = d["storage_account_id"].rsplit("/", 1)[-1]
    return {
        "id": f"{d['storage_account_id']}/blobServices/default/containers/{d['name']}",
        "url": f"https://{account}.blob.core.windows.net/{d['name']}",
    }


def _azapi(d: dict, ctx: dict) -> dict:
    resource_type = d["type"].split("@", 1)[0]
    last = resource_type.rsplit("/", 1)[-1]
    return {"id": f"{d['parent_id']}/{last}/{d['name']}"}


def _identity(d: dict, ctx: dict) -> dict:
    return {
        "id": _arm_id(ctx, d, "Microsoft.ManagedIdentity/userAssignedIdentities"),
        "tenant_id": ctx["tenant_id"],
    }


# type -> (attributes the module declares, the attributes Azure assigns from them); a declared
# attribute is expected verbatim unless the second overrides it.
FIXTURE_RULES = {
    "azurerm_container_registry": (
        ("name", "resource_group_name", "location", "sku"),
        _registry,
    ),
    "azurerm_storage_account": (
        ("name", "resource_group_name", "location", "account_kind", "account_replication_type"),
        _storage_account,
    ),
    "azurerm_storage_container": (("name", "storage_account_id"), _container),
    "azapi_resource": (("type", "name", "parent_id"), _azapi),
    "azurerm_user_assigned_identity": (("name", "resource_group_name", "location"), _identity),
}
# Attributes that are GUIDs Azure picks (any GUID will do, but a GUID it must be).
GUID_ATTRIBUTES = {
    "azurerm_client_config": ("client_id", "object_id", "subscription_id", "tenant_id"),
    "azurerm_user_assigned_identity": ("client_id", "principal_id"),
}


def client_config(fixture: dict) -> dict:
    recorded = fixture.get(("data", "azurerm_client_config", "current"), {}).get(None)
    if recorded is None:
        raise CheckError(f"{FIXTURE.name}: data.azurerm_client_config.current is missing")
    values = dict(recorded)
    fields = "clientId={client_id};objectId={object_id};subscriptionId={subscription_id};tenantId={tenant_id}"
    raw = "clientConfigs/" + fields.format(**values)
    expected_id = base64.b64encode(raw.encode()).decode()
    if values.get("id") != expected_id:
        raise CheckError(
            f"{FIXTURE.name}: data.azurerm_client_config.current.id is {values.get('id')!r}, "
            f"the provider sets base64({raw!r})"
        )
    return values


def check_guids(rtype: str, addr: str, values: dict) -> None:
    for attr in GUID_ATTRIBUTES.get(rtype, ()):
        if not GUID.fullmatch(str(values.get(attr))):
            raise CheckError(f"{FIXTURE.name}: {addr}.{attr} {values.get(attr)!r} is not a GUID")


def check_fixture(module: dict, fixture: dict, ev) -> int:
    ctx = client_config(fixture)
    n = 0
    for (mode, rtype, rname), recorded in fixture.items():
        kind = "resource" if mode == "managed" else "data"
        if (rtype, rname) not in module[kind]:
            raise CheckError(f"{FIXTURE.name}: {rtype}.{rname} is not declared in the module")
        if mode != "managed":
            check_guids(rtype, f"data.{rtype}.{rname}", recorded[None])
            continue
        if rtype not in FIXTURE_RULES:
            raise CheckError(f"{FIXTURE.name}: no naming rule for {rtype}; add one to FIXTURE_RULES")
        attrs, derive = FIXTURE_RULES[rtype]
        body = module["resource"][(rtype, rname)]
        for idx, values in recorded.items():
            addr = f"{rtype}.{rname}" + (f"[{idx}]" if idx is not None else "")
            declared = {a: ev.value(body[a], f"{addr}.{a}") for a in attrs}
            expected = {**declared, **derive(declared, ctx)}
            for attr, want in expected.items():
                if values.get(attr) != want:
                    raise CheckError(
                        f"{FIXTURE.name}: {addr}.{attr} is {values.get(attr)!r}, expected {want!r}"
                    )
            check_guids(rtype, addr, values)
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# Rendering


def check_formats(switches: dict, text: str) -> None:
    doc = tomllib.loads(text)
    for path, pattern in VALUE_FORMATS.items():
        node = doc
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            continue  # its section is switched off (check_rendering checked which are present)
        if not isinstance(node, str) or not pattern.fullmatch(node):
            raise CheckError(f"render {switches}: {path} = {node!r} does not match {pattern.pattern}")
    # One storage account holds the table and the container.
    kv = doc.get("commands", {}).get("kv", {})
    storage = doc.get("commands", {}).get("storage", {})
    if kv and storage and kv.get("accountName") != storage.get("accountName"):
        raise CheckError(
            f"render {switches}: commands.kv.accountName {kv.get('accountName')!r} and "
            f"commands.storage.accountName {storage.get('accountName')!r} differ"
        )


def render(module: dict, switches: dict) -> str:
    _, text = lib.render(module, switches)
    lib.check_rendering(switches, text)
    check_formats(switches, text)
    return text


# --------------------------------------------------------------------------------------------


def parse_bool(text: str) -> bool:
    if text in ("true", "false"):
        return text == "true"
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command")
    sub.add_parser("check", help="every check (the default)")
    rp = sub.add_parser("render", help="print config_values as alien-manager.toml")
    for switch in SWITCHES:
        rp.add_argument("--" + switch.replace("_", "-"), type=parse_bool, default=True, metavar="BOOL")
    args = ap.parse_args(argv)

    try:
        module = lib.load_module(HERE)
        lib.check_structure(module)
        if args.command == "render":
            sys.stdout.write(render(module, {s: getattr(args, s) for s in SWITCHES}))
            return 0

        print(f"parsed {len(module['files'])} files: {', '.join(module['files'])}")
        print(
            f"variables present: {', '.join(REQUIRED_VARIABLES)}; output config_values present; "
            f"{len(module['resource'])} resources, {len(module['data'])} data sources"
        )
        inputs, fixture = lib.load_fixture(FIXTURE)
        ev = Evaluator(module, lib.module_variables(module, inputs, {}), fixture)
        n = check_fixture(module, fixture, ev)
        print(
            f"fixture {FIXTURE.relative_to(HERE)}: {n} resource instances match the module's "
            "names, resource IDs and endpoints"
        )
        for mask in range(8):
            render(module, {s: bool(mask & (1 << i)) for i, s in enumerate(SWITCHES)})
        print(
            "render: 8 switch combinations produce valid TOML with exactly the expected sections, "
            "keys and value formats"
        )
        print("ok")
        return 0
    except CheckError as e:
        print(f"check.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
