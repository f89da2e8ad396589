"""A static scan of a user's model code, on its syntax tree: advice for the reader, never a boundary.

It points at code that spawns processes, evaluates strings, opens raw sockets, loads C libraries, imports
modules by computed names, reaches dangerous attributes through ``getattr`` with a computed name
(``getattr(os, "sys" + "tem")``), or writes files outside the working folder. A scan of Python cannot
stop code that means harm (an alias, ``sys.modules``, a ``.pyc``, an encoding cookie all pass it), so
nothing is refused on its word: untrusted code runs in the sandbox (:mod:`harness.sandbox`), and the
findings are listed as warnings in the report and on the terminal, for whoever decides to trust the code.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

FORBIDDEN_MODULES = {
    "subprocess": "process spawning",
    "pty": "process spawning",
    "socket": "raw sockets",
    "ctypes": "loading C libraries",
    "cffi": "loading C libraries",
    "multiprocessing": "process spawning",
    "webbrowser": "launching programs",
}
FORBIDDEN_CALLS = {
    "eval": "evaluates a string as code",
    "exec": "executes a string as code",
    "compile": "compiles a string to code",
    "__import__": "imports a module by a computed name",
    "globals": "reaches the module namespace dynamically",
    "breakpoint": "opens a debugger",
}
FORBIDDEN_ATTRIBUTES = {
    ("os", "system"): "runs a shell command",
    ("os", "popen"): "runs a shell command",
    ("os", "fork"): "spawns a process",
    ("os", "kill"): "signals processes",
    ("importlib", "import_module"): "imports a module by a computed name",
    ("shutil", "rmtree"): "deletes folders",
    ("builtins", "eval"): "evaluates a string as code",
    ("builtins", "exec"): "executes a string as code",
}
FORBIDDEN_ATTRIBUTE_PREFIXES = {("os", "exec"): "replaces the process", ("os", "spawn"): "spawns a process"}
DYNAMIC_ACCESS_TARGETS = {"os", "sys", "builtins", "subprocess", "importlib", "shutil", "__builtins__"}
WRITE_MODES = set("wax+")


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    what: str  # the construct, e.g. "os.system"
    why: str  # why it is refused

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} ({self.why})"


def _dotted(node: ast.AST) -> str | None:
    """``os.path.join`` for an attribute chain of names, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.aliases: dict[str, str] = {}  # local name -> module or module.attribute it stands for

    def flag(self, node: ast.AST, what: str, why: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), what, why))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            root = alias.name.split(".")[0]
            if root in FORBIDDEN_MODULES:
                self.flag(node, f"import {alias.name}", FORBIDDEN_MODULES[root])
            self.aliases[alias.asname or root] = alias.name if alias.asname else root
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        root = module.split(".")[0]
        if root in FORBIDDEN_MODULES:
            self.flag(node, f"from {module} import ...", FORBIDDEN_MODULES[root])
        for alias in node.names:
            qualified = (root, alias.name)
            if qualified in FORBIDDEN_ATTRIBUTES or any(
                root == prefix_root and alias.name.startswith(prefix)
                for prefix_root, prefix in FORBIDDEN_ATTRIBUTE_PREFIXES
            ):
                self.flag(node, f"from {module} import {alias.name}", self._why(root, alias.name))
            if alias.name in FORBIDDEN_CALLS and root == "builtins":
                self.flag(node, f"from builtins import {alias.name}", FORBIDDEN_CALLS[alias.name])
            self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        self.generic_visit(node)

    def _why(self, module: str, attribute: str) -> str:
        if (module, attribute) in FORBIDDEN_ATTRIBUTES:
            return FORBIDDEN_ATTRIBUTES[(module, attribute)]
        for (prefix_module, prefix), why in FORBIDDEN_ATTRIBUTE_PREFIXES.items():
            if module == prefix_module and attribute.startswith(prefix):
                return why
        return ""

    def _resolve(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        target = self.aliases.get(head, head)
        return f"{target}.{rest}" if rest else target

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node)
        if dotted:
            resolved = self._resolve(dotted)
            module, _, attribute = resolved.rpartition(".")
            why = self._why(module.split(".")[0], attribute) if module else ""
            if why:
                self.flag(node, resolved, why)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        function = node.func
        name = self._resolve(_dotted(function)) if _dotted(function) else None
        if isinstance(function, ast.Name) and function.id in FORBIDDEN_CALLS and name == function.id:
            self.flag(node, f"{function.id}()", FORBIDDEN_CALLS[function.id])
        if name is not None:
            module, _, attribute = name.rpartition(".")
            if module and self._why(module.split(".")[0], attribute):
                pass  # flagged by visit_Attribute
            elif name in (f"builtins.{call}" for call in FORBIDDEN_CALLS):
                self.flag(node, f"{name}()", FORBIDDEN_CALLS[name.split(".")[1]])
        if name in ("getattr", "setattr", "delattr") and len(node.args) >= 2:
            self._dynamic_access(node, name)
        if name in ("open", "io.open", "builtins.open"):
            self._file_write(node)
        if isinstance(function, ast.Attribute) and function.attr in (
            "write_text",
            "write_bytes",
            "touch",
            "unlink",
            "mkdir",
        ):
            target = function.value
            if isinstance(target, ast.Call) and _dotted(target.func) in ("Path", "pathlib.Path") and target.args:
                self._outside(node, target.args[0], f"Path(...).{function.attr}")
        self.generic_visit(node)

    def _dynamic_access(self, node: ast.Call, name: str) -> None:
        target, attribute = node.args[0], node.args[1]
        target_name = self._resolve(_dotted(target)) if _dotted(target) else None
        literal = attribute.value if isinstance(attribute, ast.Constant) and isinstance(attribute.value, str) else None
        root = (target_name or "").split(".")[0]
        if root in DYNAMIC_ACCESS_TARGETS or (isinstance(target, ast.Call) and _dotted(target.func) == "__import__"):
            if literal is None:
                self.flag(
                    node,
                    f"{name}({target_name or '...'}, <computed name>)",
                    "reaches a module attribute by a computed name",
                )
            elif self._why(root, literal) or literal in FORBIDDEN_CALLS:
                self.flag(
                    node, f"{name}({target_name}, {literal!r})", self._why(root, literal) or FORBIDDEN_CALLS[literal]
                )

    def _file_write(self, node: ast.Call) -> None:
        mode_node = (
            node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        )
        if mode_node is None:
            return
        if not (isinstance(mode_node, ast.Constant) and isinstance(mode_node.value, str)):
            self.flag(node, "open(..., <computed mode>)", "may write files")
            return
        if WRITE_MODES & set(mode_node.value) and node.args:
            self._outside(node, node.args[0], "open(..., 'w')")

    def _outside(self, node: ast.Call, path_node: ast.AST, what: str) -> None:
        """Flag writes to absolute paths, parent folders, the home folder, or computed paths."""
        if isinstance(path_node, ast.Constant) and isinstance(path_node.value, str):
            path = path_node.value
            if path.startswith(("/", "~", "\\")) or ".." in Path(path).parts or (len(path) > 1 and path[1] == ":"):
                self.flag(node, f"{what} to {path!r}", "writes outside the working folder")
        elif not isinstance(path_node, ast.JoinedStr):
            self.flag(node, f"{what} to a computed path", "may write outside the working folder")


