"""`pdm-edge`: prediction on the Raspberry Pi from a signed bundle (needs only `pip install 'pdm-pipeline[edge]'`).

    pdm-edge predict --bundle bundle/ --input recent.csv --public-key public_key.pem [--latest-only] [--output out.csv]
    pdm-edge forecast --bundle bundle/ --input recent.csv --public-key public_key.pem [--horizon 12]
    pdm-edge verify --bundle bundle/ --public-key public_key.pem

Exit codes: 0 ok, 2 bad input or a bundle that fails its signature or hashes (the message names the file).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pdm_pipeline.errors import PdmError


def _write(frame, out: str | None) -> None:
    if out is None:
        try:
            frame.to_csv(sys.stdout, index=False)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader stopped early (`| head`): not an error of ours
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    elif out.lower().endswith((".parquet", ".pq")):
        frame.to_parquet(out, index=False)
    else:
        frame.to_csv(out, index=False)


def run(args: argparse.Namespace) -> int:
    from pdm_pipeline.edge.predictor import EdgePredictor, default_trust, status_note

    trust = default_trust(args.public_key, args.allow_unsigned)
    if args.command == "verify":
        from pdm_pipeline.edge.integrity import verify_dir

        manifest = verify_dir(Path(args.bundle), trust, "bundle")
        print(f"bundle {args.bundle}: {manifest['n_files']} files, {manifest['_verification']}, release "
              f"{manifest.get('release_id', '?')} of {manifest.get('machine_id', '?')}")
        return 0
    predictor = EdgePredictor.load(args.bundle, trust=trust)
    raw = predictor.read_input(args.input)
    if args.command == "forecast":
        result = predictor.forecast_in_input_form(predictor.forecast(raw, horizon=args.horizon), raw)
    else:
        result = predictor.in_input_form(predictor.predict(raw, latest_only=args.latest_only), raw)
    _write(result, args.output)
    if note := status_note(result):
        print(note, file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdm-edge", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("predict", "per-row failure probability, RUL, anomaly score and alarm"),
                       ("forecast", "per-sensor forecasts after the input's last row"),
                       ("verify", "check the bundle's signature and every file's hash")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--bundle", required=True, help="bundle directory")
        p.add_argument("--public-key", help="trusted public key (default $PDM_PUBLIC_KEY)")
        p.add_argument("--allow-unsigned", action="store_true", help="accept a bundle without a valid signature")
        if name != "verify":
            p.add_argument("--input", required=True, help="parquet or CSV of raw sensor rows")
            p.add_argument("--output", help="write to this .csv or .parquet (default: CSV on stdout)")
        if name == "predict":
            p.add_argument("--latest-only", action="store_true", help="only the last row of each unit")
        if name == "forecast":
            p.add_argument("--horizon", type=float, help="how far ahead, in the data's time unit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except PdmError as exc:
        print(f"pdm-edge {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
