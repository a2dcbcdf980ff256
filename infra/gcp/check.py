#!/usr/bin/env python3
"""Offline checks of the infra/gcp Terraform module (no terraform binary needed).

Needs python-hcl2 8.x (`pip install python-hcl2`); Python >= 3.11 (tomllib).

    python3 infra/gcp/check.py            # parse, structure, fixture, render every switch combination
    python3 infra/gcp/check.py render     # alien-manager.toml sections for the example inputs
    python3 infra/gcp/check.py render --enable-commands-store=false

The machinery is infra/aws/check.py's, loaded from that file: its HCL loader, the evaluator that
renders `output "config_values"` from testdata/plan-values.json (the same expression subset),
the fixture loader and the TOML writer know nothing of AWS. They read the module's interface
(required variables, switches, expected sections, fixture path) from module-level names, which
this file sets to infra/gcp's. What is GCP's own is here: that interface, the names, ids and
emails GCP assigns (the fixture check) and the value formats `alien-manager config check`
insists on (a GAR repository is `projects/P/locations/L/repositories/R`).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "testdata" / "plan-values.json"

REQUIRED_VARIABLES = (
    "project_id",
    "region",
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
        "artifact-registry.gcp": {
            "service": "gar",
            "repositoryName": str,
            "pullServiceAccountEmail": str,
            "pushServiceAccountEmail": str,
        }
    },
    "enable_commands_store": {
        "commands": {
            "kv": {"service": "firestore", "projectId": str, "databaseId": str, "collectionName": str},
            "storage": {"service": "gcs", "bucketName": str},
        }
    },
    "enable_impersonation": {
        "impersonation.gcp": {"service": "gcpserviceaccount", "email": str, "uniqueId": str}
    },
}

SERVICE_ACCOUNT_EMAIL = re.compile(
    r"^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com$"
)
# Rendered values with a form of their own (dotted path in the TOML -> pattern).
VALUE_FORMATS = {
    "artifact-registry.gcp.repositoryName": re.compile(
        r"^projects/[^/]+/locations/[^/]+/repositories/[^/]+$"
    ),
    "artifact-registry.gcp.pullServiceAccountEmail": SERVICE_ACCOUNT_EMAIL,
    "artifact-registry.gcp.pushServiceAccountEmail": SERVICE_ACCOUNT_EMAIL,
    "impersonation.gcp.email": SERVICE_ACCOUNT_EMAIL,
    "impersonation.gcp.uniqueId": re.compile(r"^[0-9]{21}$"),
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
# Fixture: what GCP assigns, derived from what the module declares


def _service_account(d: dict, project: str) -> dict:
    email = f"{d['account_id']}@{project}.iam.gserviceaccount.com"
    path = f"projects/{project}/serviceAccounts/{email}"
    return {"email": email, "id": path, "name": path, "member": f"serviceAccount:{email}"}


def _repository(d: dict, project: str) -> dict:
    path = f"projects/{project}/locations/{d['location']}/repositories/{d['repository_id']}"
    return {"id": path, "name": d["repository_id"]}


def _database(d: dict, project: str) -> dict:
    return {"id": f"projects/{project}/databases/{d['name']}"}


def _field(d: dict, project: str) -> dict:
    database = f"projects/{project}/databases/{d['database']}"
    path = f"{database}/collectionGroups/{d['collection']}/fields/{d['field']}"
    return {"id": path, "name": path}


def _bucket(d: dict, project: str) -> dict:
    name = d["name"]
    return {
        "id": name,
        "location": d["location"].upper(),  # GCS reports locations in upper case
        "url": f"gs://{name}",
        "self_link": f"https://www.googleapis.com/storage/v1/b/{name}",
    }


# type -> (attributes the module declares, the attributes GCP assigns from them); a declared
# attribute is expected verbatim unless the second overrides it.
FIXTURE_RULES = {
    "google_service_account": (("project", "account_id"), _service_account),
    "google_artifact_registry_repository": (
        ("project", "location", "repository_id", "format"),
        _repository,
    ),
    "google_firestore_database": (("project", "name", "location_id", "type"), _database),
    "google_firestore_field": (("project", "database", "collection", "field"), _field),
    "google_storage_bucket": (("project", "name", "location"), _bucket),
}


def check_fixture(module: dict, fixture: dict, ev) -> int:
    project = ev.vars["project_id"]
    n = 0
    for (mode, rtype, rname), recorded in fixture.items():
        kind = "resource" if mode == "managed" else "data"
        if (rtype, rname) not in module[kind]:
            raise CheckError(f"{FIXTURE.name}: {rtype}.{rname} is not declared in the module")
        if mode != "managed":
            continue
        if rtype not in FIXTURE_RULES:
            raise CheckError(f"{FIXTURE.name}: no naming rule for {rtype}; add one to FIXTURE_RULES")
        attrs, derive = FIXTURE_RULES[rtype]
        body = module["resource"][(rtype, rname)]
        for idx, values in recorded.items():
            addr = f"{rtype}.{rname}" + (f"[{idx}]" if idx is not None else "")
            declared = {a: ev.value(body[a], f"{addr}.{a}") for a in attrs}
            expected = {**declared, **derive(declared, project)}
            for attr, want in expected.items():
                if values.get(attr) != want:
                    raise CheckError(
                        f"{FIXTURE.name}: {addr}.{attr} is {values.get(attr)!r}, expected {want!r}"
                    )
            unique_id = str(values.get("unique_id"))
            if rtype == "google_service_account" and not re.fullmatch(r"[0-9]{21}", unique_id):
                raise CheckError(f"{FIXTURE.name}: {addr}.unique_id {unique_id!r} is not 21 digits")
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
        ev = lib.Evaluator(module, lib.module_variables(module, inputs, {}), fixture)
        n = check_fixture(module, fixture, ev)
        print(
            f"fixture {FIXTURE.relative_to(HERE)}: {n} resource instances match the module's "
            "names, ids and emails"
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
