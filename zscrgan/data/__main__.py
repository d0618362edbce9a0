"""Dataset command line: convert a public feature release or your own arrays, or inspect a dataset folder.

    python -m zscrgan.data convert xlsa17 SRC_DIR --out datasets/AWA2
    python -m zscrgan.data convert gazsl SRC_DIR --split hard --out datasets/NAB_SCE
    python -m zscrgan.data convert wikipedia SRC_DIR --text lda --split_seed 0 --out datasets/WIKI
    python -m zscrgan.data convert arrays --images X.npy --image_labels y.npy --texts T.npy --text_labels t.npy \
        --unseen 3,7 [--class_names names.txt] --out datasets/MINE
    python -m zscrgan.data inspect datasets/WIKI
"""

import argparse
import json
import sys

from zscrgan.data import convert
from zscrgan.data.arrays import DEFAULT_UNSEEN_FRACTION, convert_arrays
from zscrgan.data.inspect import format_summary, summarize
from zscrgan.data.release import class_names, load_dataset
from zscrgan.errors import UserError
from zscrgan.flags import ArgumentParser


def _class_list(value):
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class ids like 1,3,5, got {value!r}") from None


def build_parser(prog: str = "python -m zscrgan.data"):
    parser = ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    conv = commands.add_parser("convert", help="convert a public feature release into a dataset folder")
    sources = conv.add_subparsers(dest="source", required=True, metavar="SOURCE",
                                  help=" | ".join((*convert.SOURCES, "arrays")))

    def source(name, help_text, src_help):
        p = sources.add_parser(name, help=help_text, description=help_text)
        p.add_argument("src_dir", metavar="SRC_DIR", help=src_help)
        p.add_argument("--out", required=True, help="output dataset folder, e.g. datasets/<NAME>")
        p.add_argument("--overwrite", action="store_true",
                       help="replace an existing output folder (only once the new one is complete)")
        return p

    p = source("xlsa17", "xlsa17 (Xian et al.): AWA1, AWA2, CUB, FLO, SUN, APY",
               "folder with res101.mat and att_splits.mat (and sent_splits.mat for --text sent)")
    p.add_argument("--text", choices=("att", "sent"), default="att",
                   help="class text vector: att of att_splits.mat (default) or of sent_splits.mat")
    p.add_argument("--with_test_seen", action="store_true",
                   help="also give seen classes their test_seen_loc images (default: trainval_loc only)")

    p = source("gazsl", "GAZSL (Zhu et al.): CUB2011 and NABird with TF-IDF class texts",
               "GAZSL data folder (CUB2011 or NABird)")
    p.add_argument("--split", choices=("easy", "hard"), default="easy", help="easy = SCS (default), hard = SCE")
    p.add_argument("--tfidf", metavar="FILE", help="TF-IDF .mat in SRC_DIR (default: GAZSL's file name)")
    p.add_argument("--feat_train", metavar="FILE", help="training image features in SRC_DIR (default: GAZSL's)")
    p.add_argument("--feat_test", metavar="FILE", help="test image features in SRC_DIR (default: GAZSL's)")

    p = source("wikipedia", "Wikipedia (Rasiwasia et al., SVCL features); train and test items pooled",
               "folder with raw_features.mat, trainset_txt_img_cat.list and testset_txt_img_cat.list")
    p.add_argument("--text", choices=("lda", "tfidf"), default="lda", help="10-d LDA (default) or 1000-d TF-IDF")
    p.add_argument("--seen", type=_class_list, metavar="IDS", help="seen classes, e.g. 1,3,5,7,9")
    p.add_argument("--split_seed", type=int, help="draw the seen classes with this seed (default 0)")
    p.add_argument("--n_seen", type=int, help="how many seen classes to draw (default 5)")

    p = sources.add_parser("arrays", help="your own features: image and text vectors with class labels, in arrays",
                           description="your own features: image and text vectors with class labels, in .npy "
                                       "files or one .npz (read without unpickling)")
    p.add_argument("--images", metavar="FILE", help=".npy [N, image_dim] numeric array: one image's features a row")
    p.add_argument("--image_labels", metavar="FILE", help=".npy [N] integer class ids (>= 0) of the image rows")
    p.add_argument("--texts", metavar="FILE", help=".npy [M, text_dim] numeric array: one text's vector a row")
    p.add_argument("--text_labels", metavar="FILE", help=".npy [M] integer class ids of the text rows")
    p.add_argument("--npz", metavar="FILE", help="instead of the four files: one .npz holding images, image_labels, "
                                                 "texts, text_labels (and optionally class_names)")
    p.add_argument("--unseen", type=_class_list, metavar="IDS", help="unseen classes, e.g. 3,7 (the rest are seen)")
    p.add_argument("--unseen_fraction", type=float, metavar="SHARE",
                   help=f"without --unseen: draw this share of the classes as unseen "
                        f"(default {DEFAULT_UNSEEN_FRACTION})")
    p.add_argument("--split_seed", type=int, help="without --unseen: the seed of that draw (default 0)")
    p.add_argument("--class_names", metavar="FILE",
                   help="text file, one class name per line, in increasing class id order (kept in meta.json)")
    p.add_argument("--out", required=True, help="output dataset folder, e.g. datasets/<NAME>")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output folder (only once the new one is complete)")

    insp = commands.add_parser("inspect", help="validate a dataset folder and print a summary")
    insp.add_argument("folder", metavar="FOLDER", help="dataset folder, e.g. datasets/WIKI")
    return parser


def run(args):
    if args.command == "inspect":
        print(format_summary(summarize(load_dataset(args.folder), class_names(args.folder))))
        return
    options = {k: v for k, v in vars(args).items() if k not in ("command", "source", "src_dir", "out")}
    if args.source == "arrays":
        out = convert_arrays(args.out, **options)
    else:
        converter = {"xlsa17": convert.convert_xlsa17, "gazsl": convert.convert_gazsl,
                     "wikipedia": convert.convert_wikipedia}[args.source]
        out = converter(args.src_dir, args.out, **options)
    meta = json.loads((out / convert.META_FILE).read_text(encoding="utf-8"))
    counts = meta["counts"]
    print(f"wrote {out}: {counts['seen']['classes']} seen / {counts['unseen']['classes']} unseen classes, "
          f"{counts['seen']['images'] + counts['unseen']['images']} images ({meta['image_dim']}-d), "
          f"{counts['seen']['texts'] + counts['unseen']['texts']} texts ({meta['text_dim']}-d); "
          f"details: python -m zscrgan.data inspect {out}")


def main(argv=None, prog: str = "python -m zscrgan.data"):
    """`prog`: the command as the user typed it, for usage lines (`zscrgan convert ...` from the CLI)."""
    args = build_parser(prog).parse_args(argv)
    try:
        run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
