"""Sample media that no one here made, named once (the demo, the load tests, the benchmarks, the
Makefile and the tests read these names).

- Debian's ``opencv-doc`` (``make media`` installs it): ``vtest.avi`` (pedestrians, 768x576,
  10 fps) and still images with people.
- ``ultralytics``' own assets (the export toolchain installs it): ``bus.jpg``, ``zidane.jpg``.

Only the standard library here: the Makefile reads :data:`SAMPLE_VIDEO` with a bare Python.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
SAMPLE_VIDEO = OPENCV_DATA / "vtest.avi"
BASKETBALL = OPENCV_DATA / "basketball1.png"


def ultralytics_asset(name: str) -> Path:
    """The path of ``ultralytics/assets/NAME`` (e.g. ``bus.jpg``) in the installed package."""
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"{name}: ultralytics is not installed (make model installs it)")
    return Path(spec.origin).parent / "assets" / name


if __name__ == "__main__":
    print(SAMPLE_VIDEO)
