"""Integration tests of `cyclegan_pws.scrape` against a real HTTP server on 127.0.0.1 (and SerpApi mocked with
`responses` at the transport level). Timeouts are tiny and backoff sleeps are recorded, not slept."""
import hashlib, io, json, logging, threading, time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest
import requests
from PIL import Image
from skimage import data as skdata

pytest.importorskip('serpapi'); pytest.importorskip('imagehash'); responses = pytest.importorskip('responses')

from cyclegan_pws.cli import main
from cyclegan_pws.io import read_jsonl
from cyclegan_pws.scrape import (MANIFEST, SEARCH_CACHE, DownloadConfig, MissingAPIKey, SearchError,
                                 download_images, download_urls, scrape, serpapi_client)

SERP = 'https://serpapi.com/search'
KEY = 'sk-test-9f8e7d6c5b4a'
CAP = 300_000  # bytes; small so the oversize bodies stay cheap


def encode(arr, fmt='JPEG', size=None, **kw):
    im = Image.fromarray(arr)
    if size: im = im.resize(size)
    b = io.BytesIO(); im.save(b, fmt, **kw); return b.getvalue()


def jpeg_with_gps_and_rotation():
    "A 200x120 JPEG whose EXIF holds GPS coordinates and Orientation=6 (display rotated 90 degrees)."
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = 'PhoneMaker'
    gps = exif.get_ifd(0x8825)
    gps.update({1: 'N', 2: (51.0, 30.0, 12.5), 3: 'W', 4: (0.0, 7.0, 39.0)})
    return encode(skdata.astronaut()[100:220, 100:300], exif=exif.tobytes(), quality=90)


ASTRONAUT = encode(skdata.astronaut(), size=(256, 256), quality=90)
ASTRONAUT_BIG = encode(skdata.astronaut(), size=(480, 480), quality=70)   # same photo, re-encoded larger
COFFEE_PNG = encode(skdata.coffee(), 'PNG', size=(300, 200))
CHELSEA = encode(skdata.chelsea(), quality=90)
GPS = jpeg_with_gps_and_rotation()
HUGE = encode(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8), quality=100)
assert len(HUGE) > CAP


class Server:
    "A real HTTP server on an ephemeral port; `routes` maps a path to (status, headers, body | callable)."
    def __init__(self):
        self.hits, self.routes = Counter(), {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = 'HTTP/1.0'  # close-delimited bodies: a missing Content-Length is legal
            def log_message(self, *a): pass
            def do_GET(self):
                path = urlsplit(self.path).path
                outer.hits[path] += 1
                status, headers, body = outer.routes.get(path, (404, {}, b'not found'))
                if callable(body): body = body()
                self.send_response(status)
                headers = {'Content-Length': str(len(body)), **headers}
                for k, v in headers.items():
                    if v is not None: self.send_header(k, v)
                self.end_headers()
                try: self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError): pass

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f'http://127.0.0.1:{self.httpd.server_port}'
        threading.Thread(target=self.httpd.serve_forever, kwargs={'poll_interval': 0.02}, daemon=True).start()

    def url(self, path): return self.base + path
    def close(self): self.httpd.shutdown(); self.httpd.server_close()


def slow_body():
    time.sleep(0.6)
    return ASTRONAUT


