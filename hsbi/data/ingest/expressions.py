"""Column expressions: a small, safe subset of Python over numpy arrays (no attribute access)."""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np

from hsbi.exceptions import ConfigError, DataError

__all__ = ["FUNCTIONS", "evaluate", "names_in"]

#: functions an expression may call
FUNCTIONS: dict[str, Any] = {
    name: getattr(np, name)
    for name in (
        "abs", "sqrt", "exp", "log", "log10", "log1p", "sin", "cos", "tan", "arcsin", "arccos",
        "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh", "arccosh", "arctanh", "hypot",
        "where", "minimum", "maximum", "clip", "isfinite", "floor", "ceil", "sign", "square",
    )
}
_CONSTANTS = {"pi": np.pi, "e": np.e, "True": True, "False": False}

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Invert: operator.invert,
          ast.Not: np.logical_not}
_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}


@lru_cache(maxsize=256)
def _parse(text: str) -> ast.AST:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(
            f"expression {text!r} is not valid: expected Python-like arithmetic"
        ) from None
    for node in ast.walk(tree):
        ok = isinstance(node, (
            ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.Call,
            ast.Load, ast.operator, ast.unaryop, ast.boolop, ast.cmpop, ast.IfExp,
        ))
        if not ok:
            raise ConfigError(
                f"expression {text!r}: {type(node).__name__} is not allowed; expected names, "
                f"numbers, strings, + - * / ** % & | ~ not and or, comparisons and calls of "
                f"{', '.join(sorted(FUNCTIONS))}"
            )
        if isinstance(node, ast.Call) and not (
            isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS and not node.keywords
        ):
            raise ConfigError(
                f"expression {text!r}: only calls of {', '.join(sorted(FUNCTIONS))} are allowed"
            )
    return tree


def names_in(text: str) -> set[str]:
    """The column names an expression reads (function names and constants left out)."""
    names = set()
    for node in ast.walk(_parse(text)):
        if isinstance(node, ast.Name) and node.id not in FUNCTIONS and node.id not in _CONSTANTS:
            names.add(node.id)
    return names


def evaluate(text: str, columns: Mapping[str, Any], where: str = "") -> Any:
    """Evaluate ``text`` with ``columns`` (name -> numpy array) in scope.

    Raises :class:`DataError` for an unknown name (naming the columns available).
    """

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in columns:
                return columns[node.id]
            if node.id in _CONSTANTS:
                return _CONSTANTS[node.id]
            raise DataError(
                f"{where}expression {text!r}: unknown column {node.id!r}; available: "
                f"{', '.join(sorted(columns)) or 'none'}"
            )
        if isinstance(node, ast.BinOp):
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand))
        if isinstance(node, ast.BoolOp):
            fn = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = ev(node.values[0])
            for value in node.values[1:]:
                out = fn(out, ev(value))
            return out
        if isinstance(node, ast.Compare):
            out, left = True, ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                right = ev(comp)
                out = np.logical_and(out, _COMPARE[type(op)](left, right))
                left = right
            return out
        if isinstance(node, ast.IfExp):
            return np.where(ev(node.test), ev(node.body), ev(node.orelse))
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(ev(a) for a in node.args))
        raise ConfigError(f"expression {text!r}: unsupported syntax")  # pragma: no cover

    with np.errstate(all="ignore"):
        return ev(_parse(text))
