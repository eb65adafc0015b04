"""User passes: registration, pipeline placement, plugins, and clear errors naming the pass."""
from __future__ import annotations

import onnx_ir as ir
import pytest

import mlpc
from mlpc.pass_infra import PassContext, PassManager, PassResult
from mlpc.pass_registry import get_pass, register_pass, unregister_pass
from mlpc.pipeline import default_pipeline, load_plugin


@pytest.fixture
def registered():
    names = []

    def register(name, **kwargs):
        names.append(name)
        return register_pass(name, **kwargs)

    yield register
    for name in names:
        unregister_pass(name)


def _tiny_model():
    from tiny_models import make_tiny_cnn

    return ir.serde.deserialize_model(make_tiny_cnn(batch=1))


def test_function_pass_joins_after_canonicalize(registered):
    @registered("count-relus")
    def count_relus(graph, ctx):
        """Counts Relu nodes."""
        ctx.options["relus"] = sum(n.op_type == "Relu" for n in graph)

    names = [p.name for p in default_pipeline()]
    assert names[names.index("canonicalize") + 1] == "count-relus"
    assert get_pass("count-relus").description == "Counts Relu nodes."
    ctx = PassContext()
    log = PassManager(default_pipeline()).run(_tiny_model(), ctx)
    assert ctx.options["relus"] == 1
    assert [r.modified for r in log if r.name == "count-relus"] == [False]


def test_before_and_after_placement(registered):
    registered("first", before="canonicalize")(lambda g, c: None)
    registered("second", after="first")(lambda g, c: None)
    names = [p.name for p in default_pipeline()]
    assert names.index("first") < names.index("second") < names.index("canonicalize")


def test_unknown_anchor_is_an_error(registered):
    registered("lost", after="no-such-pass")(lambda g, c: None)
    with pytest.raises(mlpc.PassError, match="'lost'.*'no-such-pass'"):
        default_pipeline()


def test_modified_is_detected_for_in_place_functions(registered):
    @registered("relu-to-sigmoid")
    def relu_to_sigmoid(graph, ctx):
        for node in graph:
            if node.op_type == "Relu":
                node.op_type = "Sigmoid"

    model = _tiny_model()
    p = get_pass("relu-to-sigmoid").factory()
    assert p(model.graph, PassContext()).modified
    assert not p(model.graph, PassContext()).modified


def test_class_pass_registration(registered):
    @registered("noop-class", description="does nothing")
    class Noop(mlpc.Pass):
        def run(self, graph, ctx):
            return PassResult(graph, False)

    p = get_pass("noop-class").factory()
    assert p.name == "noop-class" and not p(_tiny_model().graph).modified


def test_pass_returning_garbage_is_named(registered):
    registered("bad-return")(lambda g, c: 42)
    with pytest.raises(mlpc.PassError, match="'bad-return' returned int"):
        PassManager([get_pass("bad-return").factory()]).run(_tiny_model(), PassContext())


def test_pass_breaking_the_graph_is_caught_by_the_verifier(registered):
    @registered("cut-wire")
    def cut_wire(graph, ctx):
        relu = next(n for n in graph if n.op_type == "Relu")
        graph.remove(relu, safe=False)

    with pytest.raises(mlpc.PassError, match="'cut-wire'.*invalid graph"):
        PassManager([get_pass("cut-wire").factory()]).run(_tiny_model(), PassContext(verify_each=True))


def test_pass_renaming_a_graph_output_is_caught(registered):
    @registered("rename-output")
    def rename_output(graph, ctx):
        graph.outputs[0].name = "renamed"

    with pytest.raises(mlpc.PassError, match="'rename-output' changed the graph outputs.*'renamed'"):
        PassManager([get_pass("rename-output").factory()]).run(_tiny_model(), PassContext())


def test_pass_raising_is_named_with_predecessors(registered):
    def boom(graph, ctx):
        raise RuntimeError("kaboom")

    registered("boom")(boom)
    passes = [get_pass("canonicalize").factory(), get_pass("boom").factory()]
    with pytest.raises(mlpc.PassError, match="'boom' failed, after canonicalize: RuntimeError: kaboom"):
        PassManager(passes).run(_tiny_model(), PassContext())


def test_builtin_names_are_protected():
    with pytest.raises(mlpc.PassError, match="built-in"):
        register_pass("canonicalize")(lambda g, c: None)


@pytest.mark.parametrize(
    "source, needle",
    [
        (None, "no such file"),
        ("def broken(:\n", "syntax error at line 1"),
        ("import no_such_module_xyz\n", "ModuleNotFoundError"),
    ],
)
def test_plugin_errors_name_the_file(tmp_path, source, needle):
    path = tmp_path / "plugin.py"
    if source is not None:
        path.write_text(source)
    with pytest.raises(mlpc.PassError, match=needle) as info:
        load_plugin(path)
    assert "plugin.py" in str(info.value)


def test_plugin_registers_passes(tmp_path):
    path = tmp_path / "my_passes.py"
    path.write_text(
        "import mlpc\n"
        "@mlpc.register_pass('plugin-noop', description='from a plugin')\n"
        "def plugin_noop(graph, ctx):\n"
        "    return graph\n"
    )
    try:
        assert load_plugin(path) == ["plugin-noop"]
        assert "plugin-noop" in [p.name for p in default_pipeline()]
    finally:
        unregister_pass("plugin-noop")


def test_installed_package_contributes_passes_through_entry_points(tmp_path, monkeypatch):
    """A package advertising `[mlpc.passes]` in its entry points has its passes registered."""
    from mlpc.pipeline import load_entry_point_passes

    (tmp_path / "acme_passes.py").write_text(
        "import mlpc\n"
        "@mlpc.register_pass('acme-noop', description='from an installed package')\n"
        "def acme_noop(graph, ctx):\n"
        "    return None\n"
    )
    dist = tmp_path / "acme_passes-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-passes\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mlpc.passes]\nacme = acme_passes\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_entry_point_passes() == ["acme-noop"]
        assert get_pass("acme-noop").description == "from an installed package"
    finally:
        unregister_pass("acme-noop")
