"""Name resolution for the code review: what a name in submitted code stands for.

Names are resolved through the code's own imports *and* assignments, so
``import requests as r; r.post(...)`` is ``requests.post``, ``o = os;
o.system(...)`` is ``os.system`` and ``g = getattr; g(os, "system")`` is too.
Resolution follows attribute chains, ``getattr(x, "a")``, ``__import__("m")``,
``importlib.import_module``, ``operator.attrgetter("a")(x)``, namespace lookups
(``globals()["os"]``, ``vars(os)["system"]``, ``os.__dict__["system"]``,
``sys.modules["os"]``, ``__builtins__["eval"]``), default arguments and the
arguments of calls to the code's own functions. Strings a name is built from
are evaluated when they are constants (``"sys" + "tem"``,
``bytes.fromhex(...).decode()``) by :mod:`domains.review.fold`; what names are
bound to is collected by :mod:`domains.review.bindings`.

The analysis is flow-insensitive on purpose: a name stands for everything it is
ever bound to, anywhere in the source. That over-approximates, which for a
review means erring towards flagging, and it cannot be fooled by order.
"""

from __future__ import annotations

import ast

from domains.review.bindings import Bindings, dotted, elements
from domains.review.fold import ConstantFolder

GLOBALS = "<globals>"  # globals() and friends, as a pseudo-name
LOCALS = "<locals>"
SOME_NAMESPACE = "<vars>"  # vars(x) of an object the review cannot name
NAMESPACE_MARKS = frozenset({GLOBALS, LOCALS, SOME_NAMESPACE})
IMPORTERS = frozenset({"__import__", "importlib.import_module", "importlib.__import__"})

# Calls whose result is a filesystem path, so `p.rename(...)` moves a file.
_PATH_CONSTRUCTORS = frozenset({"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath",
                                "pathlib.WindowsPath", "Path"})
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Map each name bound by an import anywhere in ``tree`` to the dotted name it stands for."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                root = alias.name.split(".")[0]
                aliases[alias.asname or root] = alias.name if alias.asname else root
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:
                if alias.name != "*":
                    full = f"{base}.{alias.name}" if base else alias.name
                    aliases[alias.asname or alias.name] = full
    return aliases


