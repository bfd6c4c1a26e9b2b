"""DVC stage `compose`: data/filtered + data/objects -> data/composed shards + metrics/compose.json."""
from pin import params
from pin.stage import run_stage


def main() -> str:
    from pin.synth.compose import run_compose, summary

    p = params.load("compose")
    return summary(run_compose(p, "data/objects", "data/filtered/manifest.parquet", "data/composed",
                               "metrics/compose.json"))


if __name__ == "__main__":
    run_stage("compose", main)
