"""The ``pin`` command: use a trained positional insert like a tool.

    pin locate photo.jpg "a dog"                   # box printed, photo_located.png written
    pin locate photo.jpg "a cup" --fit letterbox --json
    pin info models/pin                            # the trained method's config, grid and size
    pin similarity models/pin -o pi.png            # the paper's Figure 9 for an insert
    pin check-weights --vlm openflamingo --checkpoint ckpt.pt --lang-model mpt-1b-redpajama-200b-dolly

``locate`` reads the VLM settings from ``params.yaml`` when there is one (``vlm`` section) and
falls back to the offline default (``--model mini`` from ``models/mini_vlm``). The box grid is the
one recorded with the trained method (its config.json: PIN's insert or any baseline the train stage
trained, e.g. ``method=vpt_fusion``); without one, or for a folder saved before grids were recorded,
``compose.grid`` of ``params.yaml``, else 8/16/14 for mini/openflamingo/blip2. Exit codes: 0 box
found, 1 error, 2 bad usage (an option's value not among its choices, too), 3 the model gave no
readable box.
"""
from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from pin.errors import PinError
from pin.io import atomic_write_bytes

PROJECT = Path(__file__).resolve().parents[1]  # the checkout, for an editable install (setup.sh)
DEFAULT_GRID = {"mini": 8, "openflamingo": 16, "blip2": 14}  # offline default; paper Sec. 5
NO_BOX = 3
# options with a fixed set of values: typer lists them in --help and exits 2 on any other value
Model = Literal["mini", "openflamingo", "blip2"]  # the keys of DEFAULT_GRID
Fit = Literal["resize", "letterbox"]
Device = Literal["auto", "cpu", "cuda"]

