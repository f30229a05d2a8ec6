"""Static vetting of a proposed gene module: parsed with ``ast``, never imported or run.

An allow-list, not a deny-list: a proposal may hold only a docstring, imports from a
declared set of modules, and top-level functions of the gene signature (one positional
argument, the terms); inside them only the node types and names below. Anything else
(an attribute with an underscore, ``exec``, ``open``, a class, a ``global``, a
decorator, ``print``...) is a rejection with its reason and line. What vetting cannot
see (a loop that never ends, a list of 10**10 items) the sandboxed trial meets under
the agents' limits, as it meets what vetting cannot bound in C (``10 ** 10 ** 10``, a
million nested ``map`` objects that crash the interpreter): the sandbox contains them,
and the trial fails. An accepted module is published in its normalised form (printed
from the tree), so what runs is what was vetted, comments and layout tricks gone.
"""

from __future__ import annotations

import ast
import builtins
from dataclasses import dataclass

MAX_BYTES = 8192
MAX_NODES = 800
MAX_DEPTH = 16
MAX_FUNCTIONS = 4
MAX_INT_BITS = 64  # literals beyond this are refused (a 10**100000 is a denial of service)
# What may be imported, member by member: a module object itself leaks what it imported
# (fractions.sys, fractions.operator.attrgetter), so only these members are reachable.
MEMBERS: dict[str, frozenset[str]] = {
    "math": frozenset({
        "acos", "acosh", "asin", "asinh", "atan", "atan2", "atanh", "ceil", "comb",
        "copysign", "cos", "cosh", "degrees", "dist", "e", "erf", "erfc", "exp", "expm1",
        "fabs", "factorial", "floor", "fmod", "frexp", "fsum", "gamma", "gcd", "hypot",
        "inf", "isclose", "isfinite", "isinf", "isnan", "isqrt", "lcm", "ldexp", "lgamma",
        "log", "log10", "log1p", "log2", "modf", "nan", "nextafter", "perm", "pi", "pow",
        "prod", "radians", "remainder", "sin", "sinh", "sqrt", "tan", "tanh", "tau",
        "trunc", "ulp"}),
    "itertools": frozenset({
        "accumulate", "chain", "combinations", "combinations_with_replacement", "compress",
        "count", "cycle", "dropwhile", "filterfalse", "groupby", "islice", "pairwise",
        "permutations", "product", "repeat", "starmap", "takewhile", "zip_longest"}),
    "fractions": frozenset({"Fraction"}),
    "functools": frozenset({"reduce"}),
}
IMPORTABLE = frozenset(MEMBERS)
# Attributes of values (not of modules): plain methods of ints, fractions, lists, dicts,
# sets, tuples and strings. An allow-list: a generator's gi_frame, a class's mro, a
# string's format (it reads attributes named in its template) are all refused.
ATTRIBUTES = frozenset({
    "append", "bit_count", "bit_length", "conjugate", "copy", "count", "denominator",
    "difference", "discard", "endswith", "extend", "get", "imag", "index", "insert",
    "intersection", "is_integer", "isdigit", "issubset", "issuperset", "items", "join",
    "keys", "limit_denominator", "lower", "numerator", "pop", "real", "remove", "reverse",
    "setdefault", "sort", "split", "startswith", "strip", "symmetric_difference", "union",
    "update", "upper", "values", "add", "as_integer_ratio"})
BUILTINS = frozenset({
    "abs", "all", "any", "bool", "divmod", "enumerate", "filter", "int", "len", "list",
    "map", "max", "min", "pow", "range", "reversed", "round", "set", "sorted", "sum",
    "tuple", "zip", "isinstance", "float", "frozenset", "dict", "None", "True", "False",
})
NODES: frozenset[type[ast.AST]] = frozenset({
    # Inside functions: no import (only the module's own, checked at its top level).
    ast.Module, ast.Expr, ast.FunctionDef, ast.arguments, ast.arg, ast.Return, ast.If,
    ast.For, ast.While, ast.Break,
    ast.Continue, ast.Pass, ast.Assign, ast.AugAssign, ast.Name, ast.Load,
    ast.Store, ast.Constant, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare,
    ast.IfExp, ast.Call, ast.keyword, ast.Attribute, ast.Subscript, ast.Slice, ast.List,
    ast.Tuple, ast.Set, ast.Dict, ast.ListComp, ast.SetComp, ast.GeneratorExp,
    ast.DictComp, ast.comprehension, ast.Lambda, ast.Starred,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift,
    ast.RShift, ast.BitOr, ast.BitXor, ast.BitAnd, ast.MatMult, ast.UAdd, ast.USub,
    ast.Not, ast.Invert, ast.And, ast.Or, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt,
    ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
})


RESERVED = frozenset(dir(builtins)) | BUILTINS  # never bound by a proposal


class Refused(Exception):
    """A proposal that fails vetting; the message is the recorded reason."""


@dataclass(frozen=True, slots=True)
class Vetted:
    """A proposal that passed: its normalised source and its gene functions."""

    source: str
    functions: tuple[str, ...]


