"""The ``kdzoo`` console script: the zoo from a shell.

    kdzoo list [PATTERN]                       names (architectures, checkpoints, aliases)
    kdzoo info NAME                            the model card as JSON
    kdzoo eval NAME --dataset D [--split S]    top-1 with the dataset's protocol
    kdzoo export NAME --format {plain,saved_model,tflite} OUT
    kdzoo recipe NAME [FLAGS...]               a paper recipe (recipes/NAME.py)

``kdzoo recipe`` runs the recipe files shipped inside the package (``kdzoo/recipes``,
the repository's ``recipes/``), so an installed wheel reaches them without a checkout:
``kdzoo recipe pets --workdir /tmp/pets --preset fast`` is ``python recipes/pets.py
--workdir /tmp/pets --preset fast``. Errors a user can fix (a typo in a name, a
missing dataset) exit 2 with the message; nothing else is caught.
"""

import argparse
import json
import os
import runpy
import sys

FORMATS = ("plain", "saved_model", "tflite")


def recipes_dir():
    """``kdzoo/recipes`` when installed, else ``recipes/`` beside the package (checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    for path in (os.path.join(here, "recipes"), os.path.join(os.path.dirname(here), "recipes")):
        if os.path.isfile(os.path.join(path, "common.py")):
            return path
    raise FileNotFoundError("kdzoo's recipes are not installed next to the package; "
                            "reinstall kdzoo or run them from a checkout.")


def recipe_names():
    return sorted(f[:-3] for f in os.listdir(recipes_dir())
                  if f.endswith(".py") and f != "common.py" and not f.startswith("_"))


def _parser():
    p = argparse.ArgumentParser(prog="kdzoo", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list model names").add_argument("pattern", nargs="?")
    sub.add_parser("info", help="a model card as JSON").add_argument("name")
    ev = sub.add_parser("eval", help="top-1 of a model on a dataset")
    ev.add_argument("name")
    ev.add_argument("--dataset", required=True)
    ev.add_argument("--split", default="test", choices=("train", "minival", "test"))
    ev.add_argument("--data_dir")
    ev.add_argument("--batch_size", type=int, default=256)
    ex = sub.add_parser("export", help="write a model without kdzoo")
    ex.add_argument("name")
    ex.add_argument("out")
    ex.add_argument("--format", required=True, choices=FORMATS)
    rc = sub.add_parser("recipe", help="run a paper recipe", add_help=False)
    rc.add_argument("recipe")
    rc.add_argument("flags", nargs=argparse.REMAINDER)
    return p


def export(name, out, fmt):
    """``plain``: a ``.keras`` file that loads without kdzoo; ``saved_model``: a TF
    SavedModel folder; ``tflite``: a ``.tflite`` flatbuffer. Written atomically."""
    import kdzoo
    from kdzoo import atomic
    from kdzoo.distill.self_distill.exit_export import to_tflite
    if fmt == "plain" and not out.endswith(".keras"):
        raise ValueError(f"--format plain writes a .keras file; got OUT {out!r}.")
    if fmt == "saved_model" and os.path.exists(out):
        raise FileExistsError(f"{out} exists; pass a new folder for the SavedModel.")
    plain = kdzoo.to_plain_keras(kdzoo.load(name))
    if fmt == "plain":
        with atomic.atomic_path(out, suffix=".keras") as tmp:
            plain.save(tmp)
    elif fmt == "saved_model":
        parent, base = os.path.split(os.path.abspath(out))
        tmp = os.path.join(parent, f"{atomic.TEMP_PREFIX}{base}-export")
        plain.export(tmp, format="tf_saved_model", verbose=False)
        os.replace(tmp, out)
    else:
        data = to_tflite(plain)
        with atomic.atomic_path(out, suffix=".tflite") as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
    return out


def _run(args):
    import kdzoo
    if args.command == "list":
        print("\n".join(kdzoo.list_models(args.pattern)))
    elif args.command == "info":
        print(json.dumps(kdzoo.model_info(args.name), indent=1, sort_keys=True))
    elif args.command == "eval":
        result = kdzoo.evaluate(args.name, args.dataset, args.split,
                                batch_size=args.batch_size, data_dir=args.data_dir)
        print(json.dumps(dict(result, name=args.name, dataset=args.dataset, split=args.split)))
    elif args.command == "export":
        print(export(args.name, args.out, args.format))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    if args.command == "recipe":
        if args.recipe not in recipe_names():
            print(f"kdzoo recipe: no recipe {args.recipe!r}; pick one of "
                  f"{recipe_names()}.", file=sys.stderr)
            return 2
        path = os.path.join(recipes_dir(), args.recipe + ".py")
        sys.path.insert(0, recipes_dir())
        sys.argv = [path] + args.flags
        runpy.run_path(path, run_name="__main__")
        return 0
    try:
        _run(args)
    except (KeyError, ValueError, TypeError, OSError) as e:  # kdzoo's errors subclass these
        print(f"kdzoo {args.command}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
