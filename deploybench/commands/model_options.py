"""The ``--model-file`` options shared by ``serve``, ``load``, ``bench`` and ``compare``: your own model
file (ONNX, scikit-learn joblib/pickle, TorchScript, torch.export .pt2) instead of a zoo model
(``deploybench.targets.modelfile`` has the rules: format, input shape, classes, the pickle opt-in).

A command adds them with ``add_model_file_arguments(parser)`` and turns them into ``TargetConfig`` keyword
arguments with ``model_file_options(args)`` (``{}`` without ``--model-file``), or into a
``deploybench.targets.modelfile.UserModel`` (several files = several formats of one model) with
``user_model_from_args``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from deploybench.errors import UsageError
from deploybench.targets.modelfile import (
    UserModel,
    default_model_name,
    parse_floats,
    parse_shape,
    resolve_format,
)


def add_model_file_arguments(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """``--model-file`` (``several``: repeatable, one file per format of the same model) and the options
    about it. None of them clashes with the options of serve, load, bench or compare."""
    g = parser.add_argument_group(
        "your model file (instead of a zoo model)",
        "Format from the extension (.onnx, .joblib/.pkl, .pt2, .torchscript/.ts; .pt/.pth by content) or "
        "--format. The input shape comes from the model where it says (ONNX, scikit-learn, .pt2), else "
        "--input-shape or --sample-input. [F] is tabular (/predict), [3,H,W] or [1,H,W] an image model.",
    )
    g.add_argument(
        "--model-file",
        action="append" if several else "store",
        metavar="PATH",
        help="your model file"
        + ("; repeat it for the same model in several formats (e.g. m.onnx and m.joblib)" if several else ""),
    )
    g.add_argument(
        "--model-name", metavar="NAME", help="its name in records and reports (default: file stem)"
    )
    g.add_argument(
        "--input-shape",
        metavar="SHAPE",
        help="per-item input shape when the model does not declare it: 64 (features) or 3,224,224 (image)",
    )
    g.add_argument(
        "--sample-input",
        metavar="FILE",
        help='.npy (an item or a batch) or .json ({"instances": [[...]]}): gives the shape, used for warm-up',
    )
    g.add_argument("--labels", metavar="FILE", help="class names, one per line (default: from the model)")
    g.add_argument(
        "--mean", metavar="M", help="image models: per-channel mean, e.g. 0.5 or imagenet (default 0)"
    )
    g.add_argument(
        "--std", metavar="S", help="image models: per-channel std, e.g. 0.5 or imagenet (default 1)"
    )
    g.add_argument(
        "--resize-px",
        type=int,
        metavar="N",
        help="image models: resize the shorter side to N, then centre-crop to H x W "
        "(default: resize straight to H x W)",
    )
    g.add_argument(
        "--trust-pickle",
        metavar="SHA256",
        help="the opt-in to load YOUR pickle (joblib/pickle/torch.save): unpickling runs code from the file, "
        "so give the sha256 you expect it to have; it is checked before loading and recorded",
    )


_DETAIL_OPTIONS = (
    "model_name",
    "input_shape",
    "sample_input",
    "labels",
    "mean",
    "std",
    "resize_px",
    "trust_pickle",
)


def _files(args: argparse.Namespace) -> list[str]:
    value = getattr(args, "model_file", None)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _details(args: argparse.Namespace) -> dict[str, Any]:
    """The UserModel fields other than name and files, from the options."""
    return {
        "input_shape": parse_shape(args.input_shape) if args.input_shape else None,
        "sample_input": args.sample_input,
        "labels_file": args.labels,
        "mean": parse_floats(args.mean, "mean") if args.mean else None,
        "std": parse_floats(args.std, "std") if args.std else None,
        "resize_px": args.resize_px,
        "trust_pickle": args.trust_pickle,
    }


def check_no_stray_options(args: argparse.Namespace) -> None:
    """Options about a model file without ``--model-file`` are a mistake: say so (exit code 2)."""
    if _files(args):
        return
    given = [o for o in _DETAIL_OPTIONS if getattr(args, o, None) is not None]
    if given:
        names = ", ".join("--" + o.replace("_", "-") for o in given)
        raise UsageError(
            f"{names} {'is' if len(given) == 1 else 'are'} about a model file: add --model-file PATH"
        )


def user_model_from_args(args: argparse.Namespace, fmt: str | None = None) -> UserModel | None:
    """The user model of ``--model-file`` (every file given: one per format), or None without it.

    ``fmt`` (``--format``) applies to a single file. Cheap checks only (files, formats, names, the pickle
    opt-in); ``deploybench.targets.modelfile.inspect_user_model`` loads it."""
    check_no_stray_options(args)
    paths = _files(args)
    if not paths:
        return None
    if fmt is not None and len(paths) > 1:
        raise UsageError(
            "--format names the format of one --model-file; with several, each takes its extension's"
        )
    files: dict[str, str] = {}
    for path in paths:
        f = resolve_format(path, fmt)
        if f in files:
            raise UsageError(
                f"--model-file {path} and {files[f]} are both {f}: give one file per format of a model"
            )
        files[f] = str(Path(path))
    um = UserModel(name=args.model_name or default_model_name(paths[0]), files=files, **_details(args))
    um.check()
    return um


def model_file_options(args: argparse.Namespace) -> dict[str, Any]:
    """``TargetConfig`` keyword arguments for ``--model-file`` (one file; ``--format`` overrides its
    extension): ``model`` (the name), ``format``, ``model_file`` and the options about it; ``{}`` without
    ``--model-file``.

    Raises UsageError (exit code 2) for a missing file, a file that is no model, a format that does not fit
    it, a bad option, or a pickle without the ``--trust-pickle`` opt-in."""
    fmt = getattr(args, "format", None) or None
    um = user_model_from_args(args, fmt if isinstance(fmt, str) else None)
    if um is None:
        return {}
    if getattr(args, "model", None):
        raise UsageError("give --model (a zoo model) or --model-file (yours), not both")
    if len(um.files) != 1:
        raise UsageError("one --model-file here (several files of one model are for bench and compare)")
    return um.target_options(next(iter(um.files)))
