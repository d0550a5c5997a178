"Repository-level checks: packaging, the console script, README in sync with its notebook."
import ast, subprocess, sys
from pathlib import Path

import cyclegan_pws

ROOT = Path(__file__).resolve().parent.parent


def test_setup_py_does_not_import_pkg_resources():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    names = {a.name for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert 'pkg_resources' not in names | mods


def test_console_script_is_installed_and_runs():
    out = subprocess.run(['cyclegan-pws', '--version'], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f'cyclegan-pws {cyclegan_pws.__version__}'


def test_readme_matches_index_notebook():
    r = subprocess.run([sys.executable, str(ROOT / '.ci' / 'render_readme.py'), '--check'], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_every_notebook_exports_a_module():
    for nb in sorted((ROOT / 'nbs').glob('[0-9][0-9]_*.ipynb')):
        name = nb.stem.split('_', 1)[1]
        assert f'#| default_exp {name}' in nb.read_text(), f'{nb.name} should export cyclegan_pws/{name}.py'
        assert (ROOT / 'cyclegan_pws' / f'{name}.py').exists(), nb.name


def test_exported_modules_have_no_undefined_names():
    "A name defined only in a notebook's test cell works in nbdev_test but breaks the exported module."
    from pyflakes.api import check
    from pyflakes.reporter import Reporter
    import io
    for py in sorted((ROOT / 'cyclegan_pws').glob('*.py')):
        out = io.StringIO()
        check(py.read_text(), str(py), Reporter(out, out))
        undefined = [l for l in out.getvalue().splitlines() if 'undefined name' in l]
        assert not undefined, '\n'.join(undefined)


def test_readme_command_reference_lists_every_subcommand():
    "A new subcommand must be documented in the README's command table (nbs/index.ipynb)."
    import typer.main
    from cyclegan_pws.cli import app
    readme = (ROOT / 'README.md').read_text()
    table = readme[readme.index('## Command reference'):]
    missing = [name for name in typer.main.get_command(app).commands if f'| `{name}' not in table]
    assert not missing, f'README command reference lacks {missing}; add them to nbs/index.ipynb'


def test_readme_main_job_is_the_demo():
    "The README's first command runs the main job on the built-in default."
    readme = (ROOT / 'README.md').read_text()
    assert 'pip install -e . && cyclegan-pws demo --out demo' in readme


MODULES = sorted(p for p in (ROOT / 'cyclegan_pws').glob('*.py') if p.name not in ('_modidx.py', '__init__.py'))


def test_modules_stay_small():
    "One module, one job: none grows past ~450 lines (split it by responsibility when it does)."
    long = {p.name: n for p in MODULES if (n := len(p.read_text().splitlines())) > 460}
    assert not long, f'modules over 460 lines: {long}'


def test_no_private_name_is_imported_across_modules():
    "A name starting with `_` is its module's business; another module needing it means it should be public."
    bad = []
    for p in MODULES:
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('cyclegan_pws')):
                bad += [f'{p.name}: {node.module}.{a.name}' for a in node.names if a.name.startswith('_')]
    assert not bad, bad


def test_only_checkpoint_reads_and_writes_checkpoint_files():
    "One module owns the run folder's checkpoint files; everyone else goes through `checkpoint.load_run` & co."
    names = ('weights.safetensors', 'state.pt', 'meta.json')
    bad = [p.name for p in MODULES if p.name != 'checkpoint.py' and any(n in p.read_text() for n in names)]
    assert not bad, bad


def _imports(module: str) -> set[str]:
    "The package modules `module` imports, directly or through others."
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        if m in seen: continue
        seen.add(m)
        tree = ast.parse((ROOT / 'cyclegan_pws' / f'{m}.py').read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith('cyclegan_pws.'):
                todo.append(node.module.split('.')[1])
            elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                todo.append(node.module)
    return seen - {module}


def test_training_never_sees_the_unseen_stains():
    "The second stain model is for evaluation only: nothing that trains a model can import it."
    for task in ('remover', 'cyclegan', 'treatment', 'engine'):
        assert 'unseen_stains' not in _imports(task), (task, sorted(_imports(task)))


def test_remover_never_sees_the_synthetic_ground_truth():
    "The remover learns from unpaired faces: it cannot import the stain synthesiser (its masks and clean faces)."
    assert not {'synth', 'procedural', 'unseen_stains'} & _imports('remover'), sorted(_imports('remover'))
