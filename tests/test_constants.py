"""One name, one meaning: a module-level constant name (UPPER_CASE) holds the same value wherever the codec and
the two runtimes define it. Read with ast, so the check imports nothing."""

from __future__ import annotations

import ast
import operator
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("codec", "runtime_edge", "runtime_server")
CONSTANT = re.compile(r"^_?[A-Z][A-Z0-9_]*$")
_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.LShift: operator.lshift,
    ast.RShift: operator.rshift,
    ast.BitOr: operator.or_,
    ast.BitAnd: operator.and_,
    ast.USub: operator.neg,
}


class _NotLiteral(Exception):
    pass


def _value(node: ast.expr, known: dict[str, Any]) -> Any:
    """The value of a literal expression (numbers, strings, containers, arithmetic, earlier constants of the
    same module); :class:`_NotLiteral` for anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in known:
        return known[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.left, known), _value(node.right, known))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_value(node.operand, known))
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_value(e, known) for e in node.elts)
    if isinstance(node, ast.Set):
        return frozenset(_value(e, known) for e in node.elts)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return tuple((_value(k, known), _value(v, known)) for k, v in zip(node.keys, node.values))  # type: ignore[arg-type]
    raise _NotLiteral


def module_constants(path: Path) -> dict[str, Any]:
    """``{NAME: value}`` of the module-level UPPER_CASE assignments in ``path``; a value that is not a literal
    is represented by its source text (so two modules agree when they write the same expression)."""
    known: dict[str, Any] = {}
    for node in ast.parse(path.read_text(encoding="utf-8"), str(path)).body:
        if isinstance(node, ast.Assign):
            targets, value = [t for t in node.targets if isinstance(t, ast.Name)], node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if CONSTANT.match(target.id):
                try:
                    known[target.id] = _value(value, known)
                except (_NotLiteral, TypeError, ArithmeticError):
                    known[target.id] = ("source", ast.unparse(value))
    return known


def constants_with_two_values(packages: tuple[str, ...] = PACKAGES) -> dict[str, dict[str, Any]]:
    """``{NAME: {file: value}}`` for every constant name that has more than one value across ``packages``."""
    seen: dict[str, dict[str, Any]] = {}
    for pkg in packages:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for name, value in module_constants(path).items():
                seen.setdefault(name, {})[path.relative_to(ROOT).as_posix()] = value
    return {name: where for name, where in seen.items() if len({repr(v) for v in where.values()}) > 1}


def test_no_constant_name_has_two_values() -> None:
    clashes = constants_with_two_values()
    assert not clashes, f"one constant name, several values (rename one, or define it once and import it): {clashes}"


def test_the_scan_finds_a_clash(tmp_path: Path) -> None:
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text('BITS = 10\nMAX_DIM = 1 << BITS\nNAMES = ("x", "y")\nT = TypeVar("T")\nlower = 3\n')
    b.write_text('MAX_DIM = 1024\nNAMES = ("x", "z")\nT = TypeVar("T")\nlower = 4\n')
    va, vb = module_constants(a), module_constants(b)
    assert va["MAX_DIM"] == vb["MAX_DIM"] == 1024  # same value written two ways: no clash
    assert va["NAMES"] != vb["NAMES"] and va["T"] == vb["T"] and "lower" not in va
