"""Name resolution for the code review: what a name in submitted code stands for.

Names are resolved through the code's own imports, so ``import requests as r;
r.post(...)`` is reported as ``requests.post``, and ``from os import system`` as
``os.system``. ``getattr(os, "system")`` and ``__import__("os").system`` resolve
the same way. A bare name that the code assigns itself (a list called
``requests``) is not mistaken for the module.

Both halves of the review use this: :mod:`domains.review_rules` to match names
against its rules, :mod:`domains.review_taint` to recognise library calls.
"""

from __future__ import annotations

import ast

# Calls whose result is a filesystem path, so `p.rename(...)` moves a file.
_PATH_CONSTRUCTORS = frozenset({"pathlib.Path", "pathlib.PurePath", "pathlib.PosixPath",
                                "pathlib.WindowsPath", "Path"})
# Calls that hand back the program's own variables as a dict.
_NAMESPACE_CALLS = frozenset({"globals", "locals", "vars"})


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


def qualname(node: ast.AST, aliases: dict[str, str]) -> str | None:
    """Dotted name an expression refers to (``np.save`` -> ``numpy.save``), or None.

    ``getattr(x, "a")`` counts as ``x.a`` and ``__import__("m")`` as ``m``,
    because both are common ways to hide a name from a casual reader.
    """
    name: str | None = None
    if isinstance(node, ast.Name):
        name = aliases.get(node.id, node.id)
    elif isinstance(node, ast.Attribute):
        base = qualname(node.value, aliases)
        name = f"{base}.{node.attr}" if base else None
    elif isinstance(node, ast.Call) and node.args:
        func = qualname(node.func, aliases)
        if func == "getattr" and len(node.args) >= 2 and literal_str(node.args[1]):
            base = qualname(node.args[0], aliases)
            name = f"{base}.{literal_str(node.args[1])}" if base else None
        elif func in ("__import__", "importlib.import_module"):
            name = literal_str(node.args[0])
    if name and name.startswith("builtins."):
        return name[len("builtins."):]
    return name


class SourceContext:
    """Facts about the whole source that single-node checks need.

    ``aliases`` maps imported names to what they stand for, ``parents`` each
    node to its parent, and ``locals`` holds the names the code binds itself.
    """

    def __init__(self, tree: ast.AST) -> None:
        self.aliases = import_aliases(tree)
        self.parents: dict[ast.AST, ast.AST] = {}
        assigned: set[str] = set()
        self.namespaces: set[str] = set()  # names bound to globals()/locals()/vars()
        self.paths: set[str] = set()  # names bound to pathlib paths
        for node in ast.walk(tree):
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                assigned.add(node.id)
            elif isinstance(node, ast.arg):
                assigned.add(node.arg)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assigned.add(node.name)  # a helper called `urlopen` is the code's own
            elif isinstance(node, ast.Assign) and len(node.targets) == 1:
                self._note_binding(node.targets[0], node.value)
        self.locals = assigned - set(self.aliases)

    def _note_binding(self, target: ast.expr, value: ast.expr) -> None:
        if not isinstance(target, ast.Name):
            return
        if self.is_namespace(value):
            self.namespaces.add(target.id)
        if self.is_path(value):
            self.paths.add(target.id)

    def qual(self, node: ast.AST) -> str | None:
        return qualname(node, self.aliases)

    def is_namespace(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.namespaces
        return isinstance(node, ast.Call) and self.qual(node.func) in _NAMESPACE_CALLS

    def is_path(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.paths
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.is_path(node.left)
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and self.is_path(func.value):
                return True  # p.with_suffix(...), p.resolve(), ...
            qual = self.qual(func) or ""
            return qual in _PATH_CONSTRUCTORS or qual.rsplit(".", 1)[0] in _PATH_CONSTRUCTORS
        return False

    def is_module(self, node: ast.expr) -> bool:
        root = node
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and root.id in self.aliases


def snippet(node: ast.AST, limit: int = 60) -> str:
    """Source text of ``node`` for a message, shortened so the message stays one line."""
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."
