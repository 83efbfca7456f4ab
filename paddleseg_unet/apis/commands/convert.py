"""Convert an official dataset download into the layout the toolkit trains on.

    python tools/convert_dataset.py {drive,stare,chasedb1,hrf,cityscapes} SRC DST [--force]
    python tools/convert_dataset.py folder --images DIR --masks DIR DST [options]

SRC: the extracted folder, a folder holding the downloaded archives, or one archive.
Your own images and masks: ``folder`` (``folder --help``). See docs/datasets.md and
docs/custom_data.md.
"""
import argparse
import sys
from typing import List, Optional


from paddleseg_unet.datasets.converters import CONVERTERS, ConversionError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 1, like conversion errors
        self.exit(1, f"error: {message} (see --help)\n")


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """``NAME`` first, then that converter's own arguments (``args.converter`` is its name);
    usage errors print one line and exit 1."""
    argv = sys.argv[1:] if argv is None else list(argv)
    names = CONVERTERS.names()
    if not argv or argv[0] not in names:
        parser = _Parser(description=__doc__.split("\n\n")[0],
                         epilog="datasets: " + "; ".join(
                             f"{n}: {CONVERTERS.get(n).description}" for n in names))
        parser.add_argument("dataset", choices=names,
                            help="what to convert; 'NAME --help' lists its arguments")
        if argv[:1] in (["-h"], ["--help"]):
            parser.print_help()
            parser.exit(0)
        later = [a for a in argv if a in names]
        parser.error(f"the first argument names the dataset ({', '.join(names)})"
                     + (f"; put it first: convert_dataset.py {later[0]} ..." if later else ""))
    parser = _Parser(prog=f"convert_dataset.py {argv[0]}",
                     description=CONVERTERS.get(argv[0]).description)
    CONVERTERS.get(argv[0]).add_arguments(parser)
    args = parser.parse_args(argv[1:])
    args.converter = argv[0]
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    try:
        summary = CONVERTERS.get(args.converter).run(args)
    except ConversionError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted; {args.dst} was left unchanged", file=sys.stderr)
        return 1
    print(summary.format())
    return 0
