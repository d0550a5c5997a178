"""Render README.md from nbs/index.ipynb with nbconvert's markdown exporter (Quarto cannot be installed here).

    python .ci/render_readme.py          # write README.md
    python .ci/render_readme.py --check  # exit 1 if README.md differs from what index.ipynb renders to
"""
import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- Generated from nbs/index.ipynb by .ci/render_readme.py: edit the notebook, not this file. -->\n\n'

def render() -> str:
    nb = nbformat.read(ROOT / 'nbs' / 'index.ipynb', as_version=4)
    # nbdev directives (#| hide, #| export) are for the library, not for readers
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'code' and c.source.lstrip().startswith('#| hide'))]
    body, _ = MarkdownExporter(exclude_output=False).from_notebook_node(nb)
    lines = [l.rstrip() for l in body.strip().splitlines()]
    out, blank = [], False
    for l in lines:  # collapse runs of blank lines
        if l == '' and blank: continue
        out.append(l); blank = l == ''
    return HEADER + '\n'.join(out) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT / 'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text(encoding='utf-8') != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python .ci/render_readme.py` and commit it')
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
