"""DVC stage `compose`: data/filtered + data/objects -> data/composed shards + metrics/compose.json."""
from pin import params
from pin.stage import run_stage


def check_backgrounds(p) -> None:
    """A background folder: unreadable images are skipped and counted; more than
    ``compose.max_corrupt`` of them stops the stage before any work."""
    from pin.errors import PinError
    from pin.synth.backgrounds import scan_backgrounds

    if p.backgrounds == "builtin":
        return
    src = scan_backgrounds(p.backgrounds)
    bad, total = len(src.unreadable), len(src.unreadable) + len(src.files)
    if bad > p.max_corrupt * total:
        raise PinError(f"compose.backgrounds={p.backgrounds!r}: {bad}/{total} images are unreadable "
                       f"(> compose.max_corrupt={p.max_corrupt:g}), e.g. {list(src.unreadable[:3])}")
    if bad:
        print(f"[compose] warning: skipping {bad}/{total} unreadable background images, "
              f"e.g. {src.unreadable[0]}")


def main() -> str:
    from pin.synth.compose import run_compose, summary

    p = params.load("compose")
    check_backgrounds(p)
    return summary(run_compose(p, "data/objects", "data/filtered/manifest.parquet", "data/composed",
                               "metrics/compose.json"))


if __name__ == "__main__":
    run_stage("compose", main)
