"""The `xpnn` command: train (new or --resume), evaluate and predict with a run, and list runs.

xpnn train                                   # the reference network on SIGNS (or the embedded set), 25 epochs
xpnn train --config run.toml --epochs 5      # settings from a TOML/JSON file; flags win over it
xpnn train --resume runs/<run id>            # continue a stopped or killed run exactly
xpnn evaluate runs/<run id>                  # loss and accuracy on the run's train and test data
xpnn predict runs/<run id> a.jpg b.png       # class and probability per image (64x64 RGB)
xpnn runs                                    # past runs with their final figures
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from xpnn.data.messages import setting_minimum
from xpnn.errors import DivergedError
from xpnn.run_paths import resolve_run

DEFAULT_RUN_DIR = "runs"
# every key a config file may hold, with its type and default (None: decided later)
SETTINGS: dict[str, tuple[type | tuple[type, ...], Any]] = {
    "epochs": (int, 25),
    "batch_size": (int, 64),
    "learning_rate": (float, 0.009),
    "optimizer": (str, "adam"),
    "seed": (int, 1),
    "dtype": (str, "float32"),
    "backend": (str, None),
    "data": (str, None),
    "embedded": (bool, False),
    "n_train": (int, 600),
    "n_test": (int, 120),
    "run_dir": (str, DEFAULT_RUN_DIR),
    "shuffle": (str, "random"),
    "stop_when_stuck": (bool, False),
    "plot": (bool, True),
    "layers": (list, None),
}


class CLIError(ValueError):
    """Bad input to the command line: printed as one line, exit status 2."""


# ---- settings ------------------------------------------------------------------------------------------
def read_config_file(path: str) -> dict[str, Any]:
    """A TOML or JSON settings file as a dict, with errors naming the file and the line when it does not parse."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {file} does not exist; pass a .toml or .json file (see `xpnn train -h`).")
    text = file.read_text(encoding="utf-8")
    if file.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CLIError(f"{file} is not valid JSON: {exc}.") from None
    elif file.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            try:
                import tomli as tomllib  # type: ignore[no-redef]
            except ImportError:
                raise CLIError(
                    f"reading {file} needs Python 3.11+ or `pip install tomli`; or write the config as JSON."
                ) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CLIError(f"{file} is not valid TOML: {exc}.") from None
    else:
        raise CLIError(f"config file {file} must end in .toml or .json; got {file.suffix or 'no suffix'}.")
    if not isinstance(data, dict):
        raise CLIError(f"{file} must hold a table of settings; got {type(data).__name__}.")
    if data.get("format") == "xpnn-run":
        data = settings_from_run_config(data)
    return check_settings(data, str(file))