def scan_source(source: str, path: str = "<string>") -> list[Finding]:
    """Every dangerous construct in ``source``; a syntax error, or code nested too deeply for Python's parser or
    this scanner (a very long expression), is reported as a finding too: advice, never a crash."""
    try:
        tree = ast.parse(source, filename=path)
        scanner = _Scanner(path)
        scanner.visit(tree)
    except SyntaxError as error:
        return [Finding(path, error.lineno or 0, "syntax error", str(error.msg))]
    except (RecursionError, MemoryError):
        return [Finding(path, 0, "code nested too deeply to scan", "its contents were not inspected")]
    return sorted(scanner.findings, key=lambda finding: (finding.path, finding.line))


def scan_paths(paths: list[Path]) -> list[Finding]:
    """Scan every ``.py`` file (folders recursively, skipping hidden and virtual-env folders inside them)."""
    findings: list[Finding] = []
    for path in paths:
        files = [path] if path.is_file() else sorted(
            p for p in path.rglob("*.py")
            if not any(part.startswith(".") or part in ("venv", "site-packages") for part in p.relative_to(path).parts)
        )  # fmt: skip
        for file in files:
            findings.extend(scan_source(file.read_text(encoding="utf-8", errors="replace"), str(file)))
    return findings


def scan_advice(selectors: list[str]) -> list[str]:
    """The findings in the code of the path selectors among ``selectors``, one line each (advice only)."""
    from harness.loading import is_path_selector

    paths = [Path(s.rpartition(":")[0]).expanduser() for s in selectors if ":" in s and is_path_selector(s)]
    return [str(finding) for finding in scan_paths([path for path in paths if path.exists()])]
