#!/usr/bin/env python3
"""Run an instrument emulator on a pseudo-terminal, for demos and manual tests of the agent.

    python scripts/emulate.py victoreen_4000m --link /tmp/ttyV0 --every 10 --random
    python scripts/emulate.py ludlum_375 --link /tmp/ttyL0 --script readings.json --garbage-every 5
    python scripts/emulate.py profile --profile config/profiles/ludlum_2363.toml --link /tmp/ttyR0

Prints the device path, then runs until Ctrl-C or --duration. --script is a JSON list of value objects in the
emulator's terms (victoreen: kvp, air_kerma_ugy, exposure_time_ms, kvp_avg, peaks; ptw_diamentor: dap_gy_m2,
dap_rate_gy_m2_s, exposure_time_ms; ludlum_375: reading, high_alarm, ...), used in order before any random values.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from drivers.emulators import EMULATORS, Faults  # noqa: E402
from drivers.profile import load_profile  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", choices=sorted(EMULATORS))
    p.add_argument("--link", help="symlink to create for the pty (the 'by-id' path the agent opens)")
    p.add_argument("--profile", help="profile TOML (for the 'profile' emulator)")
    p.add_argument("--duration", type=float, help="stop after this many seconds")
    p.add_argument("--every", type=float, help="seconds between exposures (request/response) or pushes")
    p.add_argument("--script", help="JSON file: a list of value objects to emit in order")
    p.add_argument("--random", action="store_true", help="random plausible values after the script")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--garbage-every", type=float, default=0.0, help="burst of random bytes every N s")
    p.add_argument("--error-rate", type=float, default=0.0, help="probability a reply/frame is an error")
    p.add_argument("--split-writes", action="store_true", help="write replies in small pieces with pauses")
    p.add_argument("--reply-delay", type=float, default=0.0, help="slow replies: seconds before each reply")
    p.add_argument("--unplug-after", type=float, default=0.0, help="unplug once after N s")
    p.add_argument("--unplug-for", type=float, default=2.0, help="seconds to stay unplugged")
    return p.parse_args(argv)


def build(args: argparse.Namespace):
    """The emulator the options describe."""
    faults = Faults(garbage_every_s=args.garbage_every, error_rate=args.error_rate, split_writes=args.split_writes,
                    reply_delay_s=args.reply_delay, unplug_after_s=args.unplug_after, unplug_for_s=args.unplug_for)
    kwargs = {"link": args.link, "faults": faults, "seed": args.seed, "random_mode": args.random,
              "script": json.loads(Path(args.script).read_text()) if args.script else ()}
    if args.every is not None:
        kwargs["every_s"] = args.every
    if args.name == "profile":
        if not args.profile:
            sys.exit("the profile emulator needs --profile FILE.toml")
        kwargs["profile"] = load_profile(args.profile)
    elif args.name in ("victoreen_4000m", "ptw_diamentor") and args.every is None:
        kwargs["every_s"] = 10.0  # a demo needs exposures without someone calling expose()
    return EMULATORS[args.name](**kwargs)


def main(argv: list[str] | None = None) -> int:
    """Start the emulator, print its path, wait for Ctrl-C / SIGTERM / --duration."""
    args = parse_args(argv)
    emulator = build(args)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(emulator.start(), flush=True)
    try:
        done.wait(args.duration)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