def check_settings(data: dict[str, Any], where: str) -> dict[str, Any]:
    """Each key known (else the closest one is suggested) and of the right type."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in SETTINGS:
            close = difflib.get_close_matches(key, list(SETTINGS), n=1, cutoff=0.6)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise CLIError(f"{where}: unknown setting {key!r}.{hint} Known settings: {', '.join(SETTINGS)}.")
        kind = SETTINGS[key][0]
        ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if value is None and SETTINGS[key][1] is None:
            ok = True
        if not ok:
            name = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
            raise CLIError(
                f"{where}: setting {key!r} must be {name[kind]}; got {value!r} ({type(value).__name__}). "
                + (f"Write {key} = {value} without quotes." if isinstance(value, str) and kind is not str else "")
            )
        low = setting_minimum(key)  # seed 0 is fit's default: a Python run's config replays
        if kind is int and value < low:
            raise CLIError(f"{where}: setting {key!r} must be >= {low}; got {value}.")
        if kind is float and not (math.isfinite(value) and value > 0):
            raise CLIError(f"{where}: setting {key!r} must be a positive number; got {value}.")
        out[key] = value
    return out


def settings_from_run_config(config: dict[str, Any]) -> dict[str, Any]:
    """The train settings that repeat a run, read from its config.json (`xpnn train --config runs/<id>/config.json`)."""
    data = config.get("data", {})
    out = {
        "epochs": config["epochs"],
        "batch_size": config["batch_size"],
        "learning_rate": config["optimizer"]["config"]["learning_rate"],
        "optimizer": config["optimizer"]["class_name"].lower(),
        "seed": config.get("init_seed", config["seed"]),
        "dtype": config["dtype"],
        "backend": config["backend"],
        "shuffle": config["shuffle"],
        "stop_when_stuck": config.get("stop_when_stuck", False),
        "layers": config["layers"],
    }
    if data.get("source") == "embedded":
        out.update(embedded=True, n_train=data["n_train"], n_test=data["n_test"])
    elif data.get("source") in ("signs", "image_folder", "idx", "cifar10"):
        out["data"] = data["path"]
    else:
        raise CLIError(
            "this run config comes from a run trained in Python on its own arrays (its data are recorded only by "
            "SHA-256), so the CLI cannot load them; repeat it in Python, or copy its settings without 'data' into "
            "a new config file and pass --data or --embedded."
        )
    return out


# ---- data and model ----------------------------------------------------------------------------------
def load_data(settings: dict[str, Any], say: Any = print) -> tuple[tuple, tuple, dict[str, Any]]:
    """(x, y), (x_test, y_test) and how to load them again: SIGNS, or the embedded set when asked or absent."""
    from xpnn import datasets

    if not settings["embedded"] and settings["data"] is not None:
        try:
            folder = datasets.locate_signs(settings["data"])
        except FileNotFoundError as no_signs:  # not SIGNS: an image folder, IDX files or CIFAR-10?
            try:
                d = datasets.load_data(settings["data"])
            except (FileNotFoundError, ValueError) as exc:
                raise CLIError(f"{no_signs} Nor is it an image folder, IDX or CIFAR-10 folder: {exc}") from None
            say(f"data: {d.description}")
            return d.train, d.test, {"source": d.kind, **d.spec}
        say(f"data: SIGNS from {folder}")
        train, test = datasets.load_signs(folder)
        return train, test, {"source": "signs", "path": str(folder.resolve())}
    if not settings["embedded"]:
        folder = datasets.locate_signs(None)
        if folder is not None:
            say(f"data: SIGNS from {folder}")
            train, test = datasets.load_signs(folder)
            return train, test, {"source": "signs", "path": str(folder.resolve())}
        say("data: SIGNS not found (set XPNN_DATA or --data): using the EMBEDDED synthetic hand-sign set instead.")
    else:
        say("data: the embedded synthetic hand-sign set (--embedded)")
    n_train, n_test = settings["n_train"], settings["n_test"]
    train, test = datasets.load_embedded(n_train=n_train, n_test=n_test)
    return train, test, {"source": "embedded", "n_train": n_train, "n_test": n_test, "seed": 0}


def data_from_run(config: dict[str, Any], say: Any = print) -> tuple[tuple, tuple, dict[str, Any]]:
    """The data a run was trained on, from its config.json."""
    data = config.get("data", {})
    source = data.get("source")
    if source == "signs":
        settings = {"embedded": False, "data": data["path"]}
    elif source == "embedded":
        settings = {"embedded": True, "n_train": data["n_train"], "n_test": data["n_test"]}
    elif source in ("image_folder", "idx", "cifar10"):
        from xpnn import datasets

        spec = {k: v for k, v in data.items() if k in ("path", "image_size", "color_mode", "validation_split", "seed")}
        d = datasets.load_data(**spec)
        say(f"data: {d.description}")
        return d.train, d.test, {"source": d.kind, **d.spec}
    else:
        raise CLIError(
            "this run was started from Python with its own arrays, so the CLI cannot load its data; "
            "continue it with model.fit(x, y, ..., run_dir=<run folder>, resume=True)."
        )
    return load_data(settings, say)


def build_model(settings: dict[str, Any], input_shape: tuple[int, ...], classes: int) -> Any:
    """The run's `Sequential`, built: the settings' `layers` (Keras-style class_name/config tables, as
    `keras.Sequential.from_config` takes them) or the reference network; its output must match `classes`."""
    from xpnn.api import Sequential
    from xpnn.io import layers_from_configs
    from xpnn.reference import reference_layers

    layers = reference_layers(classes) if settings["layers"] is None else layers_from_configs(settings["layers"])
    model = Sequential(layers, dtype=settings["dtype"]).build(input_shape, seed=settings["seed"])
    if model.output_shape != (classes,):
        raise CLIError(
            f"the model's output shape is {model.output_shape} but the data have {classes} classes; "
            f"end the layers with Dense({classes})."
        )
    return model


def make_optimizer(name: str, learning_rate: float) -> Any:
    """`--optimizer`'s optimizer: "adam" (TF's ApplyAdam form, epsilon 1e-8) or "sgd" (keras.optimizers.SGD)."""
    from xpnn.optimizers import SGD, Adam
    from xpnn.registry import lookup

    cls = lookup("optimizer", name, {"adam": Adam, "sgd": SGD})
    return Adam(learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8) if cls is Adam else SGD(learning_rate)


# ---- commands ----------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    """`xpnn train`: settings from defaults, `--config` and flags (or a run's config.json with `--resume`), the
    data, a model and a run folder; prints the final train and test figures. A scripted `model.fit`."""
    from xpnn.backends import set_backend
    from xpnn.training.run_folder import RunDir, read_config

    say = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, file=sys.stderr))
    given = {k: v for k, v in vars(args).items() if k in SETTINGS and v is not None}
    if args.resume:
        fixed = {k: v for k, v in given.items() if k != "epochs"}  # --epochs may extend the run
        if fixed or args.config:
            flags = ", ".join(f"--{k.replace('_', '-')}" for k in fixed) or "--config"
            raise CLIError(
                f"--resume takes every setting but --epochs from the run's config.json; drop {flags} "
                "(start a new run to change settings)."
            )
        args.resume = str(resolve_run(args.resume, DEFAULT_RUN_DIR))
        config = read_config(args.resume)
        settings = {k: d for k, (_, d) in SETTINGS.items()}
        settings.update(check_settings(settings_from_run_config(config), f"{args.resume}/config.json"))
        settings.update(check_settings({k: v for k, v in given.items() if k == "epochs"}, "command line"))
        settings["plot"] = not args.no_plot
    else:
        settings = {k: d for k, (_, d) in SETTINGS.items()}
        if args.config:
            settings.update(read_config_file(args.config))
        settings.update(check_settings(given, "command line"))
        if args.no_plot:
            settings["plot"] = False
    backend = set_backend(settings["backend"] or _env_backend())
    settings["backend"] = backend.name
    (x, y), (xt, yt), source = data_from_run(config, say) if args.resume else load_data(settings, say)
    classes = int(max(y.max(), yt.max())) + 1
    model = build_model(settings, tuple(x.shape[1:]), classes)
    optimizer = make_optimizer(settings["optimizer"], settings["learning_rate"])
    say(f"{len(x)} train / {len(xt)} test images, backend {backend.name}, {settings['dtype']}, seed {settings['seed']}")
    spec = RunDir(
        args.resume or settings["run_dir"],
        resume=bool(args.resume),
        data=source,
        extra={"init_seed": settings["seed"]},
        stop_when_stuck=settings["stop_when_stuck"],
        plot=settings["plot"],
    )
    with np.errstate(over="ignore", invalid="ignore"):  # a non-finite cost is reported as DivergedError instead
        model.fit(
            x,
            y,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            optimizer=optimizer,
            shuffle=settings["shuffle"],
            seed=settings["seed"],
            validation_data=(xt, yt),
            verbose=0 if args.quiet else 1,
            run_dir=spec,
        )
    figures = evaluate_run(model, spec.folder, (x, y), (xt, yt))
    print(
        f"{spec.folder}  train accuracy {figures['train']['accuracy']:.4f}  "
        f"test accuracy {figures['test']['accuracy']:.4f}  (train loss {figures['train']['loss']:.4f}, "
        f"test loss {figures['test']['loss']:.4f})"
    )
    return 0


def _env_backend() -> str:
    import os

    return os.environ.get("XPNN_BACKEND", "numpy") or "numpy"


def evaluate_run(model: Any, folder: Path, train: tuple, test: tuple) -> dict[str, dict[str, float]]:
    """Loss and accuracy of `model` on the run's data, written to evaluation.json in the run folder."""
    from xpnn.training.run_folder import write_text

    figures = {"train": model.evaluate(*train), "test": model.evaluate(*test)}
    write_text(folder / "evaluation.json", json.dumps(figures, indent=2) + "\n")
    return figures


def _run_model(folder: str) -> tuple[Any, dict[str, Any]]:
    """A run's final model (model.h5), or its last checkpoint when it has not finished."""
    from xpnn.api import load_model
    from xpnn.training.run_folder import CHECKPOINT, MODEL, read_config

    config = read_config(folder)
    for name in (MODEL, CHECKPOINT):
        if (Path(folder) / name).exists():
            if name == CHECKPOINT:
                print(f"note: {folder} has no {MODEL} (not finished); using its last checkpoint.", file=sys.stderr)
            return load_model(Path(folder) / name), config
    raise FileNotFoundError(f"{folder} has neither {MODEL} nor {CHECKPOINT}; the run saved no weights yet.")


def cmd_evaluate(args: argparse.Namespace) -> int:
    """`xpnn evaluate RUN`: loss and accuracy of the run's model on its train and test data (`Model.evaluate`)."""
    from xpnn.backends import set_backend

    set_backend(_env_backend())
    args.run = str(resolve_run(args.run, DEFAULT_RUN_DIR))
    model, config = _run_model(args.run)
    train, test, _ = data_from_run(config, lambda *a: print(*a, file=sys.stderr))
    figures = evaluate_run(model, Path(args.run), train, test)
    sizes = {"train": len(train[0]), "test": len(test[0])}
    for split, fig in figures.items():
        print(f"{split:5}  loss {fig['loss']:.4f}  accuracy {fig['accuracy']:.4f}  ({sizes[split]} images)")
    return 0


def read_image(path: str, shape: tuple[int, ...], resize: bool) -> np.ndarray:
    """One image file as a uint8 (h, w, 3) array the model can take, or an error saying how to make it fit."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        msg = "xpnn predict reads images with Pillow: `pip install pillow` (or `pip install xpnn[cli]`)."
        raise CLIError(msg) from None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"image {file} does not exist.")
    h, w, c = shape
    try:
        with Image.open(file) as img:
            img.load()
            if resize:
                img = img.convert("RGB").resize((w, h))
            if img.mode != "RGB" or c != 3:
                raise CLIError(
                    f"image {file} is mode {img.mode!r}; the model takes RGB ({c} channels). Convert it, e.g. "
                    "Image.open(p).convert('RGB'), or pass --resize to convert and resize."
                )
            if img.size != (w, h):
                raise CLIError(
                    f"image {file} is {img.size[0]}x{img.size[1]}; the model takes {w}x{h} images. Resize it, "
                    f"e.g. Image.open(p).resize(({w}, {h})), or pass --resize."
                )
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise CLIError(f"cannot read {file} as an image (JPEG or PNG): {exc}.") from None


def cmd_predict(args: argparse.Namespace) -> int:
    """`xpnn predict RUN IMAGES...`: the class and softmax probability of each image file or folder's images
    (`Model.predict`); for SIGNS-style names, how many match the label in the name."""
    from xpnn.backends import set_backend

    set_backend(_env_backend())
    args.run = str(resolve_run(args.run, DEFAULT_RUN_DIR))
    model, _ = _run_model(args.run)
    folders = any(Path(p).is_dir() for p in args.images)
    if folders:  # a folder: its images in Keras's order
        from xpnn.data.images import predict_inputs

        images, files = predict_inputs(args.images, tuple(model.input_shape[:2]), resize=args.resize)
        args.images = [str(f) for f in files]
    else:
        images = np.stack([read_image(p, model.input_shape, args.resize) for p in args.images])
    logits = model.predict(images).astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    named = [Path(p).name[:1] for p in args.images]
    for path, p in zip(args.images, probs):
        print(f"{path}\tclass {int(p.argmax())}\tp={p.max():.3f}")
    if not folders and len(args.images) > 1 and all(n.isdigit() for n in named):  # SIGNS files: label first
        right = sum(int(n) == int(p.argmax()) for n, p in zip(named, probs))
        print(f"{right}/{len(named)} match the label in the file name ({right / len(named):.3f})")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    """`xpnn runs`: one line per run folder with its status (an interrupted run shows as such) and figures."""
    from xpnn.runlock import describe_status
    from xpnn.training.run_folder import CONFIG, STATUS

    root = Path(args.run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"no runs folder at {root}; train with `xpnn train --run-dir {root}` first.")
    folders = sorted(p for p in root.iterdir() if (p / CONFIG).is_file())
    if not folders:
        print(f"no runs in {root}")
        return 0
    print(f"{'run id':<29}{'status':<17}{'epochs':>7}{'loss':>9}{'train acc':>11}{'test acc':>10}  data")
    for folder in folders:
        try:
            config = json.loads((folder / CONFIG).read_text())
            status = json.loads((folder / STATUS).read_text()) if (folder / STATUS).exists() else {}
            evaluation = (
                json.loads((folder / "evaluation.json").read_text()) if (folder / "evaluation.json").exists() else {}
            )
        except (OSError, json.JSONDecodeError) as exc:
            print(f"{folder.name:<29}unreadable ({exc})")
            continue
        train_acc = evaluation.get("train", {}).get("accuracy", status.get("accuracy", math.nan))
        test_acc = evaluation.get("test", {}).get("accuracy", status.get("val_accuracy", math.nan))
        epochs = f"{status.get('epoch', 0)}/{config.get('epochs', '?')}"
        source = config.get("data", {}).get("source", "arrays")
        print(
            f"{folder.name:<29}{describe_status(folder, status):<17}{epochs:>7}{status.get('loss', math.nan):>9.4f}"
            f"{train_acc:>11.4f}{test_acc:>10.4f}  {source}"
        )
    return 0


# ---- argument parsing --------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    """The `xpnn` command's argument parser: the train, evaluate, predict and runs subcommands."""
    p = argparse.ArgumentParser(prog="xpnn", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the reference network (or a configured one) into a run folder")
    t.add_argument("--config", help="settings from a .toml or .json file (flags given here win over it)")
    t.add_argument("--resume", metavar="RUN", help="continue runs/<run id> exactly where its last checkpoint left it")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--learning-rate", type=float)
    t.add_argument("--optimizer", help="adam (default) or sgd")
    t.add_argument("--seed", type=int, help="initial weights and batch order (default 1)")
    t.add_argument("--dtype", help="float32 (default) or float64")
    t.add_argument("--backend", help="numpy or cupy (default: $XPNN_BACKEND or numpy)")
    t.add_argument(
        "--data",
        help="a data folder: SIGNS (train_signs.h5, test_signs.h5), an image folder (a subfolder per class, or "
        "SIGNS-style names starting with the label), MNIST-style IDX files or CIFAR-10's binary version",
    )
    t.add_argument("--embedded", action="store_true", default=None, help="use the embedded synthetic set")
    t.add_argument("--n-train", type=int, help="embedded set: training images (default 600)")
    t.add_argument("--n-test", type=int, help="embedded set: test images (default 120)")
    t.add_argument("--run-dir", help=f"where run folders go (default {DEFAULT_RUN_DIR}/)")
    t.add_argument("--stop-when-stuck", action="store_true", default=None, help="stop a run stuck at chance")
    t.add_argument("--no-plot", action="store_true", help="skip run_stats.png")
    t.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="loss and accuracy of a run's model on its data")
    e.add_argument("run", help="runs/<run id>")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("predict", help="classify images (JPEG/PNG) with a run's model")
    r.add_argument("run", help="runs/<run id>")
    r.add_argument("images", nargs="+", metavar="IMAGE")
    r.add_argument("--resize", action="store_true", help="convert to RGB and resize to the model's input size")
    r.set_defaults(func=cmd_predict)

    ls = sub.add_parser("runs", help="list past runs with their final figures")
    ls.add_argument("--run-dir", default=DEFAULT_RUN_DIR, help=f"folder of runs (default {DEFAULT_RUN_DIR}/)")
    ls.set_defaults(func=cmd_runs)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `xpnn` console script; bad input prints one line and exits with status 2."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except DivergedError as exc:
        print(f"xpnn: stopped: {exc}", file=sys.stderr)
        return 1
    except (ValueError, TypeError, FileNotFoundError, OSError) as exc:
        print(f"xpnn {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