@pytest.fixture
def server():
    s = Server()
    jpg, png = {'Content-Type': 'image/jpeg'}, {'Content-Type': 'image/png'}
    s.routes.update({
        '/good.jpg': (200, jpg, ASTRONAUT),
        '/good.png': (200, png, COFFEE_PNG),
        '/dup-big.jpg': (200, jpg, ASTRONAUT_BIG),
        '/cat.jpg': (200, {'Content-Type': 'image/jpeg; charset=binary'}, CHELSEA),
        '/gps.jpg': (200, jpg, GPS),
        '/404.jpg': (404, {}, b'gone'),
        '/500.jpg': (500, {}, b'oops'),
        '/slow.jpg': (200, jpg, slow_body),
        '/to-file': (302, {'Location': 'file:///etc/passwd'}, b''),
        '/to-cat': (302, {'Location': '/cat.jpg'}, b''),
        '/html.jpg': (200, jpg, b'<!doctype html><html><body>Access denied</body></html>'),
        '/page.html': (200, {'Content-Type': 'text/html'}, b'<html></html>'),
        '/big-declared.jpg': (200, jpg, HUGE),
        '/big-nolength.jpg': (200, {**jpg, 'Content-Length': None}, HUGE),
        '/big-understated.jpg': (200, {**jpg, 'Content-Length': '1000'}, HUGE),
        '/truncated.jpg': (200, jpg, ASTRONAUT[:len(ASTRONAUT) // 2]),
    })
    yield s
    s.close()


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for v in ('HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy'):
        monkeypatch.delenv(v, raising=False)


def cfg(**kw):
    return DownloadConfig(**{'connect_timeout': 1.0, 'read_timeout': 0.2, 'retries': 2, 'backoff': 0.25,
                             'max_bytes': CAP, 'min_side': 64, **kw})


def run(server, tmp_path, paths, sleeps=None, **kw):
    out = tmp_path / 'out'
    counts = download_images([server.url(p) for p in paths], out, cfg=cfg(**kw),
                             sleep=(sleeps.append if sleeps is not None else (lambda s: None)))
    return counts, {r['url'].replace(server.base, ''): r for r in read_jsonl(out / MANIFEST)}, out


def pngs(out): return sorted(p.name for p in Path(out).iterdir() if p.suffix == '.png')
def leftovers(out): return [p.name for p in Path(out).iterdir() if p.name.endswith('.tmp')]


# ---------------------------------------------------------------- downloads

def test_good_jpeg_and_png_saved_under_content_hash(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/good.jpg', '/good.png'])
    assert counts == Counter(ok=2)
    for path, body in [('/good.jpg', ASTRONAUT), ('/good.png', COFFEE_PNG)]:
        r = recs[path]
        sha = hashlib.sha256(body).hexdigest()
        assert (r['status'], r['sha256'], r['bytes'], r['file']) == ('ok', sha, len(body), sha[:16] + '.png')
        assert len(r['phash']) == 16 and r['error'] is None
        with Image.open(out / r['file']) as im:
            assert im.format == 'PNG' and (im.width, im.height) == (r['width'], r['height'])
    assert recs['/good.jpg']['content_type'] == 'image/jpeg' and recs['/good.png']['content_type'] == 'image/png'
    assert pngs(out) == sorted(r['file'] for r in recs.values())


def test_404_fails_at_once(server, tmp_path):
    sleeps = []
    counts, recs, out = run(server, tmp_path, ['/404.jpg'], sleeps)
    assert counts == Counter(error=1) and recs['/404.jpg']['error'] == 'HTTP 404'
    assert server.hits['/404.jpg'] == 1 and sleeps == []


def test_500_is_retried_with_backoff_then_fails(server, tmp_path):
    sleeps = []
    counts, recs, out = run(server, tmp_path, ['/500.jpg'], sleeps)
    assert counts == Counter(error=1)
    assert recs['/500.jpg']['error'] == 'HTTP 500 (after 3 attempts)'
    assert server.hits['/500.jpg'] == 3 and sleeps == [0.25, 0.5]


def test_read_timeout_is_retried_then_fails(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/slow.jpg'], retries=1)
    assert counts == Counter(error=1)
    assert 'timed out' in recs['/slow.jpg']['error'].lower() and '(after 2 attempts)' in recs['/slow.jpg']['error']
    assert server.hits['/slow.jpg'] == 2 and pngs(out) == []


def test_redirect_to_file_scheme_is_refused(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/to-file'])
    assert counts == Counter(error=1) and 'refused file://' in recs['/to-file']['error']
    assert server.hits['/to-file'] == 1 and pngs(out) == []


def test_redirect_to_an_image_is_followed(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/to-cat'])
    r = recs['/to-cat']
    assert counts == Counter(ok=1) and r['final_url'] == server.url('/cat.jpg')
    assert r['sha256'] == hashlib.sha256(CHELSEA).hexdigest() and server.hits['/cat.jpg'] == 1


def test_non_http_url_is_skipped_without_a_request(server, tmp_path):
    out = tmp_path / 'out'
    counts = download_images(['ftp://127.0.0.1/x.jpg', 'file:///etc/passwd'], out, cfg=cfg())
    assert counts == Counter(skipped=2)
    assert all('refused' in r['error'] for r in read_jsonl(out / MANIFEST)) and sum(server.hits.values()) == 0


@pytest.mark.parametrize('path,why', [('/html.jpg', 'not a readable image'),
                                      ('/truncated.jpg', 'not a readable image'),
                                      ('/page.html', "'text/html' is not image/*"),
                                      ('/big-declared.jpg', 'declared, over the 300,000-byte cap'),
                                      ('/big-nolength.jpg', 'passed the 300,000-byte cap while streaming'),
                                      ('/big-understated.jpg', 'not a readable image')])
def test_bad_bodies_are_rejected_and_nothing_is_written(server, tmp_path, path, why):
    counts, recs, out = run(server, tmp_path, [path])
    assert counts == Counter(error=1)
    assert why in recs[path]['error'], recs[path]['error']
    assert pngs(out) == [] and leftovers(out) == []
    assert server.hits[path] == 1  # not transient: no retry


def test_exif_gps_is_stripped_and_orientation_applied(server, tmp_path):
    assert Image.open(io.BytesIO(GPS)).getexif().get_ifd(0x8825)  # the source really carries GPS
    counts, recs, out = run(server, tmp_path, ['/gps.jpg'])
    r = recs['/gps.jpg']
    assert counts == Counter(ok=1) and (r['width'], r['height']) == (120, 200)  # rotated by Orientation=6
    saved = (out / r['file']).read_bytes()
    assert b'PhoneMaker' not in saved and b'Exif' not in saved and b'eXIf' not in saved
    with Image.open(out / r['file']) as im:
        assert not im.getexif() and 'exif' not in im.info and im.size == (120, 200)


def test_near_duplicate_recorded_as_duplicate_of_the_kept_file(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/good.jpg', '/dup-big.jpg', '/cat.jpg'])
    assert counts == Counter(ok=2, duplicate=1)
    d = recs['/dup-big.jpg']
    assert d['status'] == 'duplicate' and d['duplicate_of'] == recs['/good.jpg']['file']
    assert d['distance'] <= cfg().phash_distance and 'file' not in d
    assert pngs(out) == sorted([recs['/good.jpg']['file'], recs['/cat.jpg']['file']])
    # with the check off (distance -1), the re-encoded copy is kept as its own photo
    counts, _, _ = run(server, tmp_path / 'strict', ['/good.jpg', '/dup-big.jpg'], phash_distance=-1)
    assert counts == Counter(ok=2)


def test_resume_skips_done_urls_without_requests(server, tmp_path):
    paths = ['/good.jpg', '/good.png', '/404.jpg']
    run(server, tmp_path, paths)
    before = dict(server.hits)
    counts, recs, out = run(server, tmp_path, paths + ['/cat.jpg'])
    assert counts == Counter(resumed=3, ok=1)
    assert {p: server.hits[p] for p in paths} == {p: before[p] for p in paths}
    assert len(read_jsonl(out / MANIFEST)) == 4
    # retry_errors gives the failed URL (and only it) another go
    out2 = download_images([server.url(p) for p in paths], out, cfg=cfg(), retry_errors=True)
    assert out2 == Counter(resumed=2, error=1) and server.hits['/404.jpg'] == before['/404.jpg'] + 1


def test_interrupted_run_keeps_finished_work(server, tmp_path):
    "A crash mid-run (here: in the clock after the 2nd download) keeps the first two files and their lines."
    out, ticks = tmp_path / 'out', iter([0.0])
    paths = ['/good.jpg', '/cat.jpg', '/good.png']
    with pytest.raises(StopIteration):
        download_images([server.url(p) for p in paths], out, cfg=cfg(), clock=lambda: next(ticks) + 1.7e9)
    # the second image was saved before the crash, but its manifest line was not written: it is fetched again
    assert [r['url'] for r in read_jsonl(out / MANIFEST)] == [server.url('/good.jpg')]
    counts = download_images([server.url(p) for p in paths], out, cfg=cfg())
    assert counts == Counter(resumed=1, ok=2) and server.hits['/good.jpg'] == 1 and leftovers(out) == []


def test_download_rebuilds_from_manifest(server, tmp_path):
    counts, recs, out = run(server, tmp_path, ['/good.jpg', '/dup-big.jpg', '/cat.jpg', '/404.jpg'])
    rebuilt = tmp_path / 'rebuilt'
    assert download_urls(out / MANIFEST, rebuilt, cfg=cfg()) == counts
    assert pngs(rebuilt) == pngs(out)
    again = read_jsonl(rebuilt / MANIFEST)
    assert [(r['url'], r['status'], r.get('sha256')) for r in again] == \
           [(r['url'], r['status'], r.get('sha256')) for r in recs.values()]


def test_cli_download_from_url_list(server, tmp_path, capsys):
    urls = tmp_path / 'urls.txt'
    urls.write_text(f"# test\n{server.url('/good.jpg')}\n\n{server.url('/404.jpg')}\n")
    with pytest.raises(SystemExit) as e:
        main(['download', '--urls', str(urls), '--out', str(tmp_path / 'o'), '--max-mb', '1'])
    assert e.value.code == 0
    cap = capsys.readouterr()
    assert 'ok=1 duplicate=0 skipped=0 error=1 resumed=0' in cap.out and 'HTTP 404' in cap.err


# ---------------------------------------------------------------- SerpApi

def serp_page(urls, start=0):
    return {'search_metadata': {'status': 'Success'},
            'images_results': [{'position': start + i + 1, 'original': u, 'link': f'https://site.example/{start + i}',
                                'source': 'site.example', 'title': f'PWS photo {start + i}'} for i, u in enumerate(urls)]}


def serp_calls(rm):
    return [dict(parse_qsl(urlsplit(c.request.url).query)) for c in rm.calls if c.request.url.startswith(SERP)]


def test_scrape_pages_until_empty_then_resumes_from_cache(server, tmp_path):
    out = tmp_path / 'out'
    with responses.RequestsMock() as rm:
        rm.add_passthru(server.base)
        rm.get(SERP, json=serp_page([server.url('/good.jpg'), server.url('/404.jpg')]))
        rm.get(SERP, json=serp_page([server.url('/good.png'), server.url('/dup-big.jpg')], start=2))
        rm.get(SERP, json={'search_metadata': {'status': 'Success'}, 'images_results': []})
        counts = scrape(out, ['port wine stain face'], max_pages=10, client=serpapi_client(api_key=KEY), cfg=cfg())
        calls = serp_calls(rm)
    assert counts == Counter(ok=2, error=1, duplicate=1)
    assert [(c['engine'], c['q'], c['ijn']) for c in calls] == [('google_images', 'port wine stain face', str(i))
                                                               for i in range(3)]
    recs = {r['url'].replace(server.base, ''): r for r in read_jsonl(out / MANIFEST)}
    assert (recs['/good.png']['query'], recs['/good.png']['source'], recs['/good.png']['title'], recs['/good.png']['page']) \
        == ('port wine stain face', 'https://site.example/2', 'PWS photo 2', 1)
    hits = dict(server.hits)
    with responses.RequestsMock() as rm:  # everything cached: no search, no download
        rm.add_passthru(server.base)
        assert scrape(out, ['port wine stain face'], max_pages=10, client=serpapi_client(api_key=KEY)) == Counter(resumed=4)
        assert serp_calls(rm) == []
    assert dict(server.hits) == hits


def test_200_with_error_ends_the_query_cleanly(server, tmp_path):
    with responses.RequestsMock() as rm:
        rm.add_passthru(server.base)
        rm.get(SERP, json=serp_page([server.url('/good.jpg')]))
        rm.get(SERP, json={'search_metadata': {'status': 'Error'}, 'error': "Google hasn't returned any results for this query."})
        rm.get(SERP, json=serp_page([server.url('/cat.jpg')]))
        rm.get(SERP, json={'error': "Google hasn't returned any results for this query."})
        counts = scrape(tmp_path / 'out', ['q one', 'q two'], max_pages=5, client=serpapi_client(api_key=KEY), cfg=cfg())
        calls = serp_calls(rm)
    assert counts == Counter(ok=2)
    assert [(c['q'], c['ijn']) for c in calls] == [('q one', '0'), ('q one', '1'), ('q two', '0'), ('q two', '1')]


def test_missing_key_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv('SERPAPI_API_KEY', raising=False)
    with pytest.raises(MissingAPIKey, match='SERPAPI_API_KEY is not set'):
        scrape(tmp_path / 'out', ['pws'])
    with pytest.raises(SystemExit) as e:
        main(['scrape', '--out', str(tmp_path / 'out')])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count('\n') == 1
    assert 'SERPAPI_API_KEY is not set' in err and 'https://serpapi.com/manage-api-key' in err


def test_key_never_appears_in_output_manifest_or_errors(server, tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv('SERPAPI_API_KEY', KEY)
    out = tmp_path / 'out'
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rm:
        rm.add_passthru(server.base)
        rm.get(SERP, json=serp_page([server.url('/good.jpg'), server.url('/404.jpg')]))
        rm.get(SERP, json={'error': "Google hasn't returned any results for this query."})
        with pytest.raises(SystemExit) as e:
            main(['scrape', '--out', str(out), '-q', 'pws adult'])
        assert e.value.code == 0
        assert all(c['api_key'] == KEY for c in serp_calls(rm))  # the key did go to SerpApi...
        rm.get(SERP, status=401, json={'error': 'Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key'})
        with pytest.raises(SystemExit) as e:
            main(['scrape', '--out', str(out), '-q', 'pws child'])
        assert e.value.code == 2
        rm.remove(responses.GET, SERP)
        rm.get(SERP, body=requests.ConnectionError(f'Max retries exceeded with url: /search?q=x&api_key={KEY}'))
        with pytest.raises(SearchError) as se:
            scrape(out, ['pws teen'], client=serpapi_client(), sleep=lambda s: None)
    cap = capsys.readouterr()
    assert 'ok=1' in cap.out and 'HTTP 401' in cap.err and 'SERPAPI_API_KEY' in cap.err
    assert 'could not reach serpapi.com' in str(se.value)
    texts = [cap.out, cap.err, caplog.text, str(se.value), repr(se.value)] + \
            [p.read_text(errors='replace') for p in out.iterdir() if p.suffix in ('.jsonl', '.json', '.txt')]
    assert len(texts) >= 7 and not any(KEY in t for t in texts)  # ...and nowhere else
    assert se.value.__cause__ is None and se.value.__suppress_context__
