"""The import graph of vgpt_jax/ and data_pipelines/: no cycles, and layers import downward only.

Every module is parsed with ``ast`` (nothing is imported); every ``import`` / ``from ... import``
anywhere in a module, at the top or inside a function, is an edge to the module it names
(``from a.b import c`` names ``a.b.c`` when that is a module, else ``a.b``). Only edges between
modules of the two packages count.

Layers, lowest first; a module may import its own layer and those below it, never one above:

    0  vgpt_jax.nn                                   layers, attention, the token vocabulary
    1  vgpt_jax.models                               Video-GPT, the clip tokenizer, the layout
    2  vgpt_jax.checkpoint, vgpt_jax.convert         weights on disk, official formats
    3  data_pipelines                                sources, transforms, video files, latents
    4  vgpt_jax.sample, .train, .evaluation          the jobs of the method
    5  vgpt_jax.tools, .demo, .cli                   scaffolding, the demo, the command line

Base modules, ``vgpt_jax`` itself, ``vgpt_jax.config``, ``vgpt_jax.parallel`` and
``vgpt_jax.diffusion``, hold what every layer shares (the config schema, the mesh and its
shardings, the flow-matching maths); any module may import them, and they import only each other.

Importing ``a.b.c`` also runs the ``__init__`` of ``a`` and ``a.b``. Those implicit edges are not
in the graph; instead a package ``__init__`` may import base modules only, so they cannot close a
cycle or reach upward.
"""

import ast
import pathlib

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("vgpt_jax", "data_pipelines")
BASE = ("vgpt_jax", "vgpt_jax.config", "vgpt_jax.device_stats", "vgpt_jax.parallel", "vgpt_jax.diffusion")
LAYERS = (
    ("vgpt_jax.nn",),
    ("vgpt_jax.models",),
    ("vgpt_jax.checkpoint", "vgpt_jax.convert"),
    ("data_pipelines",),
    ("vgpt_jax.sample", "vgpt_jax.train", "vgpt_jax.evaluation"),
    ("vgpt_jax.tools", "vgpt_jax.demo", "vgpt_jax.cli"),
)


def _modules() -> dict[str, pathlib.Path]:
    """Dotted name -> file of every module of the packages (a package is its ``__init__``)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _is_base(name: str) -> bool:
    return name == "vgpt_jax" or any(name == b or name.startswith(b + ".") for b in BASE[1:])


def _layer(name: str) -> int:
    """-1 for a base module, else the index of its layer."""
    if _is_base(name):
        return -1
    for level, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{name} is in no layer: add its package to LAYERS or BASE in {__file__}")


def _imports(name: str, path: pathlib.Path, modules: dict[str, pathlib.Path]) -> set[str]:
    """The modules of the packages that ``name`` imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1 more
                package = name.split(".") if is_package else name.split(".")[:-1]
                anchor = package[: len(package) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a.b.c: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return out


def test_the_graph_is_read():
    """Known edges are found, so an empty graph cannot pass the other tests."""
    graph = _graph()
    assert "vgpt_jax.nn.tokens" in graph["vgpt_jax.nn.attention"]
    assert "vgpt_jax.convert.vae" in graph["vgpt_jax.checkpoint.tokenizer"]
    assert "vgpt_jax.evaluation.physics_iq.score" in graph["vgpt_jax.cli.physics_iq"]
    assert "vgpt_jax.sample.predict" in graph["vgpt_jax.cli.sample"]  # inside a function
    assert len(graph) > 80
    assert [_layer(m) for m in ("vgpt_jax.config", "vgpt_jax.nn.tokens", "data_pipelines.video_io")] == [
        -1,
        0,
        3,
    ]
    assert _layer("vgpt_jax.evaluation.physics_iq.layout") > _layer("vgpt_jax.checkpoint.tokenizer")


def test_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, f"import cycles: {cycles}"


def test_layers_import_downward_only():
    graph = _graph()
    upward = [
        f"{name} (layer {_layer(name)}) imports {target} (layer {_layer(target)})"
        for name, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer(target) > _layer(name)
    ]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_package_inits_import_base_modules_only():
    modules = _modules()
    bad = [
        f"{name} imports {target}"
        for name, path in modules.items()
        if path.name == "__init__.py"
        for target in sorted(_imports(name, path, modules))
        if not _is_base(target)
    ]
    assert not bad, bad