def vet(source: object, max_bytes: int = MAX_BYTES) -> Vetted:
    """Vetted, or Refused with the first reason found."""
    if not isinstance(source, str):
        raise Refused("the source is not a string")
    if len(source.encode("utf-8", errors="replace")) > max_bytes:
        raise Refused(f"the source is over {max_bytes} bytes")
    try:
        tree = ast.parse(source, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise Refused(f"the source does not parse: {type(error).__name__}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise Refused(f"the source has {count} syntax nodes, over {MAX_NODES}")
    _depth(tree, 0)
    imported = _top_level(tree)
    functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
    for function in functions:
        _check_function(function, imported | {f.name for f in functions})
    try:
        normalised = ast.unparse(tree) + "\n"
    except (ValueError, RecursionError) as error:
        raise Refused(f"the source cannot be normalised: {error}") from None
    return Vetted(normalised, tuple(f.name for f in functions))


def _depth(node: ast.AST, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise Refused(f"nesting deeper than {MAX_DEPTH} (line {_line(node)})")
    for child in ast.iter_child_nodes(node):
        _depth(child, depth + 1)


def _top_level(tree: ast.Module) -> set[str]:
    """Check the module's own statements; the names its imports bind."""
    imported: set[str] = set()
    functions = 0
    for index, node in enumerate(tree.body):
        if isinstance(node, ast.Expr) and index == 0 and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name not in IMPORTABLE:
                    raise Refused(f"import of {alias.name!r} (line {node.lineno}): only "
                                  f"{', '.join(sorted(IMPORTABLE))}")
                if alias.asname is not None:  # modules keep their names: math.x is checked
                    raise Refused(f"import {alias.name} as {alias.asname} "
                                  f"(line {node.lineno})")
                imported.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level or node.module not in IMPORTABLE:
                raise Refused(f"import from {node.module!r} (line {node.lineno}): only "
                              f"{', '.join(sorted(IMPORTABLE))}")
            for alias in node.names:
                if alias.name not in MEMBERS[node.module]:
                    raise Refused(f"import of {alias.name!r} from {node.module} "
                                  f"(line {node.lineno})")
                bound = alias.asname or alias.name
                if bound.startswith("_") or bound in RESERVED or bound in MEMBERS:
                    raise Refused(f"import as {bound!r} (line {node.lineno}): a built-in's "
                                  "or a module's name")
                imported.add(bound)
        elif isinstance(node, ast.FunctionDef):
            functions += 1
        else:
            raise Refused(f"{type(node).__name__} at the top level (line {node.lineno}): "
                          "only a docstring, imports and functions")
    if not 1 <= functions <= MAX_FUNCTIONS:
        raise Refused(f"{functions} functions: between 1 and {MAX_FUNCTIONS}")
    return imported


def _check_function(function: ast.FunctionDef, known: set[str]) -> None:
    name = function.name
    if name.startswith("_") or name in RESERVED:
        raise Refused(f"function {name!r}: a gene's name cannot start with '_' nor be a "
                      "built-in's")
    args = function.args
    if (len(args.args) != 1 or args.posonlyargs or args.vararg or args.kwonlyargs
            or args.kwarg or args.defaults or function.decorator_list
            or function.returns is not None or args.args[0].annotation is not None):
        raise Refused(f"function {name!r} (line {function.lineno}): a gene takes one "
                      "argument, the terms, without defaults, annotations or decorators")
    local = _bound(function, known)
    for node in ast.walk(function):
        if type(node) not in NODES:
            raise Refused(f"{type(node).__name__} (line {_line(node)}) is not allowed")
        if isinstance(node, ast.Name):
            if node.id.startswith("_") or not (node.id in local or node.id in known
                                               or node.id in BUILTINS):
                raise Refused(f"name {node.id!r} (line {_line(node)}) is not allowed")
        elif isinstance(node, ast.Attribute):
            _check_attribute(node)
        elif isinstance(node, ast.arg) and node.arg.startswith("_"):
            raise Refused(f"argument {node.arg!r} (line {_line(node)}) is not allowed")
        elif isinstance(node, ast.keyword) and (node.arg is None or node.arg.startswith("_")):
            raise Refused(f"keyword argument {node.arg or '**'!r} (line {_line(node)}) is "
                          "not allowed")
        elif isinstance(node, ast.Constant):
            _check_constant(node)
        elif isinstance(node, ast.FunctionDef) and node is not function:
            raise Refused(f"a function inside {name!r} (line {_line(node)})")


def _check_attribute(node: ast.Attribute) -> None:
    """``math.gcd``: a member of the module's list; ``x.append``: a plain method. Never
    assigned or deleted: a gene must not change what other genes share."""
    if not isinstance(node.ctx, ast.Load):
        raise Refused(f"assignment to attribute {node.attr!r} (line {_line(node)})")
    base = node.value
    module = base.id if isinstance(base, ast.Name) and base.id in MEMBERS else None
    allowed = ATTRIBUTES if module is None else MEMBERS[module]
    if node.attr not in allowed:
        raise Refused(f"attribute {node.attr!r} (line {_line(node)}) is not allowed")


def _bound(function: ast.FunctionDef, known: set[str]) -> set[str]:
    """Names the function binds: its argument, assignment targets, loop and
    comprehension variables, lambda arguments. None may be a built-in's, an import's or
    a function's name: a name bound in a lambda or a comprehension is seen outside it as
    the global or built-in of that name (``(lambda eval: 0)`` then ``eval(...)``)."""
    names: set[str] = set()
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.alias):  # refused anyway inside functions: belt and braces
            names.add(node.asname or node.name)
    taken = sorted(names & (RESERVED | known))
    if taken:
        raise Refused(f"{taken[0]!r} is bound in {function.name!r}: a built-in's, an "
                      "import's or a function's name cannot be")
    return names


def _check_constant(node: ast.Constant) -> None:
    value = node.value
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise Refused(f"an integer literal over {MAX_INT_BITS} bits (line {_line(node)})")
        return
    if isinstance(value, float | str):
        if isinstance(value, str) and len(value) > 1000:
            raise Refused(f"a string literal over 1000 characters (line {_line(node)})")
        return
    raise Refused(f"a {type(value).__name__} literal (line {_line(node)})")


def _line(node: ast.AST) -> int:
    return int(getattr(node, "lineno", 0))
