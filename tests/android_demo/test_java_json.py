"""The Java JSON reader (android_demo/codec, package ai.mantis.json) against Python's json.loads: the same
texts accepted and refused, the same values, on hand-picked edge cases and on random mutations of valid
documents. The reader refuses three things json.loads lets through (NaN/Infinity, duplicate keys, nesting
deeper than Json.MAX_DEPTH): the Python reference here refuses them too, and a test pins each difference."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODEC = ROOT / "android_demo" / "codec"
RUNNER = "ai.mantis.json.JsonCases"
MAX_DEPTH = 64  # Json.MAX_DEPTH

pytestmark = pytest.mark.skipif(
    shutil.which("javac") is None or shutil.which("java") is None,
    reason="javac/java not found: install a JDK (Debian/Ubuntu: apt-get install default-jdk-headless)",
)


class Refused(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise Refused(f"constant {name}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise Refused("duplicate key")
    return dict(pairs)


def strict_loads(text: str) -> Any:
    """json.loads less what the Java reader refuses on purpose."""
    return json.loads(text, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)


def canonical(v: Any) -> str:
    """The form JsonCases prints: type and exact value."""
    if v is None:
        return "n"
    if isinstance(v, bool):
        return "t" if v else "f"
    if isinstance(v, int):
        return f"i{v}"
    if isinstance(v, float):
        return "d" + struct.pack(">d", v).hex()
    if isinstance(v, str):
        return "s" + v.encode("utf-16-be", "surrogatepass").hex()
    if isinstance(v, list):
        return "[" + ",".join(canonical(x) for x in v) + "]"
    return "{" + ",".join(f"{canonical(k)}:{canonical(x)}" for k, x in v.items()) + "}"


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("json-classes")
    sources = sorted(str(p) for p in (CODEC / "src").rglob("*.java"))
    proc = subprocess.run(["javac", "--release", "11", "-Xlint:all", "-Werror", "-encoding", "UTF-8", "-d", str(out), *sources],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def java_results(classes: Path, cases: list[str], tmp: Path) -> list[tuple[str, str]]:
    for i, text in enumerate(cases):
        (tmp / f"{i:05d}.json").write_text(text, encoding="utf-8")
    proc = subprocess.run(["java", "-cp", str(classes), RUNNER, str(tmp)], capture_output=True, text=True, timeout=300, encoding="utf-8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.rstrip("\n").split("\n")  # not splitlines: a message may quote U+2028
    assert len(lines) == len(cases)
    out = []
    for i, line in enumerate(lines):
        name, status, rest = (line.split(" ", 2) + [""])[:3]
        assert name == f"{i:05d}"
        out.append((status, rest))
    return out


def python_result(text: str) -> tuple[str, str]:
    try:
        return "OK", canonical(strict_loads(text))
    except ValueError as exc:  # JSONDecodeError and Refused
        return "ERR", str(exc)


def compare(classes: Path, cases: list[str], tmp: Path) -> int:
    """Asserts Java and Python agree on every case; the number Java accepted."""
    accepted = 0
    for text, (jstatus, jvalue) in zip(cases, java_results(classes, cases, tmp)):
        pstatus, pvalue = python_result(text)
        assert jstatus == pstatus, (text, jstatus, jvalue, pvalue)
        if pstatus == "OK":
            assert jvalue == pvalue, (text, jvalue, pvalue)
            accepted += 1
    return accepted


EDGE_CASES = [
    "0", "-0", "-0.0", "1", "-1", "01", "-01", "1.", ".5", "1.5", "1e5", "1E+5", "1e-5", "1e", "1e+", "--1", "+1", "-",
    "9223372036854775807", "9223372036854775808", "-9223372036854775808", "-9223372036854775809", "1" + "0" * 40,
    "1e400", "-1e400", "4.9e-324", "2.2250738585072011e-308", "0.1", "123456789012345678", "1234567890123456789",
    # non-ASCII digits: Unicode calls them digits, JSON does not
    "\u0661", "1\u0662", "\uff11", "[\u0663]", "1.\u0664", "1e\u0665", "\u09e7", '"\\u\u0661\u0662\u0663\u0664"',
    '"\\uFFFF"', '"\\uD800"', '"\\uDC00\\uD800"', '"\\ud83d\\ude00"', '"\\u00e9"', '"\\u00E9"', '"\\u12"', '"\\u+123"',
    '"\\u-123"', '"\\u 123"', '"\\uGHIJ"', '"\\x41"', '"\\/"', '"\\b\\f\\n\\r\\t\\"\\\\"', '"a\tb"', '"a\nb"', '"\x7f"',
    '"\u00e9\U0001f600"', '"', '"abc', '"\\', '"\\"',
    "true", "false", "null", "True", "nul", "truex", "NaN", "Infinity", "-Infinity", "nan",
    "[]", "{}", "[1,]", "[,1]", "[1 2]", '{"a":1,}', '{"a" 1}', '{a:1}', "{'a':1}", '{"a":1,"a":2}', '{"a":{"b":1},"b":[]}',
    " \t\r\n[ 1 , 2 ]\n ", "\u00a0 1", "\ufeff1", "1 2", "[1]]", "", " ", "\u20281", "[\"a\"\u3000]", "\x00",
    '{"":""}', '[[[[]]]]', '{"a":[1,{"b":null}]}', "[1e1, 2E-2, -0.5e+3]",
]


def test_java_json_agrees_with_python_on_edge_cases(classes: Path, tmp_path: Path) -> None:
    accepted = compare(classes, EDGE_CASES, tmp_path)
    assert 20 < accepted < len(EDGE_CASES)


def _random_value(rng: random.Random, depth: int) -> Any:
    kind = rng.choice(["int", "float", "str", "bool", "null", "list", "dict"] if depth < 4 else ["int", "float", "str", "null"])
    if kind == "int":
        return rng.choice([0, -1, rng.randint(-10**6, 10**6), rng.randint(-2**70, 2**70)])
    if kind == "float":
        return rng.choice([0.5, -0.0, rng.uniform(-1e6, 1e6), rng.uniform(-1, 1) * 10 ** rng.randint(-300, 300)])
    if kind == "str":
        return "".join(rng.choice("ab \"\\/\u00e9\u0661\uff11\t\U0001f600\u2028") for _ in range(rng.randint(0, 6)))
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {f"k{i}{rng.choice('xyz')}": _random_value(rng, depth + 1) for i in range(rng.randint(0, 4))}


MUTATION_CHARS = list('0123456789-+.eE"\\/{}[],: \t\nutrfalsenNI') + ["\u0660", "\u0661", "\u0669", "\uff10", "\uff19", "\u09e6", "\u00a0", "\u2028", "\ufeff", "\u00e9"]


def _mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        pos = rng.randint(0, len(chars))
        if op < 0.4:
            chars.insert(pos, rng.choice(MUTATION_CHARS))
        elif op < 0.7 and chars:
            del chars[min(pos, len(chars) - 1)]
        elif chars:
            chars[min(pos, len(chars) - 1)] = rng.choice(MUTATION_CHARS)
    return "".join(chars)


def test_java_json_agrees_with_python_on_random_documents(classes: Path, tmp_path: Path) -> None:
    rng = random.Random(20261206)
    cases = []
    for _ in range(400):
        doc = json.dumps(_random_value(rng, 0), ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1]))
        cases.append(doc)
        cases.append(_mutate(rng, doc))
    accepted = compare(classes, cases, tmp_path)
    assert accepted >= 400  # every unmutated document, and the mutations that stayed valid


def test_java_json_refuses_what_python_accepts_on_purpose(classes: Path, tmp_path: Path) -> None:
    deep_ok = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    deep = "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2)
    cases = ["NaN", "[Infinity]", "-Infinity", '{"a":1,"a":1}', deep, deep_ok]
    got = java_results(classes, cases, tmp_path)
    for text in cases[:-1]:
        json.loads(text)  # Python's plain json.loads accepts each of them
    assert [status for status, _ in got] == ["ERR"] * 5 + ["OK"]
    assert "duplicate key" in got[3][1] and "nested too deeply" in got[4][1]