app = typer.Typer(
    name="pin",
    help="PIN: locate objects with a frozen VLM plus a positional insert (CVPR 2024).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(wanted: bool) -> None:
    if wanted:
        from pin import __version__

        typer.echo(f"pin {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False) -> None:
    """PIN: locate objects with a frozen VLM plus a positional insert (CVPR 2024)."""


def _here_or_project(path: Path) -> Path:
    """A relative path as given when it exists from the current folder, else inside the project
    checkout when it exists there: `pin locate ~/photo.jpg "a dog"` works from any folder."""
    if path.is_absolute() or path.exists() or not (PROJECT / path).exists():
        return path
    return PROJECT / path


def _fail(err: Exception) -> None:
    from pin.stage import error_line, one_line

    # a plain ValueError is a library's deliberate message about our input (pydantic, config)
    typer.echo(f"error: {one_line(err) if type(err) is ValueError else error_line(err)}", err=True)
    raise typer.Exit(1)


def _params_file(given: Optional[Path]) -> Optional[Path]:
    """``--params FILE``: it must exist; without the flag, ``params.yaml`` (here or in the project)
    when there is one, else None (built-in defaults)."""
    if given is None:
        default = _here_or_project(Path("params.yaml"))
        return default if default.is_file() else None
    if not given.is_file():
        raise PinError(f"{given}: params file not found (--params)")
    return given


def _vlm_settings(model: str, vlm_path: Optional[Path], params_file: Optional[Path], device: str,
                  grid: Optional[int]):
    """(VLMParams, grid): params.yaml's ``vlm`` section if present, ``--model`` and paths on top."""
    from pin import params

    params_file = _params_file(params_file)
    raw = params.load_yaml(params_file) if params_file is not None else {}
    section = dict(raw.get("vlm") or {})
    trained_for = section.get("name", "mini")
    section.update(name=model, device=device)
    if vlm_path is not None:
        key = {"mini": "path", "openflamingo": "checkpoint", "blip2": "blip2_model"}[model]
        section[key] = str(vlm_path)
    if model == "mini" and vlm_path is None:
        section["path"] = str(_here_or_project(Path(section.get("path", "models/mini_vlm"))))
    vlm_p = params.parse_section("vlm", section)
    if grid is None:
        same = model == trained_for and raw.get("compose", {}).get("grid")
        grid = int(raw["compose"]["grid"]) if same else DEFAULT_GRID[model]
    return vlm_p, grid


def _load_vlm(vlm_p):
    from pin.vlm.registry import load_vlm

    if vlm_p.name == "mini":
        folder = Path(vlm_p.path)
        if not (folder / "mini_vlm.json").is_file():
            raise PinError(
                f"{folder}: no mini VLM here. It is made by this project's pipeline: run `dvc repro` "
                "(about 10 minutes on 2 CPU cores; it writes models/mini_vlm and models/pin), or point "
                "--vlm-path at a folder with mini_vlm.json"
            )
    return load_vlm(vlm_p)


# what each command's "no trained method here" message suggests instead
_NO_METHOD_HINT = {
    "locate": "point --insert at one, or pass --no-insert to ask the raw VLM",
    "info": "or name one: pin info FOLDER (a trained method's folder or a mini VLM's)",
    "similarity": "or name one: pin similarity FOLDER",
}


def _method_folder(path: Path, command: str) -> Path:
    """The folder of a trained method (PIN or a baseline), or an error naming ``command``'s flags."""
    path = _here_or_project(path)
    if not (path / "config.json").is_file():
        raise PinError(
            f"{path}: no trained method here (config.json + model.safetensors). Train one with "
            "`dvc repro train` (the offline default takes about 10 minutes end to end), "
            + _NO_METHOD_HINT[command]
        )
    return path


def _load_method(path: Path, vlm):
    from pin.methods import load_method

    method = load_method(path, vlm)
    if not method.trains:
        raise PinError(f"{path}: method {method.name!r} has nothing trained to add to the VLM; pass --no-insert "
                       "to ask the raw VLM")
    return method.to(vlm.device).eval()


@app.command()
def locate(
    image: Annotated[Path, typer.Argument(help="A picture of any size (JPEG, PNG, ...).")],
    query: Annotated[str, typer.Argument(help='What to find, e.g. "a dog" (a leading a/an/the is dropped).')],
    model: Annotated[Model, typer.Option(help="The frozen VLM (mini: the offline default).")] = "mini",
    insert: Annotated[Path, typer.Option(
        "--insert", "--method", help="Folder of the trained method: PIN's insert or a baseline "
                                     "(vpt_fusion, vpt_vision, coop_llm, lora_vision).")] = Path("models/pin"),
    no_insert: Annotated[bool, typer.Option("--no-insert", help="Ask the raw VLM, without PIN.")] = False,
    vlm_path: Annotated[Optional[Path], typer.Option(
        help="Model folder: mini VLM folder (default vlm.path, models/mini_vlm), OpenFlamingo checkpoint, "
             "or BLIP-2 folder.")] = None,
    fit: Annotated[Fit, typer.Option(
        help="resize: squash into the square frame (as evaluation does) | letterbox: keep the aspect ratio, "
             "pad with grey.")] = "resize",
    grid: Annotated[Optional[int], typer.Option(
        help="Box grid G the insert was trained on (default: the grid recorded with the insert; without one, "
             "compose.grid of params.yaml, else 8/16/14 for mini/openflamingo/blip2).")] = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Where to write the picture with the box (default ./<name>_located.png).")] = None,
    params_file: Annotated[Optional[Path], typer.Option(
        "--params", help="params.yaml to read vlm/compose from (default: ./params.yaml when there is one).")] = None,
    device: Annotated[Device, typer.Option(help="Where the VLM runs.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")] = False,
) -> None:
    """Find QUERY in IMAGE: print the box (pixels of IMAGE) and write IMAGE with the box drawn."""
    from pin.locate import answer_grid, draw_box, locate as run_locate, open_image

    insert = _here_or_project(insert)
    try:
        picture = open_image(image)
        given_grid, notes = grid, []
        vlm_p, grid = _vlm_settings(model, vlm_path, params_file, device, grid)
        vlm = _load_vlm(vlm_p)
        method = None
        if not no_insert:
            method = _load_method(_method_folder(insert, "locate"), vlm)
            if given_grid is None:
                grid, note = answer_grid(insert, grid)
                notes += [note] if note else []
        result = run_locate(vlm, method, picture, query, grid, fit=fit)
        notes += [result.warning] if result.warning else []
        target = out or Path(f"{image.stem}_located.png")
        buf = io.BytesIO()
        fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(target.suffix.lower(), "PNG")
        draw_box(picture, result).save(buf, format=fmt)
        atomic_write_bytes(target, buf.getvalue())
    except (PinError, ValueError, OSError) as err:
        _fail(err)
    w, h = result.size
    if not as_json:  # --json: in the one object printed
        for note in notes:
            typer.echo(f"warning: {note}", err=True)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "grid": grid, "model": vlm.name,
                               "insert": None if no_insert else str(insert),
                               "method": None if method is None else method.name, "image": str(target),
                               **({"warnings": notes} if notes else {})}))
    elif result.box is None:
        typer.echo(f"{query}: no box - the model answered {result.answer!r}")
        typer.echo(f"wrote {target}")
    else:
        x1, y1, x2, y2 = (round(v) for v in result.box)
        typer.echo(f"{query}: [{x1}, {y1}, {x2}, {y2}] (x1, y1, x2, y2 in pixels of the {w}x{h} image)")
        with_method = "raw " + vlm.name if method is None else (
            f"{vlm.name} + {'PIN' if method.name == 'pin' else method.name} {insert}")
        typer.echo(f"  model answer {result.answer.strip()!r} on a {grid}x{grid} grid of the 224-px frame "
                   f"({fit}); {with_method}")
        typer.echo(f"wrote {target}")
    if result.box is None:
        raise typer.Exit(NO_BOX)


