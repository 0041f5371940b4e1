"""The layout holds: packages import one way, no cycles, no private names across
modules, thin tools.

Imports run tools -> modeling -> pipeline: pipeline never imports modeling or
tools, modeling never imports tools, nothing imports tools (tools import their own
flag modules only). The import graph of pipeline/ and modeling/ (module-level and
function-level imports alike, read from the source) has no cycle, and every module
imports.
"""

import ast
import importlib
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pipeline", "modeling")
MAX_TOOL_LINES = 150


def _modules():
  """{dotted module name: path} of every module of the packages."""
  found = {}
  for package in PACKAGES:
    for directory, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(directory, name)
          dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          found[dotted.removesuffix(".__init__")] = path
  return found


MODULES = _modules()


def _imports(path):
  """(dotted names imported, (module, name) pairs of `from m import name`)."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  names, froms = set(), set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
      for alias in node.names:
        froms.add((node.module, alias.name))
        if f"{node.module}.{alias.name}" in MODULES:  # from pkg import module
          names.add(f"{node.module}.{alias.name}")
  return names, froms


def _own(name):
  return name.split(".")[0] in PACKAGES + ("tools",)


def _graph():
  """{module: set of our modules it imports} (packages resolved to their modules)."""
  graph = {}
  for module, path in MODULES.items():
    names, _ = _imports(path)
    graph[module] = {n for n in names if n in MODULES and n != module}
  return graph


def _cycle(graph):
  """One import cycle as a list of modules, or None (iterative DFS, 3 colours)."""
  colour, parent = {m: 0 for m in graph}, {}
  for start in sorted(graph):
    if colour[start]:
      continue
    stack = [(start, iter(sorted(graph[start])))]
    colour[start] = 1
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        colour[node] = 2
        stack.pop()
      elif colour[child] == 1:
        path = [node]
        while path[-1] != child:
          path.append(parent[path[-1]])
        return list(reversed(path)) + [child]
      elif colour[child] == 0:
        colour[child], parent[child] = 1, node
        stack.append((child, iter(sorted(graph[child]))))
  return None


def test_cycle_finder_finds_a_planted_cycle():
  assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
  assert _cycle(_graph()) is None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_imports(module):
  importlib.import_module(module)


def _wrong_direction(module, path):
  names, _ = _imports(path)
  top = module.split(".")[0]
  banned = {"pipeline": ("modeling", "tools"), "modeling": ("tools",)}[top]
  return sorted(n for n in names if n.split(".")[0] in banned)


def test_imports_run_one_way():
  wrong = {m: _wrong_direction(m, p) for m, p in MODULES.items()}
  assert not {m: w for m, w in wrong.items() if w}


def _python_files(*folders):
  for folder in folders:
    for directory, _, files in os.walk(os.path.join(ROOT, folder)):
      for name in files:
        if name.endswith(".py"):
          yield os.path.join(directory, name)


def _tool_imports(path):
  """What a file imports from tools/, but for the console-script entry module
  (tools.entry, which tests exercise as pip's scripts would)."""
  names, froms = _imports(path)
  found = {n for n in names if n.split(".")[0] == "tools" and not n.startswith("tools.entry")}
  found -= {"tools"} if ("tools", "entry") in froms else set()
  return sorted(found | {f"{m}.{n}" for m, n in froms if m == "tools" and n != "entry"})


def test_nothing_imports_tools():
  offenders = {}
  for path in _python_files("pipeline", "modeling", "tests", "bench"):
    found = _tool_imports(path)
    if found:
      offenders[os.path.relpath(path, ROOT)] = found
  assert not offenders


def _private_uses(path):
  """Our modules' private names used from another module: `from m import _x`
  and `alias._x` where alias is one of our modules."""
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  aliases, found = {}, []
  for node in ast.walk(tree):
    if isinstance(node, ast.ImportFrom) and node.module and _own(node.module):
      for alias in node.names:
        dotted = f"{node.module}.{alias.name}"
        if alias.name.startswith("_") and not alias.name.startswith("__"):
          found.append(dotted)
        if dotted in MODULES:
          aliases[alias.asname or alias.name] = dotted
  for node in ast.walk(tree):
    if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and
        node.value.id in aliases and node.attr.startswith("_") and
        not node.attr.startswith("__")):
      found.append(f"{aliases[node.value.id]}.{node.attr}")
  return found


def test_no_private_names_across_modules():
  found = {}
  for path in _python_files("pipeline", "modeling", "tools"):
    uses = _private_uses(path)
    if uses:
      found[os.path.relpath(path, ROOT)] = uses
  assert not found


def test_tools_are_thin():
  long = {}
  for name in sorted(os.listdir(os.path.join(ROOT, "tools"))):
    if name.endswith(".py"):
      with open(os.path.join(ROOT, "tools", name), encoding="utf-8") as f:
        lines = sum(1 for _ in f)
      if lines > MAX_TOOL_LINES:
        long[name] = lines
  assert not long, f"tools over {MAX_TOOL_LINES} lines: {long}"
