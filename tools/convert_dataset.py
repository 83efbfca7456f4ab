"""Convert an official dataset download into the layout the toolkit trains on.

    python tools/convert_dataset.py {drive,stare,chasedb1,hrf,cityscapes} SRC DST [--force]
    python tools/convert_dataset.py folder --images DIR --masks DIR DST [options]

SRC: the extracted folder, a folder holding the downloaded archives, or one archive.
Your own images and masks: ``folder`` (``folder --help``). See docs/datasets.md and
docs/custom_data.md.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from paddleseg_unet.datasets.converters import (DATASETS, ConversionError, convert,  # noqa: E402
                                                folder)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit 1, like conversion errors
        self.exit(1, f"error: {message} (see --help)\n")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["folder"]:
        parser = _Parser(prog="convert_dataset.py folder", description=folder.__doc__.split(
            "\n\n")[0])
        folder.add_arguments(parser)
        args = parser.parse_args(argv[1:])
    else:
        parser = _Parser(description=__doc__.split("\n\n")[0])
        parser.add_argument("dataset", choices=DATASETS + ("folder",),
                            help="which dataset SRC holds (folder: your own images and "
                            "masks, see 'folder --help')")
        parser.add_argument("src", help="extracted folder, folder of archives, or one archive")
        parser.add_argument("dst", help="output folder (built atomically)")
        parser.add_argument("--force", action="store_true", help="replace a non-empty DST")
        args = parser.parse_args(argv)
        if args.dataset == "folder":
            parser.error("folder comes first: convert_dataset.py folder --images DIR "
                         "--masks DIR DST")
    try:
        summary = (folder.convert_args(args) if argv[:1] == ["folder"]
                   else convert(args.dataset, args.src, args.dst, force=args.force))
    except ConversionError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"error: interrupted; {args.dst} was left unchanged", file=sys.stderr)
        return 1
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
