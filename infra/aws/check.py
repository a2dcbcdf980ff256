#!/usr/bin/env python3
"""Offline checks of the infra/aws Terraform module (no terraform binary needed).

Needs python-hcl2 8.x (`pip install python-hcl2`); Python >= 3.11 (tomllib).

    python3 infra/aws/check.py            # parse, structure, fixture, render every switch combination
    python3 infra/aws/check.py render     # alien-manager.toml sections for the example inputs
    python3 infra/aws/check.py render --enable-commands-store=false

`render` evaluates `output "config_values"` the way terraform would after an apply, with the
resource attributes terraform would know taken from testdata/plan-values.json. The evaluator
knows only the expression forms the module uses there: string templates, references (var.*,
local.*, data.T.N.attr, T.N[i].attr), literals, object literals, `?:`, `||`, `&&`, `!`, `==`,
`!=` and merge(). Anything else is an error that names the expression; nothing is skipped.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "testdata" / "plan-values.json"

REQUIRED_VARIABLES = (
    "name",
    "principal_arn",
    "enable_artifact_registry",
    "enable_commands_store",
    "enable_impersonation",
)
SWITCHES = ("enable_artifact_registry", "enable_commands_store", "enable_impersonation")

# The exact shape config_values must have: section -> keys (nested dict = inline table).
EXPECTED_SECTIONS = {
    "enable_artifact_registry": {
        "artifact-registry.aws": {
            "service": "ecr",
            "repositoryPrefix": str,
            "pushRoleArn": str,
            "pullRoleArn": str,
        }
    },
    "enable_commands_store": {
        "commands": {
            "kv": {"service": "dynamodb", "tableName": str, "region": str},
            "storage": {"service": "s3", "bucketName": str, "region": str},
        }
    },
    "enable_impersonation": {
        "impersonation.aws": {"service": "awsiam", "roleName": str, "roleArn": str}
    },
}


class CheckError(Exception):
    pass


# --------------------------------------------------------------------------------------------
# Loading the module


def load_module(directory: Path) -> dict:
    try:
        import hcl2  # noqa: PLC0415
    except ImportError as e:
        raise CheckError(
            "python-hcl2 is not installed: pip install python-hcl2 (8.x), "
            "e.g. target/peers/venv/bin/pip install python-hcl2"
        ) from e
    if not hasattr(hcl2, "SerializationOptions"):
        raise CheckError(
            f"hcl2 {getattr(hcl2, '__version__', '?')} is not python-hcl2 8.x "
            "(checkov's bc-python-hcl2 installs the same package name; use another venv)"
        )
    options = hcl2.SerializationOptions(
        strip_string_quotes=True, explicit_blocks=False, with_comments=False
    )
    module = {"variable": {}, "locals": {}, "output": {}, "resource": {}, "data": {}, "files": []}
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise CheckError(f"no .tf files in {directory}")
    for path in files:
        rel = path.relative_to(directory.parent.parent)  # infra/aws/<file>.tf
        try:
            with path.open() as f:
                doc = hcl2.load(f, serialization_options=options)
        except Exception as e:  # hcl2 raises lark exceptions of several kinds
            raise CheckError(f"{rel}: parse error: {e}") from e
        module["files"].append(str(rel))
        for block in doc.get("variable", []):
            for name, body in block.items():
                add_unique(module["variable"], name, body, f"variable {name!r} ({rel})")
        for block in doc.get("output", []):
            for name, body in block.items():
                add_unique(module["output"], name, body, f"output {name!r} ({rel})")
        for block in doc.get("locals", []):
            for name, value in block.items():
                add_unique(module["locals"], name, value, f"local {name!r} ({rel})")
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        add_unique(
                            module[kind], (rtype, rname), body, f"{kind} {rtype}.{rname} ({rel})"
                        )
    return module


def add_unique(table: dict, key, value, what: str) -> None:
    if key in table:
        raise CheckError(f"duplicate {what}")
    table[key] = value


def check_structure(module: dict) -> None:
    missing = [v for v in REQUIRED_VARIABLES if v not in module["variable"]]
    if missing:
        raise CheckError(f"missing variables: {', '.join(missing)}")
    for switch in SWITCHES:
        body = module["variable"][switch]
        if body.get("default") is not True:
            raise CheckError(f"variable {switch}: default must be true, found {body.get('default')!r}")
    if "config_values" not in module["output"]:
        raise CheckError("missing output config_values")
    if "value" not in module["output"]["config_values"]:
        raise CheckError("output config_values has no value")


# --------------------------------------------------------------------------------------------
# Expression parser (the subset of HCL the module uses in config_values)


class Node:
    __slots__ = ("kind", "args", "text")

    def __init__(self, kind: str, args: tuple, text: str):
        self.kind, self.args, self.text = kind, args, text


IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


class Parser:
    def __init__(self, text: str, where: str):
        self.s, self.i, self.where = text, 0, where

    def fail(self, msg: str):
        snippet = self.s[max(0, self.i - 20) : self.i + 30]
        raise CheckError(f"{self.where}: {msg} at offset {self.i} (near {snippet!r}) in {self.s!r}")

    def ws(self):
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def peek(self, tok: str) -> bool:
        self.ws()
        return self.s.startswith(tok, self.i)

    def eat(self, tok: str) -> bool:
        if self.peek(tok):
            self.i += len(tok)
            return True
        return False

    def expect(self, tok: str):
        if not self.eat(tok):
            self.fail(f"expected {tok!r}")

    # template: the content of a (quote-stripped) string, up to `end` (None: end of text,
    # '"': a closing quote)
    def template(self, end: str | None) -> Node:
        start = self.i
        parts: list = []
        buf: list[str] = []
        while True:
            if self.i >= len(self.s):
                if end is None:
                    break
                self.fail("unterminated string")
            c = self.s[self.i]
            if end is not None and c == end:
                self.i += 1
                break
            if self.s.startswith("$${", self.i) or self.s.startswith("%%{", self.i):
                buf.append(self.s[self.i + 1 : self.i + 3])
                self.i += 3
            elif self.s.startswith("%{", self.i):
                self.fail("template directive %{...} is not supported")
            elif self.s.startswith("${", self.i):
                if buf:
                    parts.append("".join(buf))
                    buf = []
                self.i += 2
                self.eat("~")
                parts.append(self.expr())
                self.eat("~")
                self.expect("}")
            elif end is not None and c == "\\":
                esc = self.s[self.i + 1 : self.i + 2]
                table = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}
                if esc not in table:
                    self.fail(f"unsupported escape \\{esc}")
                buf.append(table[esc])
                self.i += 2
            else:
                buf.append(c)
                self.i += 1
        if buf:
            parts.append("".join(buf))
        return Node("template", tuple(parts), self.s[start : self.i])

    def expr(self) -> Node:
        start = self.i
        cond = self.or_expr()
        if self.eat("?"):
            yes = self.expr()
            self.expect(":")
            no = self.expr()
            return Node("cond", (cond, yes, no), self.s[start : self.i].strip())
        return cond

    def binary(self, ops: tuple[str, ...], sub) -> Node:
        start = self.i
        left = sub()
        while True:
            for op in ops:
                if self.peek(op):
                    self.i += len(op)
                    right = sub()
                    left = Node("binop", (op, left, right), self.s[start : self.i].strip())
                    break
            else:
                return left

    def or_expr(self) -> Node:
        return self.binary(("||",), self.and_expr)

    def and_expr(self) -> Node:
        return self.binary(("&&",), self.eq_expr)

    def eq_expr(self) -> Node:
        return self.binary(("==", "!="), self.unary)

    def unary(self) -> Node:
        start = self.i
        self.ws()
        if self.s.startswith("!", self.i) and not self.s.startswith("!=", self.i):
            self.i += 1
            return Node("not", (self.unary(),), self.s[start : self.i].strip())
        return self.postfix()

    def postfix(self) -> Node:
        start = self.i
        node = self.primary()
        while True:
            if self.peek("[*]") or self.peek(".*"):
                self.fail("splat expressions are not supported")
            if self.peek("."):
                self.i += 1
                m = IDENT.match(self.s, self.i)
                if not m:
                    self.fail("expected an attribute name after '.'")
                self.i = m.end()
                node = Node("attr", (node, m.group()), self.s[start : self.i].strip())
            elif self.peek("["):
                self.i += 1
                index = self.expr()
                self.expect("]")
                node = Node("index", (node, index), self.s[start : self.i].strip())
            else:
                break
        self.ws()
        for op in ("<=", ">=", "<", ">", "+", "-", "*", "/", "%", "=>", "..."):
            if self.s.startswith(op, self.i):
                self.fail(f"operator {op!r} is not supported")
        return node

    def primary(self) -> Node:
        self.ws()
        start = self.i
        if self.i >= len(self.s):
            self.fail("expected an expression")
        c = self.s[self.i]
        if c == '"':
            self.i += 1
            return self.template('"')
        if c == "(":
            self.i += 1
            inner = self.expr()
            self.expect(")")
            return inner
        if c == "{":
            return self.object()
        if c == "[":
            self.i += 1
            items = []
            while not self.eat("]"):
                if self.peek("for "):
                    self.fail("for expressions are not supported")
                items.append(self.expr())
                if not self.eat(","):
                    self.expect("]")
                    break
            return Node("tuple", tuple(items), self.s[start : self.i])
        if c.isdigit():
            m = NUMBER.match(self.s, self.i)
            self.i = m.end()
            text = m.group()
            return Node("lit", (float(text) if "." in text else int(text),), text)
        if self.s.startswith("<<", self.i):
            self.fail("heredoc strings are not supported")
        m = IDENT.match(self.s, self.i)
        if not m:
            self.fail(f"unexpected character {c!r}")
        self.i = m.end()
        word = m.group()
        if word in ("true", "false", "null"):
            return Node("lit", ({"true": True, "false": False, "null": None}[word],), word)
        if self.peek("("):
            self.i += 1
            args = []
            while not self.eat(")"):
                args.append(self.expr())
                if self.eat("..."):
                    self.fail("argument expansion '...' is not supported")
                if not self.eat(","):
                    self.expect(")")
                    break
            return Node("call", (word, tuple(args)), self.s[start : self.i])
        return Node("ref", (word,), word)

    def object(self) -> Node:
        start = self.i
        self.expect("{")
        if self.peek("for "):
            self.fail("for expressions are not supported")
        items = []
        while not self.eat("}"):
            self.ws()
            if self.s.startswith('"', self.i):
                self.i += 1
                key_node = self.template('"')
                if any(isinstance(p, Node) for p in key_node.args):
                    self.fail("interpolated object keys are not supported")
                key = "".join(key_node.args)
            else:
                m = IDENT.match(self.s, self.i)
                if not m:
                    self.fail("expected an object key")
                self.i = m.end()
                key = m.group()
            if not (self.eat("=") or self.eat(":")):
                self.fail("expected '=' after object key")
            items.append((key, self.expr()))
            self.eat(",")
        return Node("object", tuple(items), self.s[start : self.i])


def parse_value(text: str, where: str) -> Node:
    p = Parser(text, where)
    node = p.template(None)
    return node


# --------------------------------------------------------------------------------------------
# Evaluation


class Evaluator:
    def __init__(self, module: dict, variables: dict, fixture: dict):
        self.module = module
        self.vars = variables
        self.locals_cache: dict = {}
        self.locals_busy: set = set()
        self.fixture = fixture  # {("managed"|"data", type, name): {index|None: values}}

    def value(self, raw, where: str):
        """Evaluate an attribute value as python-hcl2 returns it."""
        if isinstance(raw, str):
            return self.eval(parse_value(raw, where), where)
        if isinstance(raw, (bool, int, float)) or raw is None:
            return raw
        if isinstance(raw, list):
            return [self.value(v, where) for v in raw]
        if isinstance(raw, dict):
            return {k: self.value(v, f"{where}.{k}") for k, v in raw.items()}
        raise CheckError(f"{where}: unsupported value {raw!r}")

    def eval(self, node: Node, where: str):
        kind = node.kind
        if kind == "lit":
            return node.args[0]
        if kind == "template":
            parts = node.args
            if len(parts) == 1 and isinstance(parts[0], Node):
                return self.eval(parts[0], where)  # "${x}" is x itself, not its string form
            out = []
            for part in parts:
                if isinstance(part, str):
                    out.append(part)
                    continue
                v = self.eval(part, where)
                if isinstance(v, bool):
                    out.append("true" if v else "false")
                elif isinstance(v, (str, int, float)):
                    out.append(str(v))
                else:
                    raise CheckError(f"{where}: cannot interpolate {type(v).__name__} from {part.text!r}")
            return "".join(out)
        if kind == "object":
            return {k: self.eval(v, where) for k, v in node.args}
        if kind == "tuple":
            return [self.eval(v, where) for v in node.args]
        if kind == "cond":
            cond, yes, no = node.args
            c = self.eval(cond, where)
            if not isinstance(c, bool):
                raise CheckError(f"{where}: condition {cond.text!r} is {c!r}, not a bool")
            # Only the chosen branch: terraform ignores errors (e.g. push[0] with count 0) in the other.
            return self.eval(yes if c else no, where)
        if kind == "not":
            v = self.eval(node.args[0], where)
            if not isinstance(v, bool):
                raise CheckError(f"{where}: '!' on non-bool in {node.text!r}")
            return not v
        if kind == "binop":
            op, left, right = node.args
            a = self.eval(left, where)
            if op in ("||", "&&"):
                if not isinstance(a, bool):
                    raise CheckError(f"{where}: {op} on non-bool in {node.text!r}")
                b = self.eval(right, where)
                if not isinstance(b, bool):
                    raise CheckError(f"{where}: {op} on non-bool in {node.text!r}")
                return (a or b) if op == "||" else (a and b)
            b = self.eval(right, where)
            return (a == b) if op == "==" else (a != b)
        if kind == "call":
            name, args = node.args
            if name == "merge":
                result: dict = {}
                for arg in args:
                    v = self.eval(arg, where)
                    if not isinstance(v, dict):
                        raise CheckError(f"{where}: merge() argument {arg.text!r} is not an object")
                    result.update(v)
                return result
            raise CheckError(f"{where}: unsupported function {name}() in {node.text!r}")
        if kind in ("ref", "attr", "index"):
            return self.reference(node, where)
        raise CheckError(f"{where}: unsupported expression {node.text!r}")

    def reference(self, node: Node, where: str):
        # Flatten the traversal: root name, then ("attr", name) / ("index", node) steps.
        steps = []
        n = node
        while n.kind in ("attr", "index"):
            steps.append((n.kind, n.args[1]))
            n = n.args[0]
        if n.kind != "ref":
            raise CheckError(f"{where}: unsupported traversal {node.text!r}")
        steps.reverse()
        root = n.args[0]

        def attr_step(k: int) -> str:
            if k >= len(steps) or steps[k][0] != "attr":
                raise CheckError(f"{where}: incomplete reference {node.text!r}")
            return steps[k][1]

        if root == "var":
            name = attr_step(0)
            if name not in self.vars:
                raise CheckError(f"{where}: undeclared variable var.{name}")
            value, rest = self.vars[name], steps[1:]
        elif root == "local":
            name = attr_step(0)
            value, rest = self.local(name), steps[1:]
        elif root == "data":
            rtype, rname = attr_step(0), attr_step(1)
            value, rest = self.instances("data", rtype, rname, node, where), steps[2:]
        elif root in ("count", "each", "path", "module", "terraform", "self"):
            raise CheckError(f"{where}: unsupported reference {node.text!r}")
        else:
            rname = attr_step(0)
            value, rest = self.instances("managed", root, rname, node, where), steps[1:]
        for kind, arg in rest:
            if kind == "attr":
                if not isinstance(value, dict):
                    raise CheckError(f"{where}: {node.text!r}: .{arg} on a {type(value).__name__}")
                if arg not in value:
                    raise CheckError(f"{where}: {node.text!r}: no attribute {arg!r} (not in the fixture)")
                value = value[arg]
            else:
                idx = self.eval(arg, where)
                if not isinstance(value, list) or not isinstance(idx, int) or isinstance(idx, bool):
                    raise CheckError(f"{where}: {node.text!r}: bad index")
                if idx >= len(value):
                    raise CheckError(f"{where}: {node.text!r}: index {idx} out of range (count {len(value)})")
                value = value[idx]
        return value

    def local(self, name: str):
        if name in self.locals_cache:
            return self.locals_cache[name]
        if name not in self.module["locals"]:
            raise CheckError(f"undeclared local.{name}")
        if name in self.locals_busy:
            raise CheckError(f"local.{name} refers to itself")
        self.locals_busy.add(name)
        v = self.value(self.module["locals"][name], f"local.{name}")
        self.locals_busy.discard(name)
        self.locals_cache[name] = v
        return v

    def count(self, mode: str, rtype: str, rname: str):
        """None for a resource without count, else the evaluated count."""
        kind = "resource" if mode == "managed" else "data"
        body = self.module[kind][(rtype, rname)]
        if "for_each" in body:
            raise CheckError(f"{rtype}.{rname}: for_each is not supported")
        if "count" not in body:
            return None
        c = self.value(body["count"], f"{rtype}.{rname}.count")
        if not isinstance(c, int) or isinstance(c, bool) or c < 0:
            raise CheckError(f"{rtype}.{rname}.count evaluated to {c!r}")
        return c

    def instances(self, mode: str, rtype: str, rname: str, node: Node, where: str):
        kind = "resource" if mode == "managed" else "data"
        prefix = "data." if mode == "data" else ""
        if (rtype, rname) not in self.module[kind]:
            raise CheckError(f"{where}: {node.text!r}: {prefix}{rtype}.{rname} is not declared in the module")
        recorded = self.fixture.get((mode, rtype, rname))
        if recorded is None:
            raise CheckError(f"{where}: {node.text!r}: {prefix}{rtype}.{rname} is not in {FIXTURE.name}")
        count = self.count(mode, rtype, rname)
        if count is None:
            if None not in recorded:
                raise CheckError(f"{prefix}{rtype}.{rname} has no count but the fixture has indexes")
            return recorded[None]
        out = []
        for i in range(count):
            if i not in recorded:
                raise CheckError(f"{prefix}{rtype}.{rname}[{i}] exists (count {count}) but not in the fixture")
            out.append(recorded[i])
        return out


# --------------------------------------------------------------------------------------------
# Fixture


def load_fixture(path: Path) -> tuple[dict, dict]:
    doc = json.loads(path.read_text())
    variables = {k: v["value"] for k, v in doc.get("variables", {}).items()}
    table: dict = {}
    for r in doc["values"]["root_module"]["resources"]:
        key = (r["mode"], r["type"], r["name"])
        idx = r.get("index")
        expected_address = ("data." if r["mode"] == "data" else "") + f"{r['type']}.{r['name']}"
        if idx is not None:
            expected_address += f"[{idx}]"
        if r["address"] != expected_address:
            raise CheckError(f"{path.name}: address {r['address']!r} should be {expected_address!r}")
        table.setdefault(key, {})[idx] = r["values"]
    return variables, table


def module_variables(module: dict, inputs: dict, overrides: dict) -> dict:
    values = {}
    for name, body in module["variable"].items():
        if name in overrides:
            values[name] = overrides[name]
        elif name in inputs:
            values[name] = inputs[name]
        elif "default" in body:
            values[name] = body["default"]
        else:
            raise CheckError(f"variable {name} has no default and no value in {FIXTURE.name}")
    unknown = set(inputs) - set(module["variable"])
    if unknown:
        raise CheckError(f"{FIXTURE.name}: values for undeclared variables {sorted(unknown)}")
    return values


# ARNs as AWS assigns them, to keep the fixture honest.
ARN_FORMATS = {
    "aws_iam_role": ("name", "arn:{partition}:iam::{account}:role/{name}"),
    "aws_iam_policy": ("name", "arn:{partition}:iam::{account}:policy/{name}"),
    "aws_dynamodb_table": ("name", "arn:{partition}:dynamodb:{region}:{account}:table/{name}"),
    "aws_s3_bucket": ("bucket", "arn:{partition}:s3:::{name}"),
}


def check_fixture(module: dict, fixture: dict, ev: Evaluator) -> int:
    account = ev.local("account_id")
    partition = ev.local("partition")
    region = ev.local("region")
    n = 0
    for (mode, rtype, rname), recorded in fixture.items():
        kind = "resource" if mode == "managed" else "data"
        if (rtype, rname) not in module[kind]:
            raise CheckError(f"{FIXTURE.name}: {rtype}.{rname} is not declared in the module")
        if mode != "managed":
            continue
        if rtype not in ARN_FORMATS:
            raise CheckError(f"{FIXTURE.name}: no ARN rule for {rtype}; add one to ARN_FORMATS")
        attr, fmt = ARN_FORMATS[rtype]
        body = module["resource"][(rtype, rname)]
        for idx, values in recorded.items():
            addr = f"{rtype}.{rname}" + (f"[{idx}]" if idx is not None else "")
            declared = ev.value(body[attr], f"{addr}.{attr}")
            if values.get(attr) != declared:
                raise CheckError(f"{FIXTURE.name}: {addr}.{attr} is {values.get(attr)!r}, the module gives {declared!r}")
            arn = fmt.format(partition=partition, account=account, region=region, name=declared)
            if values.get("arn") != arn:
                raise CheckError(f"{FIXTURE.name}: {addr}.arn is {values.get('arn')!r}, AWS would assign {arn!r}")
            # roles, tables and buckets have their name as id; a policy's id is its ARN
            expected_id = arn if rtype == "aws_iam_policy" else declared
            if values.get("id") != expected_id:
                raise CheckError(f"{FIXTURE.name}: {addr}.id is {values.get('id')!r}, expected {expected_id!r}")
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# TOML


BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else json.dumps(key)


def toml_value(v, where: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a valid TOML basic string
    if isinstance(v, dict):
        inner = ", ".join(f"{toml_key(k)} = {toml_value(x, f'{where}.{k}')}" for k, x in v.items())
        return "{ " + inner + " }" if inner else "{}"
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x, where) for x in v) + "]"
    raise CheckError(f"config_values: {where} is {v!r}, which TOML cannot hold")


def to_toml(config_values) -> str:
    if not isinstance(config_values, dict):
        raise CheckError(f"config_values is a {type(config_values).__name__}, not an object")
    out = []
    for section, body in config_values.items():
        if not isinstance(body, dict):
            raise CheckError(f"config_values[{section!r}] is not an object")
        out.append("[" + ".".join(toml_key(p) for p in section.split(".")) + "]")
        for k, v in body.items():
            out.append(f"{toml_key(k)} = {toml_value(v, f'{section}.{k}')}")
        out.append("")
    if not out:
        return "# every switch is off: config_values is empty\n"
    return "\n".join(out)


def render(module: dict, switches: dict) -> tuple[dict, str]:
    inputs, fixture = load_fixture(FIXTURE)
    ev = Evaluator(module, module_variables(module, inputs, switches), fixture)
    value = ev.value(module["output"]["config_values"]["value"], "output.config_values")
    return value, to_toml(value)


def check_rendering(switches: dict, text: str) -> None:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CheckError(f"render {switches}: not valid TOML: {e}\n{text}") from e
    expected: dict = {}
    for switch, sections in EXPECTED_SECTIONS.items():
        if switches[switch]:
            expected.update(sections)

    def lookup(path: str):
        node = doc
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def compare(got, want, where: str):
        if isinstance(want, dict):
            if not isinstance(got, dict) or set(got) != set(want):
                raise CheckError(
                    f"render {switches}: {where} has keys {sorted(got) if isinstance(got, dict) else got!r}, "
                    f"expected {sorted(want)}"
                )
            for k in want:
                compare(got[k], want[k], f"{where}.{k}")
        elif want is str:
            if not isinstance(got, str) or not got:
                raise CheckError(f"render {switches}: {where} = {got!r} is not a non-empty string")
        elif got != want:
            raise CheckError(f"render {switches}: {where} = {got!r}, expected {want!r}")

    for path, want in expected.items():
        compare(lookup(path), want, path)
    top = {p.split(".")[0] for p in expected}
    if set(doc) != top:
        raise CheckError(f"render {switches}: top-level tables {sorted(doc)}, expected {sorted(top)}")


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
        module = load_module(HERE)
        check_structure(module)
        if args.command == "render":
            switches = {s: getattr(args, s) for s in SWITCHES}
            _, text = render(module, switches)
            check_rendering(switches, text)
            sys.stdout.write(text)
            return 0

        print(f"parsed {len(module['files'])} files: {', '.join(module['files'])}")
        print(
            f"variables present: {', '.join(REQUIRED_VARIABLES)}; output config_values present; "
            f"{len(module['resource'])} resources, {len(module['data'])} data sources"
        )
        inputs, fixture = load_fixture(FIXTURE)
        ev = Evaluator(module, module_variables(module, inputs, {}), fixture)
        n = check_fixture(module, fixture, ev)
        print(f"fixture {FIXTURE.relative_to(HERE)}: {n} resource instances match the module's names and ARNs")
        combos = 0
        for mask in range(8):
            switches = {s: bool(mask & (1 << i)) for i, s in enumerate(SWITCHES)}
            _, text = render(module, switches)
            check_rendering(switches, text)
            combos += 1
        print(f"render: {combos} switch combinations produce valid TOML with exactly the expected sections and keys")
        print("ok")
        return 0
    except CheckError as e:
        print(f"check.py: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