@app.command()
def info(
    path: Annotated[Path, typer.Argument(
        help="A trained method's folder (models/pin: PIN or a baseline) or a mini VLM folder.")] = Path("models/pin"),
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Print a trained method's config, box grid, parameter count and size on disk (or a mini VLM's)."""
    path = _here_or_project(path)
    try:
        if (path / "mini_vlm.json").is_file():
            from pin.vlm.mini import read_mini_config

            meta = read_mini_config(path)
            report = {"kind": "mini VLM", "path": str(path), "parameters": meta.get("n_parameters"),
                      "config": meta.get("config"), "vocab_size": meta.get("vocab_size"),
                      "categories": meta.get("meta", {}).get("vocabulary", [])}
        else:
            from pin.method_info import describe

            report = describe(_method_folder(path, "info"))
        files = [f for f in sorted(path.iterdir()) if f.is_file()]
        report["files"] = {f.name: f.stat().st_size for f in files}
        report["bytes"] = sum(report["files"].values())
    except (PinError, OSError, ValueError) as err:
        _fail(err)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    from pin.stage import human_size

    typer.echo(f"{report['kind']}: {path}")
    typer.echo(f"  parameters: {report['parameters']:,}" + (
        f" ({report['trainable_parameters']:,} trainable)" if "trainable_parameters" in report else ""))
    if "method" in report:
        g = report["grid"]
        typer.echo(f"  answers boxes on a {g}x{g} grid" if g else "  box grid: not recorded (saved before grids "
                   "were; pin locate assumes one: pass --grid)")
    if "patch_grid" in report:
        typer.echo(f"  adds a {report['output_shape'][0]} x {report['output_shape'][1]} tensor to the patch "
                   f"features ({report['patch_grid']} patches)")
    typer.echo(f"  on disk: {human_size(report['bytes'])} ({', '.join(report['files'])})")
    if "categories" in report:  # the only object names the mini VLM can read in a query
        typer.echo(f"  knows {len(report['categories'])} categories: {', '.join(report['categories']) or '(none recorded)'}")
    typer.echo("  config:")
    for k, v in (report.get("config") or {}).items():
        typer.echo(f"    {k}: {v}")


@app.command()
def similarity(
    path: Annotated[Path, typer.Argument(help="A trained PIN folder (other methods have no table).")] = Path(
        "models/pin"),
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("pin_similarity.png"),
) -> None:
    """Draw the paper's Figure 9 for an insert: cosine similarity between patch positions of the raw
    sinusoidal table S and of the learned pi (the pipeline's `figures` stage adds the encoder panel)."""
    from pin.method_info import insert_of
    from pin.viz.similarity import write_similarity

    try:
        stats = write_similarity(insert_of(_method_folder(path, "similarity")), out)
    except (PinError, OSError, ValueError) as err:
        _fail(err)
    for key, s in stats.items():
        typer.echo(f"{key}: mean similarity with 4-neighbours {s['neighbours']:.2f}, same row {s['same_row']:.2f}, "
                   f"same column {s['same_column']:.2f}, farther {s['other']:.2f}")
    typer.echo(f"wrote {out}")


@app.command("check-weights")
def check_weights(
    vlm: Annotated[Literal["openflamingo", "blip2"], typer.Option(help="The paper profile's VLM to check.")],
    checkpoint: Annotated[Optional[str], typer.Option(help="OpenFlamingo checkpoint.pt (default vlm.checkpoint).")] = None,
    lang_model: Annotated[Optional[str], typer.Option(help="OpenFlamingo LM folder (default vlm.lang_model).")] = None,
    clip_model: Annotated[Optional[str], typer.Option(help="open_clip model name (default vlm.clip_model).")] = None,
    clip_pretrained: Annotated[Optional[str], typer.Option(
        help="open_clip weights file or cached tag (default vlm.clip_pretrained).")] = None,
    blip2_model: Annotated[Optional[str], typer.Option(help="BLIP-2 folder (default vlm.blip2_model).")] = None,
    diffusers: Annotated[Optional[str], typer.Option(help="Also load this Stable Diffusion folder (generate).")] = None,
    clip: Annotated[Optional[str], typer.Option(help="Also load this open_clip weights file (filter.model).")] = None,
    params_file: Annotated[Optional[Path], typer.Option(
        "--params", help="params.yaml to read vlm from (default: ./params.yaml when there is one).")] = None,
    device: Annotated[Device, typer.Option(help="cpu (default): fp32, comparable across machines.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Load the paper profile's weights and print each component's parameter count and dtype, then a
    logit checksum and the greedy answer on one fixed input (compare them with another download)."""
    from pin import check_weights as cw

    flags = dict(checkpoint=checkpoint, lang_model=lang_model, clip_model=clip_model,
                 clip_pretrained=clip_pretrained, blip2_model=blip2_model)
    try:
        params_file = _params_file(params_file)
        report = cw.check_vlm(vlm, params_file, flags, device)
        if diffusers is not None:
            report.extras += cw.check_diffusers(diffusers, device)
        if clip is not None:
            report.extras += cw.check_clip(cw.filter_clip_model(params_file), clip, device)
    except (PinError, OSError, ValueError) as err:
        _fail(err)
    typer.echo(json.dumps(report.to_dict(), indent=2) if as_json else "\n".join(report.lines()))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pin`` console script (``[project.scripts]``); returns the exit code."""
    from pin.stage import debug, error_line

    try:
        app(args=argv, prog_name="pin", standalone_mode=True)
    except SystemExit as stop:
        return int(stop.code or 0) if not isinstance(stop.code, str) else 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as err:  # noqa: BLE001 - one line; PIN_DEBUG=1 adds the traceback
        typer.echo(f"error: {error_line(err)}", err=True)
        if debug():
            import traceback

            traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