def literal_str(node: ast.expr | None) -> str | None:
    """The string ``node`` spells out literally, or None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def snippet(node: ast.AST, limit: int = 60) -> str:
    """Source text of ``node`` for a message, shortened so the message stays one line."""
    text = ast.unparse(node)
    first, *more = text.splitlines() or [""]
    if more or len(first) > limit:
        return first[: limit - 3] + "..."
    return first


def _normal(name: str) -> str:
    """``builtins.open`` is ``open``; ``builtins.__dict__`` stays, it is a namespace."""
    if name.startswith("builtins.") and name != "builtins.__dict__":
        return name[len("builtins."):]
    return name


class Resolver(ConstantFolder):
    """What the names and constant expressions of one source stand for.

    ``names(node)`` is every dotted name an expression may refer to (empty for
    values the code computes itself); ``values(node)`` the constants it may
    evaluate to, or None when any of them is unknown.
    """

    def __init__(self, tree: ast.AST) -> None:
        super().__init__()
        self.imports = import_aliases(tree)
        self.bindings = Bindings(tree)
        self.modules = frozenset(self.imports.values()) | {"builtins"}
        self._names: dict[ast.AST | str, frozenset[str]] = {}

    # -- names ---------------------------------------------------------------------------------

    def names(self, node: ast.AST) -> frozenset[str]:
        if node in self._names:
            return self._names[node]
        if node in self._busy:
            return frozenset()
        self._busy.add(node)
        try:
            result = frozenset(self._names_of(node))
        finally:
            self._busy.discard(node)
        self._names[node] = result
        return result

    def qual(self, node: ast.AST) -> str | None:
        """One dotted name ``node`` refers to (the first in order), or None."""
        found = self.names(node)
        return min(found) if found else None

    def lookup(self, name: str) -> frozenset[str]:
        """What a bare name stands for: an import, what the code binds it to, or itself."""
        key = "name:" + name
        if key in self._names:
            return self._names[key]
        if key in self._busy:
            return frozenset()
        self._busy.add(key)
        try:
            result = frozenset(self._lookup(name))
        finally:
            self._busy.discard(key)
        self._names[key] = result
        return result

    def _lookup(self, name: str) -> set[str]:
        found: set[str] = set()
        if name in self.imports:
            found.add(self.imports[name])
        for value in self.bindings.values.get(name, []):
            if value is not None:
                found |= self.names(value)
        for iterable in self.bindings.iters.get(name, []):
            for element in elements(iterable):
                found |= self.names(element)
        bound = name in self.bindings.values or name in self.bindings.iters
        if name not in self.imports and not bound:
            found.add("builtins" if name == "__builtins__" else name)
        return found

    def _names_of(self, node: ast.AST) -> set[str]:
        if isinstance(node, ast.Name):
            return set(self.lookup(node.id))
        if isinstance(node, ast.Attribute):
            found = {self._member_name(base, node.attr) for base in self.names(node.value)}
            key = dotted(node)
            for value in self.bindings.values.get(key or "", []):
                if value is not None:
                    found |= self.names(value)
            return found
        if isinstance(node, ast.Subscript):
            found = set(self._container_item(node))
            for base in self.names(node.value):
                found |= self.members(base, self.texts(node.slice))
            return found
        if isinstance(node, ast.Call):
            return self._call_names(node)
        if isinstance(node, ast.IfExp):
            return set(self.names(node.body) | self.names(node.orelse))
        if isinstance(node, ast.BoolOp):
            return {n for value in node.values for n in self.names(value)}
        if isinstance(node, ast.NamedExpr):
            return set(self.names(node.value))
        return set()

    @staticmethod
    def _member_name(base: str, attr: str) -> str:
        if base == "builtins" and attr == "__dict__":
            return "builtins.__dict__"
        return _normal(f"{base}.{attr}")

    def members(self, base: str, keys: frozenset[str] | None) -> set[str]:
        """What ``base[key]`` names when ``base`` is a namespace: ``vars(os)["system"]``."""
        if not keys:
            return set()
        if base in (GLOBALS, LOCALS):
            return {n for key in keys for n in self.lookup(key)}
        if base.endswith(".__dict__"):
            return {_normal(f"{base[: -len('.__dict__')]}.{key}") for key in keys}
        if base in ("sys.modules", "builtins"):
            return set(keys)
        return set()

    def _container_item(self, node: ast.Subscript) -> set[str]:
        """``d["o"]`` where the code bound ``d = {"o": os}``."""
        if not isinstance(node.value, ast.Name):
            return set()
        keys = self.values(node.slice) or frozenset()
        found: set[str] = set()
        for value in self.bindings.values.get(node.value.id, []):
            if isinstance(value, ast.Dict):
                for key, item in zip(value.keys, value.values, strict=True):
                    if key is not None and (self.values(key) or frozenset()) & keys:
                        found |= self.names(item)
            items = elements(value) if value is not None else []
            for index, item in enumerate(items):
                if index in keys or index - len(items) in keys:
                    found |= self.names(item)
        return found

    def _call_names(self, node: ast.Call) -> set[str]:
        func = self.names(node.func)
        args = [a for a in node.args if not isinstance(a, ast.Starred)]
        found: set[str] = set()
        if "getattr" in func and len(args) >= 2:
            for key in self.texts(args[1]) or ():
                found |= {self._member_name(base, key) for base in self.names(args[0])}
        if func & IMPORTERS and args:
            for key in self.texts(args[0]) or ():
                found |= {key, key.split(".")[0]}
        if "importlib.reload" in func and args:
            found |= self.names(args[0])
        found |= self._namespace_call(func, args)
        if isinstance(node.func, ast.Call) and node.func.args and args \
                and self.names(node.func.func) & {"operator.attrgetter", "operator.methodcaller"}:
            for key in self.texts(node.func.args[0]) or ():
                found |= {self._member_name(base, key) for base in self.names(args[0])}
        if isinstance(node.func, ast.Attribute) and node.func.attr in ("get", "pop", "setdefault") \
                and args:
            for base in self.names(node.func.value):
                found |= self.members(base, self.texts(args[0]))
        return found

    def _namespace_call(self, func: frozenset[str], args: list[ast.expr]) -> set[str]:
        if "globals" in func:
            return {GLOBALS}
        if "locals" in func or ("vars" in func and not args):
            return {LOCALS}
        if "vars" in func:
            bases = self.names(args[0])
            return {f"{b}.__dict__" for b in bases} if bases else {SOME_NAMESPACE}
        return set()

    def is_module(self, node: ast.AST) -> bool:
        """Whether ``node`` is a module the code imported (or ``builtins``), or a chain on one."""
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        if not isinstance(root, ast.Name):
            return False
        return root.id in self.imports or bool(self.lookup(root.id) & self.modules)

    def is_namespace(self, node: ast.AST) -> bool:
        """``globals()``, ``vars(x)``, ``x.__dict__``, ``sys.modules`` or a name bound to one."""
        return any(n in NAMESPACE_MARKS or n.endswith("__dict__") or n == "sys.modules"
                   for n in self.names(node))

def find_function(tree: ast.Module, name: str | None) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The submitted function: ``name`` if given, else the first one defined at top level."""
    top = [node for node in tree.body if isinstance(node, _FUNCTIONS)]
    nested = [node for node in ast.walk(tree) if isinstance(node, _FUNCTIONS)]
    return next((node for node in top + nested if name is None or node.name == name), None)


def parameters(func: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[str]:
    args = func.args
    every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
    return [arg.arg for arg in every if arg is not None]


class SourceContext:
    """Facts about the whole source that single-node checks need.

    ``resolver`` says what names stand for, ``parents`` maps each node to its
    parent, and ``paths`` holds the names bound to pathlib paths.
    """

    def __init__(self, tree: ast.AST) -> None:
        self.tree = tree
        self.resolver = Resolver(tree)
        self.aliases = self.resolver.imports
        self.parents: dict[ast.AST, ast.AST] = {}
        self.paths: set[str] = set()
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                    and isinstance(node.targets[0], ast.Name) and self.is_path(node.value):
                self.paths.add(node.targets[0].id)

    def qual(self, node: ast.AST) -> str | None:
        return self.resolver.qual(node)

    def names(self, node: ast.AST) -> frozenset[str]:
        return self.resolver.names(node)

    def is_namespace(self, node: ast.AST) -> bool:
        return self.resolver.is_namespace(node)

    def is_module(self, node: ast.AST) -> bool:
        return self.resolver.is_module(node)

    def is_path(self, node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.paths
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.is_path(node.left)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and self.is_path(func.value):
                return True  # p.with_suffix(...), p.resolve(), ...
            return any(q in _PATH_CONSTRUCTORS or q.rsplit(".", 1)[0] in _PATH_CONSTRUCTORS
                       for q in self.names(func))
        return False
