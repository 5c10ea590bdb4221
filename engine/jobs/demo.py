"""``make demo``: the main jobs end to end on real media, on one embedded Triton server.

1. ``pose`` on a still image (Debian's opencv-doc ``basketball1.png``),
2. ``compare`` of a clip of ``vtest.avi`` against a half-speed copy of itself made with PyAV,
   and against the clip played backwards,
3. ``find`` of a pose taken from the video,
4. ``index`` of the clip + ``search`` of that pose and of a movement,
5. ``reps`` on a set made with PyAV from Sports2D's demo video (a man raising his arms: five
   repetitions at 1x, 0.6x, 1.7x, backwards and 1.25x, with rests), against one repetition.

Prints the scores and where the outputs are (``demo-output/`` by default).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from posescore.engine.media.samples import BASKETBALL, SAMPLE_VIDEO



def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-output")
    parser.add_argument("--start", type=float, default=60.0, help="start of the vtest.avi clip (s)")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the vtest.avi clip")
    parser.add_argument("--url", default=None, help="use a running server instead of an embedded one")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # a line per step as it goes, piped or not

    from posescore.clients import PoseScoreClient

    from posescore.engine.reports.feedback import format_parts
    from posescore.engine.media.pose_files import to_alphapose, write_alphapose
    from posescore.engine.analysis.report import compare_poses
    from posescore.engine.jobs.compare import compare_job
    from posescore.engine.jobs.find import find_job
    from posescore.engine.jobs.index import index_job
    from posescore.engine.jobs.pose import pose_job
    from posescore.engine.jobs.search import search_job
    from posescore.engine.serving.supervisor import server_url
    from posescore.engine.media.encode import retime_video
    from posescore.engine.jobs.extract import extract_poses

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    video, still = SAMPLE_VIDEO, BASKETBALL
    for path in (video, still):
        if not path.exists():
            print(f"demo: {path} is missing: install Debian's opencv-doc (make media)", file=sys.stderr)
            return 1
    print("starting the embedded Triton server ..." if not args.url else f"server {args.url}", flush=True)
    with server_url(args.url) as url, PoseScoreClient(url, timeout=300) as client:
        records = pose_job(still, client, out / "basketball1.json")
        print(f"\n[pose]    {still.name}: {len(records)} people -> {out / 'basketball1.json'}")

        clip = retime_video(video, out / "clip.mp4", 1.0, start=args.start, duration=args.seconds)
        slow = retime_video(video, out / "clip_half_speed.mp4", 0.5, start=args.start, duration=args.seconds)
        fast = retime_video(video, out / "clip_double_speed.mp4", 2.0, start=args.start, duration=args.seconds)
        results = {}
        for name, attempt in (("half speed", slow), ("double speed", fast)):
            report = compare_job(clip, attempt, client, out_dir=out / f"compare_{name.replace(' ', '_')}")
            results[name] = report
            print(f"[compare] clip vs {name:12}: score {report['score']:5.1f}   "
                  f"parts {format_parts(report['parts'])}")
        clip_poses = extract_poses(clip, client)
        report = compare_poses(clip_poses, clip_poses.reversed())
        print(f"[compare] clip vs backwards   : score {report['score']:5.1f}")

        # A pose taken from the video: the people of the frame at 3 s, as AlphaPose JSON.
        row = int(min(len(clip_poses) - 1, round(3.0 * clip_poses.rate)))
        pose_file = out / "pose_at_3s.json"
        write_alphapose(pose_file, to_alphapose(clip_poses.select([row])))
        found = find_job(pose_file, clip, client, k=3, out_dir=out / "find")
        best = found["moments"][0]
        print(f"[find]    pose of {clip_poses.times[row]:.2f}s -> best {best['time']:.2f}s "
              f"(score {best['score']:.1f}) -> {found['outputs']['best_match']}")

        archive = out / "archive"
        shutil.rmtree(archive, ignore_errors=True)  # the demo's own, made anew (an older run's may be format 1)
        indexed = index_job([clip], archive, client)
        hits = search_job(archive, client, pose=pose_file, k=3)
        top = hits["matches"][0]
        print(f"[index]   {indexed['videos'][0]['status']}: {archive}")
        print(f"[search]  pose -> {top['video']} {top['start_time']:.2f}s score {top['score']:.1f}")

        from posescore.engine.media.encode import write_repetitions
        from posescore.engine.jobs.reps import reps_job
        from posescore.engine.media.samples import fetch_sports2d

        demo = fetch_sports2d()
        reference, _ = write_repetitions(demo, out / "rep.mp4", 4, 30, [1.0], 0, width=640)
        attempt, bounds = write_repetitions(demo, out / "set.mp4", 4, 30, [1.0, 0.6, 1.7, None, 1.25], 24, width=640)
        result = reps_job(reference, attempt, client, out_dir=out / "reps")
        scores = " ".join(f"{r['score']:.0f}" for r in result["reps"])
        print(f"[reps]    {result['count']} repetitions (made: {len(bounds)}), scores {scores}, "
              f"under {result['threshold']:g}: rep {result['flagged']} -> {result['outputs']['page']}")
    summary = out / "summary.json"
    summary.write_text(json.dumps({k: {"score": v["score"], "parts": v["parts"]} for k, v in results.items()},
                                  indent=1))
    print(f"\noutputs in {out.resolve()}/ (report.html, report.json, side_by_side.mp4, scores.png per comparison)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
