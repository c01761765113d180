"""``python -m raftlog.cluster --config node.toml``: one broker in the foreground."""

from __future__ import annotations

import argparse
import logging
import sys

from .broker import run_broker
from .config import ConfigFileError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raftlog broker", description="run one broker")
    parser.add_argument("--config", required=True, help="the broker's TOML config")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(args.config)
    except ConfigFileError as exc:
        print(f"raftlog broker: {exc}", file=sys.stderr)
        return 2
    return run_broker(config)


if __name__ == "__main__":
    sys.exit(main())
