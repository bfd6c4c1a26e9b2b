"""DVC stage `filter`: data/objects -> data/filtered/manifest.parquet + metrics/filter.json."""
from pin import params
from pin.stage import run_stage


def main() -> str:
    from pin.synth.filter import run_filter, summary

    p = params.load("filter")
    return summary(run_filter(p, "data/objects", "data/filtered", "metrics/filter.json"))


if __name__ == "__main__":
    run_stage("filter", main)
